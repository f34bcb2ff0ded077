/*
 * internal.h — private to src/chat: the parser's state, the row of the
 * syntax table, and the helpers the syntax files share (JSON boundaries,
 * call objects, staging events).
 *
 * How a syntax plugs in: its row names the markers that open a call in
 * content (`triggers`) and a function that, given the text from such a
 * marker on, says "need more", "this much is content" or "these calls,
 * this much consumed". The driver (parser.c) finds the markers, holds back
 * what may be the start of one, handles <think> blocks, and emits. A
 * syntax that owns the whole answer (harmony) has its own `step`.
 *
 * The rule every handler keeps: its answer for a prefix of the text is
 * either "need more" or the same answer it gives for any longer text. That
 * is what makes the events independent of how the text was split.
 */
#ifndef KILN_CHAT_INTERNAL_H
#define KILN_CHAT_INTERNAL_H

#include "kiln/chat.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define CHAT_WS_HOLD 256u      /* whitespace held before a possible marker (dropped before a call) */
#define CHAT_FEED_CHUNK 65536u /* the driver takes a long piece in chunks of this size */
#define CHAT_MAX_TRIGGERS 8

typedef enum chat_try { CHAT_TRY_MORE = 0, CHAT_TRY_TEXT, CHAT_TRY_CALLS } chat_try;

/* An incremental scan for the end of one JSON value that starts with '{'
 * or '[': brackets outside strings are counted (jansson checks the rest). */
typedef struct chat_jscan {
    size_t off; /* bytes scanned */
    int depth;
    bool str, esc;
} chat_jscan;

typedef struct chat_staged {
    chat_ev_kind kind; /* CONTENT or TOOL_CALL */
    char *text;        /* CONTENT: the text; TOOL_CALL: the name */
    size_t len;
    char *args;
    size_t args_len;
    char *id;
} chat_staged;

typedef struct chat_syn chat_syn;

typedef enum chat_trig_kind { CHAT_TRIG_CALL = 0, CHAT_TRIG_DROP } chat_trig_kind;

struct chat_parser {
    chat_parse_opts o;
    const chat_syn *syn;
    int mode;
    char *buf;
    size_t len, cap, pos;
    bool reason_began;
    const char *think_open, *think_close;
    /* the markers active in content */
    const char *trig[CHAT_MAX_TRIGGERS];
    size_t trig_len[CHAT_MAX_TRIGGERS];
    chat_trig_kind trig_kind[CHAT_MAX_TRIGGERS];
    int ntrig;
    bool hold_ws; /* some active marker opens a call: whitespace before one is held */
    /* the attempt in progress */
    int ti;         /* which marker (-1: the whole answer) */
    size_t trig_ws; /* whitespace before it */
    chat_jscan js;
    size_t sub;      /* a handler's own progress (e.g. where to resume a search) */
    int hstate;      /* harmony: its own state */
    int hkind;       /* harmony: what the current body is */
    char hname[256]; /* harmony: the recipient of a call */
    size_t hname_len;
    chat_staged *staged;
    size_t nstaged, staged_cap;
    int ncalls;
    chat_event_fn fn;
    void *arg;
};

/* Tries to read a call (or calls) from s[0..n), which starts with marker
 * ti. CALLS: events staged, *used bytes consumed; TEXT: s[0..*used) is
 * content; MORE: needs more text (never when final). */
typedef chat_try (*chat_try_fn)(chat_parser *p, int ti, const char *s, size_t n, bool final, size_t *used);

struct chat_syn {
    chat_syntax id;
    const char *name;
    const char *const *markers;  /* chat_syntax_markers */
    const char *const *triggers; /* markers that open a call in content (NULL-terminated) */
    chat_try_fn try_call;
    /* llama3, generic: the answer may be one JSON value from its first '{' */
    chat_try_fn try_whole;
    bool whole_repeats; /* after a whole-answer call, ';' or whitespace and another '{' */
    /* harmony: drives the whole answer itself; returns whether it progressed */
    bool (*step)(chat_parser *p, bool final);
    /* the reasoning block; NULL: <think> ... </think> */
    const char *think_open, *think_close;
};

const chat_syn *chat_syn_get(chat_syntax s);

/* ---- shared helpers (json.c) ---------------------------------------------- */

static inline bool chat_is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}
size_t chat_skip_ws(const char *s, size_t n);
/* Where needle first occurs in s[from..n), or n. */
size_t chat_find(const char *s, size_t n, size_t from, const char *needle, size_t nlen);
bool chat_starts(const char *s, size_t n, const char *lit);
/* Whether s[0..n) is a proper prefix of lit (n < strlen(lit)). */
bool chat_is_prefix_of(const char *s, size_t n, const char *lit);

/* Scans on from j->off; true with *end past the closing bracket. */
bool chat_jscan_run(chat_jscan *j, const char *s, size_t n, size_t *end);
/* Decodes s[0..n) as one JSON value (NULL if it is not exactly one). */
json_t *chat_json_load(const char *s, size_t n);

/* Stages a call from an object with a string "name" and an object (or a
 * string holding an object) under one of the keys in args_keys; "id" when
 * it is a string. false (nothing staged) when it is not such an object. */
bool chat_stage_call_obj(chat_parser *p, json_t *obj, const char *const *args_keys);
/* Stages a call from its parts (args must be an object or a string holding one). */
bool chat_stage_call(chat_parser *p, const char *name, size_t name_len, json_t *args, const char *id);
bool chat_stage_content(chat_parser *p, const char *s, size_t n);
/* Drops what was staged by a failed attempt. */
void chat_unstage(chat_parser *p);

/* ---- the syntaxes ------------------------------------------------------------- */

chat_try chat_try_hermes(chat_parser *p, int ti, const char *s, size_t n, bool final, size_t *used);
chat_try chat_try_granite(chat_parser *p, int ti, const char *s, size_t n, bool final, size_t *used);
chat_try chat_try_mistral(chat_parser *p, int ti, const char *s, size_t n, bool final, size_t *used);
chat_try chat_try_deepseek(chat_parser *p, int ti, const char *s, size_t n, bool final, size_t *used);
chat_try chat_try_gemma4(chat_parser *p, int ti, const char *s, size_t n, bool final, size_t *used);
chat_try chat_try_llama3_tag(chat_parser *p, int ti, const char *s, size_t n, bool final, size_t *used);
chat_try chat_try_llama3_whole(chat_parser *p, int ti, const char *s, size_t n, bool final, size_t *used);
chat_try chat_try_generic(chat_parser *p, int ti, const char *s, size_t n, bool final, size_t *used);
bool chat_harmony_step(chat_parser *p, bool final);

/* ---- the driver's emitters, for syntaxes with their own step ------------------ */

void chat_emit_text(chat_parser *p, chat_ev_kind k, const char *s, size_t n);
/* Emits the staged events (calls get their index). */
void chat_emit_staged(chat_parser *p);

#endif
