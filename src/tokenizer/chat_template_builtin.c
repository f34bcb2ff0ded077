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
     "{% if message['role'] == 'system' and message['content'] %}{{ '<|system|>\\n' + message['content'] + '<|end|>\\n' }}"
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
    /* Qwen3: ChatML; an assistant turn after the last user query shows its
     * reasoning in <think> (from reasoning_content, or split off the
     * content at </think>), earlier ones drop it; tool results go in a user
     * turn; enable_thinking=false pre-fills an empty <think>. Qwen3's own
     * template without its tool declarations. */
    {"qwen3",
     "{% if messages[0]['role'] == 'system' %}{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{% endif %}"
     "{% set ns = namespace(multi_step_tool=true, last_query_index=messages | length - 1) %}"
     "{% for message in messages[::-1] %}"
     "{% if ns.multi_step_tool and message['role'] == 'user' and message['content'] is string"
     " and not (message['content'].startswith('<tool_response>') and message['content'].endswith('</tool_response>')) %}"
     "{% set ns.multi_step_tool = false %}{% set ns.last_query_index = messages | length - 1 - loop.index0 %}"
     "{% endif %}"
     "{% endfor %}"
     "{% for message in messages %}"
     "{% set content = message['content'] if message['content'] is string else '' %}"
     "{% if message['role'] == 'user' or (message['role'] == 'system' and not loop.first) %}"
     "{{ '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}"
     "{% elif message['role'] == 'assistant' %}"
     "{% set reasoning = '' %}"
     "{% if message['reasoning_content'] is string %}{% set reasoning = message['reasoning_content'] %}"
     "{% elif '</think>' in content %}"
     "{% set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
     "{% set content = content.split('</think>')[-1].lstrip('\\n') %}"
     "{% endif %}"
     "{% if loop.index0 > ns.last_query_index and (loop.last or reasoning) %}"
     "{{ '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}"
     "{% else %}{{ '<|im_start|>assistant\\n' + content }}{% endif %}"
     "{% for call in message['tool_calls'] or [] %}"
     "{% if not loop.first or content %}{{ '\\n' }}{% endif %}"
     "{% set call = call['function'] if call['function'] else call %}"
     "{{ '<tool_call>\\n{\"name\": \"' }}{{ call['name'] }}{{ '\", \"arguments\": ' }}"
     "{{ call['arguments'] if call['arguments'] is string else call['arguments'] | tojson }}"
     "{{ '}\\n</tool_call>' }}"
     "{% endfor %}"
     "{{ '<|im_end|>\\n' }}"
     "{% elif message['role'] == 'tool' %}"
     "{% if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}{{ '<|im_start|>user' }}{% endif %}"
     "{{ '\\n<tool_response>\\n' + content + '\\n</tool_response>' }}"
     "{% if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{ '<|im_end|>\\n' }}{% endif %}"
     "{% endif %}"
     "{% endfor %}"
     "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
     "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
     "{% endif %}"},
    /* Gemma 4: <|turn>role ... <turn|>, a real system turn, the model's
     * thought channel stripped from its past turns, tool calls as
     * <|tool_call>call:NAME{key:value}<tool_call|> followed by the tool
     * messages' results in the same model turn, and an empty thought channel
     * after the generation prompt unless enable_thinking. Gemma 4's own
     * template for string contents, without its tool declarations and the
     * legacy `tool_responses` field. */
    {"gemma4",
     "{% macro arg(v, quote_keys=true) %}"
     "{% if v is string %}{{ '<|\"|>' + v + '<|\"|>' }}"
     "{% elif v is boolean %}{{ 'true' if v else 'false' }}"
     "{% elif v is mapping %}{{ '{' }}"
     "{% for k, x in v | dictsort %}{% if not loop.first %},{% endif %}"
     "{{ '<|\"|>' + k + '<|\"|>' if quote_keys else k }}:{{ arg(x, quote_keys) }}{% endfor %}{{ '}' }}"
     "{% elif v is sequence %}[{% for x in v %}{% if not loop.first %},{% endif %}{{ arg(x, quote_keys) }}{% endfor %}]"
     "{% else %}{{ v }}{% endif %}"
     "{% endmacro %}"
     "{% macro response(name, r) %}"
     "{{ '<|tool_response>response:' + name + '{' }}"
     "{% if r is mapping %}{% for k, x in r | dictsort %}{% if not loop.first %},{% endif %}{{ k }}:{{ arg(x, false) }}{% endfor %}"
     "{% else %}{{ 'value:' + arg(r, false) }}{% endif %}"
     "{{ '}<tool_response|>' }}"
     "{% endmacro %}"
     "{% macro strip_thinking(text) %}"
     "{% set ns = namespace(out='') %}"
     "{% for part in text.split('<channel|>') %}"
     "{% set ns.out = ns.out + (part.split('<|channel>')[0] if '<|channel>' in part else part) %}"
     "{% endfor %}"
     "{{ ns.out | trim }}"
     "{% endmacro %}"
     "{{ bos_token }}"
     "{% set thinking = enable_thinking is defined and enable_thinking %}"
     "{% set has_system = messages[0]['role'] in ['system', 'developer'] %}"
     "{% if thinking or has_system %}"
     "{{ '<|turn>system\\n' }}{% if thinking %}{{ '<|think|>\\n' }}{% endif %}"
     "{% if has_system %}{{ messages[0]['content'] | trim }}{% endif %}"
     "{{ '<turn|>\\n' }}"
     "{% endif %}"
     "{% set loop_messages = messages[1:] if has_system else messages %}"
     "{% set ns = namespace(prev=none, last=none) %}"
     "{% for message in loop_messages %}"
     "{% if message['role'] != 'tool' %}"
     "{% set ns.last = none %}"
     "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
     "{% if not (role == 'model' and ns.prev == 'assistant') %}{{ '<|turn>' + role + '\\n' }}{% endif %}"
     "{% set ns.prev = message['role'] %}"
     "{% set out = namespace(responses=false) %}"
     "{% if message['tool_calls'] %}"
     "{% for call in message['tool_calls'] %}"
     "{{ '<|tool_call>call:' + call['function']['name'] + '{' }}"
     "{% if call['function']['arguments'] is mapping %}"
     "{% for k, x in call['function']['arguments'] | dictsort %}{% if not loop.first %},{% endif %}{{ k }}:{{ arg(x, false) }}{% endfor %}"
     "{% elif call['function']['arguments'] is string %}{{ call['function']['arguments'] }}{% endif %}"
     "{{ '}<tool_call|>' }}"
     "{% endfor %}"
     "{% set ns.last = 'tool_call' %}"
     "{% set scan = namespace(stopped=false) %}"
     "{% for k in range(loop.index0 + 1, loop_messages | length) %}"
     "{% if not scan.stopped and loop_messages[k]['role'] != 'tool' %}{% set scan.stopped = true %}"
     "{% elif not scan.stopped %}"
     "{% set result = loop_messages[k] %}"
     "{% set tool = namespace(name=result.get('name') | default('unknown')) %}"
     "{% for call in message['tool_calls'] %}"
     "{% if call.get('id') == result.get('tool_call_id') %}{% set tool.name = call['function']['name'] %}{% endif %}"
     "{% endfor %}"
     "{% set body = result.get('content') %}"
     "{% if body is sequence and body is not string %}"
     "{% set body = body | selectattr('type', 'equalto', 'text') | map(attribute='text') | join %}"
     "{% endif %}"
     "{{ response(tool.name, body) }}"
     "{% set out.responses = true %}{% set ns.last = 'tool_response' %}"
     "{% endif %}"
     "{% endfor %}"
     "{% endif %}"
     "{% if message['content'] is string %}"
     "{% if role == 'model' %}{{ strip_thinking(message['content']) }}{% else %}{{ message['content'] | trim }}{% endif %}"
     "{% endif %}"
     "{% if ns.last == 'tool_call' and not out.responses %}{{ '<|tool_response>' }}"
     "{% elif not (out.responses and not message['content']) %}{{ '<turn|>\\n' }}{% endif %}"
     "{% endif %}"
     "{% endfor %}"
     "{% if add_generation_prompt and ns.last not in ['tool_call', 'tool_response'] %}{{ '<|turn>model\\n' }}"
     "{% if not enable_thinking | default(false) %}{{ '<|channel>thought\\n<channel|>' }}{% endif %}"
     "{% endif %}"},
    /* gpt-oss's harmony: <|start|>role<|message|>...<|end|> after a system
     * message that names the reasoning effort (`reasoning_effort`, default
     * medium) and the channels; the system or developer message becomes the
     * developer's instructions; assistant answers go to the final channel
     * (the last one ends with <|return|> when no generation prompt follows),
     * tool calls to the commentary channel as functions.NAME, and their
     * results come back from functions.NAME. The generation prompt is
     * <|start|>assistant: the model names its channel itself. The real
     * template (same checks, same messages) without tool declarations or
     * built-in tools. */
    {"harmony",
     "{{ '<|start|>system<|message|>' }}"
     "{{ model_identity if model_identity is defined else 'You are ChatGPT, a large language model trained by OpenAI.' }}"
     "{{ '\\nKnowledge cutoff: 2024-06\\nCurrent date: ' + strftime_now('%Y-%m-%d') + '\\n\\nReasoning: ' }}"
     "{{ reasoning_effort if reasoning_effort is defined else 'medium' }}"
     "{{ '\\n\\n# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>' }}"
     "{% set has_system = messages[0]['role'] in ['system', 'developer'] %}"
     "{% if has_system and messages[0]['content'] %}"
     "{{ '<|start|>developer<|message|># Instructions\\n\\n' + messages[0]['content'] + '\\n\\n<|end|>' }}"
     "{% endif %}"
     "{% set loop_messages = messages[1:] if has_system else messages %}"
     "{% set last = namespace(tool=none) %}"
     "{% for message in loop_messages %}"
     "{% if message['role'] == 'assistant' %}"
     "{% for field in ['content', 'thinking'] %}"
     "{% if field in message and ('<|channel|>analysis<|message|>' in message[field] or '<|channel|>final<|message|>' in message[field]) %}"
     "{{ raise_exception('You have passed a message containing <|channel|> tags in the ' + field + ' field. Instead of doing this, "
     "you should pass analysis messages (the string between \\'<|message|>\\' and \\'<|end|>\\') in the \\'thinking\\' field, and final "
     "messages (the string between \\'<|message|>\\' and \\'<|end|>\\') in the \\'content\\' field.') }}"
     "{% endif %}"
     "{% endfor %}"
     "{% if 'tool_calls' in message %}"
     "{% set later = namespace(final=false) %}"
     "{% for m in loop_messages[loop.index:] %}"
     "{% if m['role'] == 'assistant' and 'tool_calls' not in m %}{% set later.final = true %}{% endif %}"
     "{% endfor %}"
     "{% set call = message['tool_calls'][0] %}{% set call = call['function'] if call['function'] else call %}"
     "{% if message['content'] and message['thinking'] %}"
     "{{ raise_exception('Cannot pass both content and thinking in an assistant message with tool calls! "
     "Put the analysis message in one or the other, but not both.') }}"
     "{% endif %}"
     "{% set analysis = message['content'] or message['thinking'] %}"
     "{% if analysis and not later.final %}"
     "{{ '<|start|>assistant<|channel|>analysis<|message|>' + analysis + '<|end|>' }}"
     "{% endif %}"
     "{{ '<|start|>assistant to=functions.' + call['name'] + '<|channel|>commentary ' }}"
     "{{ (call['content_type'] if call['content_type'] is defined else 'json') + '<|message|>' }}"
     "{{ call['arguments'] | tojson }}{{ '<|call|>' }}"
     "{% set last.tool = call['name'] %}"
     "{% elif loop.last and not add_generation_prompt %}"
     "{% if 'thinking' in message %}{{ '<|start|>assistant<|channel|>analysis<|message|>' + message['thinking'] + '<|end|>' }}{% endif %}"
     "{{ '<|start|>assistant<|channel|>final<|message|>' + message['content'] + '<|return|>' }}"
     "{% else %}"
     "{{ '<|start|>assistant<|channel|>final<|message|>' + message['content'] + '<|end|>' }}"
     "{% set last.tool = none %}"
     "{% endif %}"
     "{% elif message['role'] == 'tool' %}"
     "{% if last.tool is none %}"
     "{{ raise_exception('Message has tool role, but there was no previous assistant message with a tool call!') }}"
     "{% endif %}"
     "{{ '<|start|>functions.' + last.tool + ' to=assistant<|channel|>commentary<|message|>' + message['content'] | tojson + '<|end|>' }}"
     "{% elif message['role'] == 'user' %}"
     "{{ '<|start|>user<|message|>' + message['content'] + '<|end|>' }}"
     "{% endif %}"
     "{% endfor %}"
     "{% if add_generation_prompt %}{{ '<|start|>assistant' }}{% endif %}"},
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

/* Vocabulary markers first (a format's control tokens must exist for its
 * prompt to tokenize as trained), then the architecture. */
const char *tok_tmpl_builtin_guess(bool (*has_token)(void *ctx, const char *text), void *ctx, const char *arch) {
    const char *pick = NULL, *why = NULL;
    bool qwen3 = arch && !strncmp(arch, "qwen3", 5);
    if (has(has_token, ctx, "<|start|>") && has(has_token, ctx, "<|channel|>") && has(has_token, ctx, "<|message|>"))
        pick = "harmony", why = "vocabulary has <|start|>, <|channel|> and <|message|>";
    else if (has(has_token, ctx, "<|im_start|>") && has(has_token, ctx, "<think>"))
        pick = "qwen3", why = "vocabulary has <|im_start|> and <think>";
    else if (has(has_token, ctx, "<|im_start|>") && qwen3)
        pick = "qwen3", why = "vocabulary has <|im_start|>, architecture is qwen3";
    else if (has(has_token, ctx, "<|im_start|>")) pick = "chatml", why = "vocabulary has <|im_start|>";
    else if (has(has_token, ctx, "<|start_header_id|>")) pick = "llama3", why = "vocabulary has <|start_header_id|>";
    else if (has(has_token, ctx, "<|turn>") && has(has_token, ctx, "<turn|>")) pick = "gemma4", why = "vocabulary has <|turn> and <turn|>";
    else if (has(has_token, ctx, "<start_of_turn>")) pick = "gemma", why = "vocabulary has <start_of_turn>";
    else if (has(has_token, ctx, "<|user|>") && has(has_token, ctx, "<|end|>")) pick = "phi3", why = "vocabulary has <|user|> and <|end|>";
    else if (has(has_token, ctx, "<|user|>")) pick = "zephyr", why = "vocabulary has <|user|>";
    else if (has(has_token, ctx, "[INST]")) pick = "mistral", why = "vocabulary has [INST]";
    else if (arch && !strcmp(arch, "gpt-oss")) pick = "harmony", why = "architecture is gpt-oss";
    else if (arch && !strncmp(arch, "gemma4", 6)) pick = "gemma4", why = "architecture is gemma4";
    else if (arch && !strncmp(arch, "gemma", 5)) pick = "gemma", why = "architecture is gemma";
    else if (arch && !strncmp(arch, "phi3", 4)) pick = "phi3", why = "architecture is phi3";
    else if (qwen3) pick = "qwen3", why = "architecture is qwen3";
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
