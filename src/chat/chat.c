/*
 * chat.c — the syntax table: names, the markers of each family, detection
 * from a chat template's source, and whether a template reasons.
 */
#include "internal.h"

#include <string.h>

#define THINK "<think>", "</think>"

static const char *const MK_PLAIN[] = {THINK, NULL};
static const char *const MK_HERMES[] = {"<tool_call>", "</tool_call>", THINK, NULL};
static const char *const MK_LLAMA3[] = {"<|python_tag|>", THINK, NULL};
static const char *const MK_MISTRAL[] = {"[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", THINK, NULL};
static const char *const MK_DEEPSEEK[] = {"<｜tool▁calls▁begin｜>",
                                          "<｜tool▁call▁begin｜>",
                                          "<｜tool▁sep｜>",
                                          "<｜tool▁call▁end｜>",
                                          "<｜tool▁calls▁end｜>",
                                          THINK,
                                          NULL};
static const char *const MK_GRANITE[] = {"<|tool_call|>", THINK, "<response>", "</response>", NULL};
static const char *const MK_HARMONY[] = {"<|start|>", "<|channel|>", "<|message|>", "<|constrain|>",
                                         "<|end|>",   "<|call|>",    "<|return|>",  NULL};
static const char *const MK_GEMMA4[] = {"<|tool_call>", "<tool_call|>", "<|\"|>",
                                        "<|channel>",   "<channel|>",   NULL};
static const char *const MK_GENERIC[] = {THINK, NULL};

static const char *const TR_HERMES[] = {"<tool_call>", NULL};
static const char *const TR_LLAMA3[] = {"<|python_tag|>", NULL};
static const char *const TR_MISTRAL[] = {"[TOOL_CALLS]", NULL};
static const char *const TR_DEEPSEEK[] = {"<｜tool▁calls▁begin｜>", NULL};
static const char *const TR_GRANITE[] = {"<|tool_call|>", NULL};
static const char *const TR_GEMMA4[] = {"<|tool_call>", NULL};

/* One row per syntax, in chat_syntax order. */
static const chat_syn SYNTAXES[CHAT_SYNTAX_COUNT] = {
    [CHAT_SYNTAX_PLAIN] = {.id = CHAT_SYNTAX_PLAIN, .name = "plain", .markers = MK_PLAIN},
    [CHAT_SYNTAX_HERMES] = {.id = CHAT_SYNTAX_HERMES,
                            .name = "hermes",
                            .markers = MK_HERMES,
                            .triggers = TR_HERMES,
                            .try_call = chat_try_hermes},
    [CHAT_SYNTAX_LLAMA3] = {.id = CHAT_SYNTAX_LLAMA3,
                            .name = "llama3",
                            .markers = MK_LLAMA3,
                            .triggers = TR_LLAMA3,
                            .try_call = chat_try_llama3_tag,
                            .try_whole = chat_try_llama3_whole,
                            .whole_repeats = true},
    [CHAT_SYNTAX_MISTRAL] = {.id = CHAT_SYNTAX_MISTRAL,
                             .name = "mistral",
                             .markers = MK_MISTRAL,
                             .triggers = TR_MISTRAL,
                             .try_call = chat_try_mistral},
    [CHAT_SYNTAX_DEEPSEEK] = {.id = CHAT_SYNTAX_DEEPSEEK,
                              .name = "deepseek",
                              .markers = MK_DEEPSEEK,
                              .triggers = TR_DEEPSEEK,
                              .try_call = chat_try_deepseek},
    [CHAT_SYNTAX_GRANITE] = {.id = CHAT_SYNTAX_GRANITE,
                             .name = "granite",
                             .markers = MK_GRANITE,
                             .triggers = TR_GRANITE,
                             .try_call = chat_try_granite},
    [CHAT_SYNTAX_HARMONY] = {.id = CHAT_SYNTAX_HARMONY,
                             .name = "harmony",
                             .markers = MK_HARMONY,
                             .step = chat_harmony_step},
    [CHAT_SYNTAX_GEMMA4] = {.id = CHAT_SYNTAX_GEMMA4,
                            .name = "gemma4",
                            .markers = MK_GEMMA4,
                            .triggers = TR_GEMMA4,
                            .try_call = chat_try_gemma4,
                            .think_open = "<|channel>thought",
                            .think_close = "<channel|>"},
    [CHAT_SYNTAX_GENERIC] = {.id = CHAT_SYNTAX_GENERIC,
                             .name = "generic",
                             .markers = MK_GENERIC,
                             .try_whole = chat_try_generic},
};

const chat_syn *chat_syn_get(chat_syntax s) {
    return (unsigned)s < CHAT_SYNTAX_COUNT ? &SYNTAXES[s] : &SYNTAXES[CHAT_SYNTAX_PLAIN];
}

const char *chat_syntax_name(chat_syntax s) {
    return chat_syn_get(s)->name;
}

bool chat_syntax_parse(const char *name, chat_syntax *out) {
    for (int i = 0; name && i < CHAT_SYNTAX_COUNT; i++)
        if (strcmp(name, SYNTAXES[i].name) == 0) {
            *out = (chat_syntax)i;
            return true;
        }
    return false;
}

const char *const *chat_syntax_markers(chat_syntax s) {
    return chat_syn_get(s)->markers;
}

static bool has(const char *s, size_t n, const char *lit) {
    return chat_find(s, n, 0, lit, strlen(lit)) < n;
}

/* The markers a template renders, most specific first: gpt-oss's template
 * also writes JSON with "parameters", DeepSeek's mentions no other marker. */
chat_syntax chat_syntax_detect(const char *src, size_t n) {
    if (!src) return CHAT_SYNTAX_PLAIN;
    if (has(src, n, "<|channel|>")) return CHAT_SYNTAX_HARMONY;
    if (has(src, n, "tool▁calls▁begin")) return CHAT_SYNTAX_DEEPSEEK;
    if (has(src, n, "[TOOL_CALLS]")) return CHAT_SYNTAX_MISTRAL;
    if (has(src, n, "<|tool_call>")) return CHAT_SYNTAX_GEMMA4;
    if (has(src, n, "<|tool_call|>")) return CHAT_SYNTAX_GRANITE;
    if (has(src, n, "<tool_call>")) return CHAT_SYNTAX_HERMES;
    if (has(src, n, "<|python_tag|>")) return CHAT_SYNTAX_LLAMA3;
    /* Llama 3.2's template asks for {"name": ..., "parameters": ...} without a tag */
    if (has(src, n, "<|start_header_id|>") && has(src, n, "\"parameters\"")) return CHAT_SYNTAX_LLAMA3;
    return CHAT_SYNTAX_PLAIN;
}

bool chat_template_thinks(const char *src, size_t n) {
    if (!src) return false;
    return has(src, n, "<think>") || has(src, n, "enable_thinking") || has(src, n, "<|channel|>") ||
           has(src, n, "<|channel>");
}

static bool ends_with(const char *s, size_t n, const char *lit) {
    size_t l = strlen(lit);
    return n >= l && memcmp(s + n - l, lit, l) == 0;
}

bool chat_prompt_in_reasoning(const char *s, size_t n) {
    while (n > 0 && chat_is_ws(s[n - 1]))
        n--;
    return ends_with(s, n, "<think>") || ends_with(s, n, "<|channel>thought");
}
