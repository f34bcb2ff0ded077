/*
 * chat_template_builtin.c — built-in chat templates (Jinja source rendered by
 * the same engine) for models that carry no tokenizer.chat_template, or one
 * the engine cannot run, and the heuristics that pick one.
 */
#include "kiln/tokenizer.h"

#include <stdlib.h>
#include <string.h>

typedef struct builtin {
    const char *name;
    const char *src;
} builtin;

#define ALTERNATE_CHECK                                                                            \
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"                               \
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}" \
    "{% endif %}"

static const builtin BUILTINS[] = {
    {"chatml",
     "{% for message in messages %}"
     "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
     "{% endfor %}"
     "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"},
    {"llama2",
     "{% if messages[0]['role'] == 'system' %}"
     "{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
     "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
     "{% for message in loop_messages %}" ALTERNATE_CHECK
     "{% if loop.index0 == 0 and system_message != false %}"
     "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
     "{% else %}{% set content = message['content'] %}{% endif %}"
     "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
     "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}"
     "{% endfor %}"},
    {"llama3",
     "{% for message in messages %}"
     "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' %}"
     "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
     "{{ content }}"
     "{% endfor %}"
     "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"},
    {"mistral",
     "{% if messages[0]['role'] == 'system' %}"
     "{% set system_message = messages[0]['content'] %}{% set loop_messages = messages[1:] %}"
     "{% else %}{% set loop_messages = messages %}{% endif %}"
     "{{ bos_token }}"
     "{% for message in loop_messages %}" ALTERNATE_CHECK
     "{% if message['role'] == 'user' %}"
     "{% if loop.first and system_message is defined %}"
     "{{ '[INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}"
     "{% else %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}"
     "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}"
     "{% endif %}"
     "{% endfor %}"},
    {"zephyr",
     "{% for message in messages %}"
     "{% if message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + eos_token + '\\n' }}"
     "{% elif message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + eos_token + '\\n' }}"
     "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\\n' + message['content'] + eos_token + '\\n' }}"
     "{% endif %}"
     "{% endfor %}"
     "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"},
    {"phi3",
     "{% for message in messages %}"
     "{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + '<|end|>\\n' }}"
     "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '<|end|>\\n' }}"
     "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\\n' + message['content'] + '<|end|>\\n' }}"
     "{% endif %}"
     "{% endfor %}"
     "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"},
    {"gemma",
     "{{ bos_token }}"
     "{% if messages[0]['role'] == 'system' %}"
     "{% set first_user_prefix = messages[0]['content'] + '\\n\\n' %}{% set loop_messages = messages[1:] %}"
     "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
     "{% for message in loop_messages %}" ALTERNATE_CHECK
     "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
     "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\\n' }}"
     "{% endfor %}"
     "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"},
};

#define N_BUILTINS (sizeof BUILTINS / sizeof BUILTINS[0])

const char *tok_tmpl_builtin(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < N_BUILTINS; i++)
        if (!strcmp(BUILTINS[i].name, name)) return BUILTINS[i].src;
    return NULL;
}

const char *tok_tmpl_builtin_name(size_t i) { return i < N_BUILTINS ? BUILTINS[i].name : NULL; }

static bool has(bool (*has_token)(void *, const char *), void *ctx, const char *t) {
    return has_token && has_token(ctx, t);
}

const char *tok_tmpl_builtin_guess(bool (*has_token)(void *ctx, const char *text), void *ctx, const char *arch) {
    const char *pick = NULL, *why = NULL;
    if (has(has_token, ctx, "<|im_start|>")) pick = "chatml", why = "vocabulary has <|im_start|>";
    else if (has(has_token, ctx, "<|start_header_id|>")) pick = "llama3", why = "vocabulary has <|start_header_id|>";
    else if (has(has_token, ctx, "<start_of_turn>")) pick = "gemma", why = "vocabulary has <start_of_turn>";
    else if (has(has_token, ctx, "<|user|>") && has(has_token, ctx, "<|end|>")) pick = "phi3", why = "vocabulary has <|user|> and <|end|>";
    else if (has(has_token, ctx, "<|user|>")) pick = "zephyr", why = "vocabulary has <|user|>";
    else if (has(has_token, ctx, "[INST]")) pick = "mistral", why = "vocabulary has [INST]";
    else if (arch && !strncmp(arch, "gemma", 5)) pick = "gemma", why = "architecture is gemma";
    else if (arch && !strncmp(arch, "phi3", 4)) pick = "phi3", why = "architecture is phi3";
    else if (arch && (!strncmp(arch, "qwen", 4))) pick = "chatml", why = "architecture is qwen";
    else if (arch && !strcmp(arch, "llama") && has(has_token, ctx, "<0x0A>")) pick = "llama2", why = "llama architecture with a SentencePiece vocabulary";
    else pick = "chatml", why = "no better guess";
    kn_log(KN_LOG_INFO, "chat template: using built-in '%s' (%s)", pick, why);
    return pick;
}

/* A template that parses may still use something the engine lacks: render a
 * one-message conversation; an engine error (not the template's own
 * raise_exception) means it cannot run. */
static bool probe_ok(const tok_tmpl *t, kn_err *err) {
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", "Hello");
    if (!msgs) return true;
    tok_tmpl_inputs in = {.messages = msgs, .add_generation_prompt = true, .bos_token = "", .eos_token = ""};
    char *out = NULL;
    size_t len;
    bool raised = false;
    kn_status st = tok_tmpl_render(t, &in, &out, &len, &raised, err);
    free(out);
    json_decref(msgs);
    return st == KN_OK || raised;
}

tok_tmpl *tok_tmpl_for_model(const char *model_src, size_t len, bool (*has_token)(void *ctx, const char *text),
                             void *ctx, const char *arch, const char **used, kn_err *err) {
    if (used) *used = NULL;
    if (model_src && len) {
        kn_err perr;
        tok_tmpl *t = tok_tmpl_create(model_src, len, &perr);
        if (t && probe_ok(t, &perr)) {
            if (used) *used = "model";
            return t;
        }
        tok_tmpl_destroy(t);
        kn_log(KN_LOG_WARN, "chat template: the model's template cannot be used (%s); falling back to a built-in", perr.msg);
    } else {
        kn_log(KN_LOG_INFO, "chat template: the model carries no tokenizer.chat_template");
    }
    const char *name = tok_tmpl_builtin_guess(has_token, ctx, arch);
    const char *src = tok_tmpl_builtin(name);
    tok_tmpl *t = tok_tmpl_create(src, strlen(src), err);
    if (t && used) *used = name;
    return t;
}
