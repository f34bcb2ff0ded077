/*
 * kiln/chat.h — a model family's chat syntax, seen from the answer side:
 * which tool-call and reasoning markup a chat template makes the model
 * write, and the streaming parser that splits the raw text of an answer
 * into content, reasoning and tool calls.
 *
 * Owns: the syntax table (one row per family: detection from the template
 * source, the markers, the parser), the parser state of one answer. It
 * knows no model, tokenizer, HTTP or dialect: input is the answer's text as
 * the engine produces it (whole UTF-8 characters per piece), output is a
 * sequence of events that every API dialect maps to its own shape (OpenAI
 * tool_calls / reasoning_content, Ollama message.tool_calls / thinking,
 * Anthropic tool_use / thinking blocks, Responses function_call items).
 *
 * Syntaxes (docs/chat.md has the exact grammar of each):
 *   hermes    <tool_call>{"name": N, "arguments": {...}}</tool_call>  (Qwen 2.5/3, SmolLM3, Hermes)
 *   llama3    {"name": N, "parameters": {...}} as the whole answer (also "arguments"; several separated
 *             by ';' or newlines), or <|python_tag|>N.call(k=v, ...) / <|python_tag|>{json}
 *   mistral   [TOOL_CALLS][{"name": N, "arguments": {...}, "id"?: ...}, ...]  (also [TOOL_CALLS]N[ARGS]{...})
 *   deepseek  <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>N
 *             \n```json\n{...}\n```<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>
 *   granite   <|tool_call|>[{"name": N, "arguments": {...}}, ...]
 *   harmony   gpt-oss: <|channel|>analysis<|message|>...<|end|> is reasoning, final is content,
 *             commentary to=functions.N <|constrain|>json<|message|>{...}<|call|> is a tool call
 *   gemma4    <|tool_call>call:N{...}<tool_call|>
 *   generic   the whole answer is JSON: {"tool_calls": [{"name": N, "arguments": {...}}, ...]},
 *             {"tool_call": {...}} or {"response": "text"} (llama-server's format for templates
 *             without tool support: the server asks for it in the prompt and a grammar)
 *   plain     no tool-call markup
 * Reasoning: <think>...</think> (every syntax but harmony, whose analysis
 * channel is its reasoning), split out when the request asks for it.
 *
 * Invariants:
 *  - Content and reasoning events carry whole UTF-8 characters; their
 *    concatenation is the answer minus the markup the parser consumed.
 *  - Text that may be the start of a marker is held back until it is known
 *    not to be (bounded by the longest marker), so no markup reaches
 *    content; at chat_parser_finish it goes out as content.
 *  - A tool call is reported once, whole, when its markup closes: a name and
 *    its arguments as a compact JSON object text. Markup that does not parse
 *    (bad JSON, an unterminated call at the end) is content, as the model
 *    wrote it (harmony: the end of the text ends a message, <|call|> being
 *    a stop token). Whitespace next to calls is dropped unless text
 *    follows on both sides.
 *  - The events do not depend on how the text was split into pieces.
 *  - Every buffer is bounded: a call longer than CHAT_MAX_CALL_BYTES, or
 *    more than CHAT_MAX_CALLS calls, is content.
 *
 * Thread safety: a parser belongs to one thread; the table is static.
 */
#ifndef KILN_CHAT_H
#define KILN_CHAT_H

#include "kiln/core.h"

#include <stdbool.h>
#include <stddef.h>

#define CHAT_MAX_CALL_BYTES (1u << 20) /* bytes of one tool call's markup */
#define CHAT_MAX_CALLS 128u            /* tool calls in one answer */

typedef enum chat_syntax {
    CHAT_SYNTAX_PLAIN = 0,
    CHAT_SYNTAX_HERMES,
    CHAT_SYNTAX_LLAMA3,
    CHAT_SYNTAX_MISTRAL,
    CHAT_SYNTAX_DEEPSEEK,
    CHAT_SYNTAX_GRANITE,
    CHAT_SYNTAX_HARMONY,
    CHAT_SYNTAX_GEMMA4,
    CHAT_SYNTAX_GENERIC,
    CHAT_SYNTAX_COUNT
} chat_syntax;

/* "plain", "hermes", "llama3", "mistral", "deepseek", "granite", "harmony",
 * "gemma4", "generic"; parse returns false on anything else. */
const char *chat_syntax_name(chat_syntax s);
bool chat_syntax_parse(const char *name, chat_syntax *out);

/* The syntax a chat template makes its model write, from the template's
 * source (the markers it renders for tool calls); PLAIN when none (a
 * server that wants tool calls from such a model asks for GENERIC). */
chat_syntax chat_syntax_detect(const char *tmpl_src, size_t len);

/* Whether the template renders reasoning (<think>, harmony's analysis
 * channel, an enable_thinking switch): then reasoning is split out. */
bool chat_template_thinks(const char *tmpl_src, size_t len);

/* The texts of the syntax's special tokens that must reach the parser
 * (rendered even when they are control tokens: <|python_tag|>,
 * [TOOL_CALLS], harmony's <|channel|> ...). NULL-terminated, static. */
const char *const *chat_syntax_markers(chat_syntax s);

/* Whether a rendered prompt ends inside an open reasoning block: "<think>"
 * followed by nothing but whitespace (DeepSeek R1's generation prompt,
 * Qwen3 with thinking forced): the value for chat_parse_opts.in_reasoning. */
bool chat_prompt_in_reasoning(const char *prompt, size_t len);

typedef struct chat_parse_opts {
    chat_syntax syntax;
    bool tools;        /* parse tool calls (the request gave tools and tool_choice is not none); else
                          tool-call markup is content */
    bool reasoning;    /* split reasoning out (else it stays in content as written) */
    bool in_reasoning; /* the prompt ends inside an open reasoning block (a template that
                          renders "<think>\n" after the generation prompt) */
} chat_parse_opts;

typedef enum chat_ev_kind { CHAT_EV_CONTENT = 0, CHAT_EV_REASONING, CHAT_EV_TOOL_CALL } chat_ev_kind;

typedef struct chat_event {
    chat_ev_kind kind;
    const char *text; /* CONTENT / REASONING: the text (not NUL-terminated) */
    size_t len;
    int index;        /* TOOL_CALL: 0, 1, ... in the answer */
    const char *name; /* TOOL_CALL: the function's name (NUL-terminated) */
    const char *args; /* TOOL_CALL: its arguments, a compact JSON object text (NUL-terminated) */
    size_t args_len;
    const char *id; /* TOOL_CALL: an id the model wrote (mistral), else NULL */
} chat_event;
/* Pointers in an event are valid only during the callback. */
typedef void (*chat_event_fn)(void *arg, const chat_event *ev);

typedef struct chat_parser chat_parser;
kn_status chat_parser_create(const chat_parse_opts *o, chat_parser **out, kn_err *err);
void chat_parser_destroy(chat_parser *p); /* accepts NULL */
/* Feeds the next piece of the answer; events go to fn as soon as they are
 * certain. */
void chat_parser_feed(chat_parser *p, const char *text, size_t len, chat_event_fn fn, void *arg);
/* The answer ended: flushes what was held back (an unfinished marker or
 * call becomes content). */
void chat_parser_finish(chat_parser *p, chat_event_fn fn, void *arg);
/* Tool calls reported so far. */
int chat_parser_calls(const chat_parser *p);

#endif
