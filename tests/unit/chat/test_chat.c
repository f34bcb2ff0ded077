/* test_chat.c — the chat syntax module: goldens per syntax (raw answer ->
 * content, reasoning, tool calls), each fed whole, split in two at every
 * UTF-8 boundary and one character per piece (the events must not depend
 * on the split), and detection on every template in
 * $KILN_SHARED/chat_templates and on the built-in templates. */
#include "testutil.h"
#include "kiln/chat.h"
#include "kiln/tokenizer.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- collecting events ---------------------------------------------------------- */

typedef struct sbuf {
    char *s;
    size_t n, cap;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        assert_non_null(b->s);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}
static void sb_str(sbuf *b, const char *s) {
    sb_add(b, s, strlen(s));
}

typedef struct result {
    sbuf content, reasoning, calls;
    sbuf seq; /* the events, adjacent texts of one kind merged: "C[..]R[..]T[..]" */
    int last_kind;
    int ncalls;
} result;

static void on_event(void *arg, const chat_event *ev) {
    result *r = arg;
    if (ev->kind == CHAT_EV_TOOL_CALL) {
        assert_int_equal(ev->index, r->ncalls);
        r->ncalls++;
        assert_int_equal(strlen(ev->args), ev->args_len);
        char line[64];
        sb_str(&r->calls, ev->name);
        sb_str(&r->calls, " ");
        sb_add(&r->calls, ev->args, ev->args_len);
        if (ev->id) {
            sb_str(&r->calls, " #");
            sb_str(&r->calls, ev->id);
        }
        sb_str(&r->calls, "\n");
        snprintf(line, sizeof line, "%sT%d[", r->last_kind >= 0 ? "]" : "", ev->index);
        sb_str(&r->seq, line);
        sb_str(&r->seq, ev->name);
        sb_str(&r->seq, " ");
        sb_str(&r->seq, ev->args);
        r->last_kind = CHAT_EV_TOOL_CALL;
        return;
    }
    assert_true(ev->len > 0);
    /* whole UTF-8 characters: no event ends inside one or starts with a continuation byte */
    if (kn_utf8_complete(ev->text, ev->len) != ev->len || ((unsigned char)ev->text[0] & 0xC0) == 0x80)
        fail_msg("event splits a UTF-8 character: '%.*s'", (int)ev->len, ev->text);
    sb_add(ev->kind == CHAT_EV_CONTENT ? &r->content : &r->reasoning, ev->text, ev->len);
    if ((int)ev->kind != r->last_kind) {
        sb_str(&r->seq, r->last_kind >= 0 ? "]" : "");
        sb_str(&r->seq, ev->kind == CHAT_EV_CONTENT ? "C[" : "R[");
    }
    sb_add(&r->seq, ev->text, ev->len);
    r->last_kind = (int)ev->kind;
}

static void result_free(result *r) {
    free(r->content.s), free(r->reasoning.s), free(r->calls.s), free(r->seq.s);
    memset(r, 0, sizeof *r);
}

static const char *str0(const sbuf *b) {
    return b->s ? b->s : "";
}

/* Feeds text in pieces at the given cut points (sorted, within (0, n)). */
static void run_cuts(const chat_parse_opts *o, const char *text, size_t n, const size_t *cuts, size_t ncuts,
                     result *r) {
    memset(r, 0, sizeof *r);
    r->last_kind = -1;
    chat_parser *p = NULL;
    kn_err e;
    assert_int_equal(chat_parser_create(o, &p, &e), KN_OK);
    size_t at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        chat_parser_feed(p, text + at, end - at, on_event, r);
        at = end;
    }
    chat_parser_finish(p, on_event, r);
    assert_int_equal(chat_parser_calls(p), r->ncalls);
    assert_true(r->ncalls <= (int)CHAT_MAX_CALLS);
    chat_parser_destroy(p);
}

static bool chat_is_ws_char(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool utf8_boundary(const char *s, size_t i) {
    return ((unsigned char)s[i] & 0xC0) != 0x80;
}

/* The events of text fed whole, split in two at every UTF-8 boundary, and
 * one character per piece must agree. Returns the whole-text result. */
static void run_all_splits(const chat_parse_opts *o, const char *name, const char *text, result *whole) {
    size_t n = strlen(text);
    run_cuts(o, text, n, NULL, 0, whole);
    for (size_t c = 1; c < n; c++) {
        if (!utf8_boundary(text, c)) continue;
        result r;
        run_cuts(o, text, n, &c, 1, &r);
        if (strcmp(str0(&r.seq), str0(&whole->seq)) != 0)
            fail_msg("%s: split at %zu differs:\n  whole: %s\n  split: %s", name, c, str0(&whole->seq),
                     str0(&r.seq));
        result_free(&r);
    }
    size_t *cuts = malloc((n + 1) * sizeof *cuts), k = 0;
    for (size_t c = 1; c < n; c++)
        if (utf8_boundary(text, c)) cuts[k++] = c;
    result r;
    run_cuts(o, text, n, cuts, k, &r);
    if (strcmp(str0(&r.seq), str0(&whole->seq)) != 0)
        fail_msg("%s: one character per piece differs:\n  whole: %s\n  chars: %s", name, str0(&whole->seq),
                 str0(&r.seq));
    result_free(&r);
    free(cuts);
}

/* ---- goldens ----------------------------------------------------------------------- */

enum { T = 1, R = 2, IR = 4 }; /* tools, reasoning, in_reasoning */

typedef struct golden {
    const char *name;
    chat_syntax syn;
    int flags;
    const char *raw;
    const char *content, *reasoning;
    const char *calls; /* "name args\n" per call ("name args #id\n" with an id) */
} golden;

static const golden GOLDENS[] = {
    /* plain, and <think> for every syntax but harmony */
    {"plain", CHAT_SYNTAX_PLAIN, T | R, "Hello, wörld ✓ 😀!", "Hello, wörld ✓ 😀!", "", ""},
    {"plain empty", CHAT_SYNTAX_PLAIN, T | R, "", "", "", ""},
    {"plain keeps markup", CHAT_SYNTAX_PLAIN, T, "<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call>",
     "<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call>", "", ""},
    {"think", CHAT_SYNTAX_PLAIN, R, "<think>\nLet me see: 2+2=4.\n</think>\n\nIt is 4.", "It is 4.",
     "Let me see: 2+2=4.", ""},
    {"think after spaces", CHAT_SYNTAX_PLAIN, R, " \n<think>a < b</thinking> </think>x", "x",
     "a < b</thinking>", ""},
    {"think off", CHAT_SYNTAX_PLAIN, 0, "<think>\nhm\n</think>\n\nok", "<think>\nhm\n</think>\n\nok", "", ""},
    {"think not at start", CHAT_SYNTAX_PLAIN, R, "ok <think>no</think>", "ok <think>no</think>", "", ""},
    {"think empty", CHAT_SYNTAX_HERMES, T | R, "<think>\n\n</think>\n\nHi", "Hi", "", ""},
    {"think unterminated", CHAT_SYNTAX_PLAIN, R, "<think>still going ✓", "", "still going ✓", ""},
    {"think prefix only", CHAT_SYNTAX_PLAIN, R, "<thin", "<thin", "", ""},
    {"in_reasoning", CHAT_SYNTAX_DEEPSEEK, T | R | IR, "Okay, the user asks.\n</think>\n\nAnswer.", "Answer.",
     "Okay, the user asks.", ""},
    {"in_reasoning off", CHAT_SYNTAX_DEEPSEEK, IR, "Okay.\n</think>\n\nAnswer.", "Okay.\n</think>\n\nAnswer.",
     "", ""},

    /* hermes (Qwen 2.5's template renders "\n<tool_call>\n{...}\n</tool_call>" per call) */
    {"hermes one", CHAT_SYNTAX_HERMES, T,
     "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", "", "",
     "get_weather {\"city\":\"Paris\"}\n"},
    {"hermes parallel", CHAT_SYNTAX_HERMES, T | R,
     "<think>two cities</think>\n\nLet me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
     "{\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
     "{\"city\": "
     "\"Zürich\", \"units\": {\"t\": \"C\", \"a\": [1, 2.5, null]}}}\n</tool_call>",
     "Let me check.", "two cities",
     "get_weather {\"city\":\"Paris\"}\nget_weather "
     "{\"city\":\"Zürich\",\"units\":{\"t\":\"C\",\"a\":[1,2.5,null]}}\n"},
    {"hermes text after", CHAT_SYNTAX_HERMES, T,
     "A <tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call> done.", "A done.", "", "f {}\n"},
    {"hermes args as string", CHAT_SYNTAX_HERMES, T,
     "<tool_call>{\"name\":\"f\",\"arguments\":\"{\\\"x\\\": 1}\"}</tool_call>", "", "", "f {\"x\":1}\n"},
    {"hermes malformed", CHAT_SYNTAX_HERMES, T,
     "Hi <tool_call>{\"name\":\"f\",\"arguments\":{</tool_call> "
     "<tool_call>{\"name\":\"g\",\"arguments\":{}}</tool_call>",
     "Hi <tool_call>{\"name\":\"f\",\"arguments\":{</tool_call>", "", "g {}\n"},
    {"hermes args not object", CHAT_SYNTAX_HERMES, T,
     "<tool_call>{\"name\":\"f\",\"arguments\":[1]}</tool_call>",
     "<tool_call>{\"name\":\"f\",\"arguments\":[1]}</tool_call>", "", ""},
    {"hermes no name", CHAT_SYNTAX_HERMES, T, "<tool_call>{\"arguments\":{}}</tool_call>",
     "<tool_call>{\"arguments\":{}}</tool_call>", "", ""},
    {"hermes unterminated", CHAT_SYNTAX_HERMES, T,
     "ok\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}",
     "ok\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}", "", ""},
    {"hermes marker prefix at end", CHAT_SYNTAX_HERMES, T, "ok <tool_ca", "ok <tool_ca", "", ""},
    {"hermes tools off", CHAT_SYNTAX_HERMES, 0, "<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call>",
     "<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call>", "", ""},
    {"hermes not a marker", CHAT_SYNTAX_HERMES, T, "x < y <tool x\t\n", "x < y <tool x\t\n", "", ""},

    /* llama3 (Llama 3.2's template renders {"name": N, "parameters": {...}}) */
    {"llama3 whole", CHAT_SYNTAX_LLAMA3, T,
     "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}", "", "",
     "get_weather {\"city\":\"Paris\"}\n"},
    {"llama3 whole arguments", CHAT_SYNTAX_LLAMA3, T,
     "\n {\"type\": \"function\", \"name\": \"f\", \"arguments\": {\"q\": \"a}\"}}", "", "",
     "f {\"q\":\"a}\"}\n"},
    {"llama3 several", CHAT_SYNTAX_LLAMA3, T,
     "{\"name\": \"f\", \"parameters\": {}}; {\"name\": \"g\", \"parameters\": {\"k\": true}}\n", "", "",
     "f {}\ng {\"k\":true}\n"},
    {"llama3 json not a call", CHAT_SYNTAX_LLAMA3, T, "{\"a\": 1} is JSON.", "{\"a\": 1} is JSON.", "", ""},
    {"llama3 json unterminated", CHAT_SYNTAX_LLAMA3, T, "{\"name\": \"f\", \"parameters\": {",
     "{\"name\": \"f\", \"parameters\": {", "", ""},
    {"llama3 tools off", CHAT_SYNTAX_LLAMA3, 0, "{\"name\": \"f\", \"parameters\": {}}",
     "{\"name\": \"f\", \"parameters\": {}}", "", ""},
    {"llama3 text", CHAT_SYNTAX_LLAMA3, T, "The answer is {x}.", "The answer is {x}.", "", ""},
    {"llama3 python_tag json", CHAT_SYNTAX_LLAMA3, T,
     "<|python_tag|>{\"name\": \"f\", \"parameters\": {\"a\": \"b\"}}", "", "", "f {\"a\":\"b\"}\n"},
    {"llama3 builtin", CHAT_SYNTAX_LLAMA3, T,
     "<|python_tag|>brave_search.call(query=\"weather in Paris\", n=3, safe=True, tag='it\\'s \"x\"')", "",
     "", "brave_search {\"query\":\"weather in Paris\",\"n\":3,\"safe\":true,\"tag\":\"it's \\\"x\\\"\"}\n"},
    {"llama3 builtin simple", CHAT_SYNTAX_LLAMA3, T, "<|python_tag|>wolfram_alpha.call(query=\"2+2 (sum)\")",
     "", "", "wolfram_alpha {\"query\":\"2+2 (sum)\"}\n"},
    {"llama3 python code", CHAT_SYNTAX_LLAMA3, T, "<|python_tag|>import math", "<|python_tag|>import math",
     "", ""},

    /* mistral (Mistral Nemo's template renders [TOOL_CALLS][{..., "id": "abcdefghi"}, ...]) */
    {"mistral list", CHAT_SYNTAX_MISTRAL, T,
     "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}, \"id\": \"abcdefghi\"}, "
     "{\"name\": \"get_time\", \"arguments\": {}, \"id\": \"123456789\"}]",
     "", "", "get_weather {\"city\":\"Paris\"} #abcdefghi\nget_time {} #123456789\n"},
    {"mistral new", CHAT_SYNTAX_MISTRAL, T,
     "Sure.[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]get_time[CALL_ID]a1b2c3d4e[ARGS]{}",
     "Sure.", "", "get_weather {\"city\":\"Paris\"}\nget_time {} #a1b2c3d4e\n"},
    {"mistral bad", CHAT_SYNTAX_MISTRAL, T, "[TOOL_CALLS][{\"name\": 1}] [TOOL_CALLS] x",
     "[TOOL_CALLS][{\"name\": 1}] [TOOL_CALLS] x", "", ""},

    /* deepseek (R1's template) */
    {"deepseek two", CHAT_SYNTAX_DEEPSEEK, T | R | IR,
     "The user wants weather.\n</think>\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>"
     "get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<"
     "｜tool▁sep｜>get_weather\n```json\n{\"city\": \"東京\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
     "", "The user wants weather.", "get_weather {\"city\":\"Paris\"}\nget_weather {\"city\":\"東京\"}\n"},
    {"deepseek v3.1", CHAT_SYNTAX_DEEPSEEK, T,
     "ok<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{\"a\": "
     "1}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
     "ok", "", "f {\"a\":1}\n"},
    {"deepseek unterminated", CHAT_SYNTAX_DEEPSEEK, T,
     "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{}\n```<"
     "｜tool▁call▁end｜>",
     "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{}\n```<"
     "｜tool▁call▁end｜>",
     "", ""},

    /* granite */
    {"granite", CHAT_SYNTAX_GRANITE, T,
     "<|tool_call|>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"g\", "
     "\"arguments\": {}}]",
     "", "", "get_weather {\"city\":\"Paris\"}\ng {}\n"},
    {"granite thinking", CHAT_SYNTAX_GRANITE, T | R, "<think>Hmm.</think><response>It is sunny.</response>",
     "It is sunny.", "Hmm.", ""},
    {"granite not a list", CHAT_SYNTAX_GRANITE, T, "<|tool_call|>call f", "<|tool_call|>call f", "", ""},

    /* generic */
    {"generic calls", CHAT_SYNTAX_GENERIC, T,
     "{\"tool_calls\": [{\"name\": \"f\", \"arguments\": {\"a\": 1}}, {\"name\": \"g\", \"arguments\": {}}]}",
     "", "", "f {\"a\":1}\ng {}\n"},
    {"generic call", CHAT_SYNTAX_GENERIC, T, "{\"tool_call\": {\"name\": \"f\", \"arguments\": {}}}", "", "",
     "f {}\n"},
    {"generic response", CHAT_SYNTAX_GENERIC, T | R, "<think>x</think>{\"response\": \"Hi \\\"you\\\" ✓\"}",
     "Hi \"you\" ✓", "x", ""},
    {"generic not json", CHAT_SYNTAX_GENERIC, T, "Just text {", "Just text {", "", ""},
    {"generic other json", CHAT_SYNTAX_GENERIC, T, "{\"x\": 1}", "{\"x\": 1}", "", ""},

    /* harmony (gpt-oss's template renders analysis, then "<|start|>assistant
     * to=functions.N<|channel|>commentary json<|message|>ARGS<|call|>") */
    {"harmony final", CHAT_SYNTAX_HARMONY, T | R,
     "<|channel|>analysis<|message|>User asks the "
     "weather.<|end|><|start|>assistant<|channel|>final<|message|>It is "
     "sunny ☀.<|return|>",
     "It is sunny ☀.", "User asks the weather.", ""},
    {"harmony call to= first", CHAT_SYNTAX_HARMONY, T | R,
     "<|channel|>analysis<|message|>Need the tool.<|end|><|start|>assistant "
     "to=functions.get_weather<|channel|>"
     "commentary json<|message|>{\"city\": \"Paris\"}<|call|>",
     "", "Need the tool.", "get_weather {\"city\":\"Paris\"}\n"},
    {"harmony call to= after", CHAT_SYNTAX_HARMONY, T | R,
     "<|channel|>commentary to=functions.get_weather "
     "<|constrain|>json<|message|>{\"city\":\"Paris\"}<|call|>",
     "", "", "get_weather {\"city\":\"Paris\"}\n"},
    {"harmony call at the end", CHAT_SYNTAX_HARMONY, T,
     "<|channel|>commentary to=functions.f <|constrain|>json<|message|>{\"a\": [1, {\"b\": \"<|x|>\"}]}", "",
     "", "f {\"a\":[1,{\"b\":\"<|x|>\"}]}\n"},
    {"harmony preamble", CHAT_SYNTAX_HARMONY, T | R,
     "<|channel|>commentary<|message|>Let me look.<|end|><|start|>assistant "
     "to=functions.f<|channel|>commentary "
     "json<|message|>\"{\\\"a\\\": 1}\"<|call|>",
     "Let me look.", "", "f {\"a\":1}\n"},
    {"harmony reasoning off", CHAT_SYNTAX_HARMONY, T,
     "<|channel|>analysis<|message|>Hm. <|end|><|start|>assistant<|channel|>final<|message|>It is.<|return|>",
     "Hm. It is.", "", ""},
    {"harmony tools off", CHAT_SYNTAX_HARMONY, R,
     "<|start|>assistant to=functions.f<|channel|>commentary json<|message|>{\"a\": 1}<|call|>", "{\"a\": 1}",
     "", ""},
    {"harmony bad args", CHAT_SYNTAX_HARMONY, T,
     "<|channel|>commentary to=functions.f json<|message|>{bad<|call|>", "{bad", "", ""},
    {"harmony no header", CHAT_SYNTAX_HARMONY, T | R, "Hello <there>", "Hello <there>", "", ""},
    {"harmony unterminated", CHAT_SYNTAX_HARMONY, T | R, "<|channel|>final<|message|>Partial ✓ <|en",
     "Partial ✓ <|en", "", ""},
    {"harmony cut in header", CHAT_SYNTAX_HARMONY, T | R,
     "<|channel|>analysis<|message|>a<|end|><|start|>assistant<|channel|>fin", "", "a", ""},

    /* gemma4 (its template renders <|tool_call>call:N{k:v,...}<tool_call|>, strings in <|"|>) */
    {"gemma4 call", CHAT_SYNTAX_GEMMA4, T, "<|tool_call>call:get_weather{city:<|\"|>Paris<|\"|>}<tool_call|>",
     "", "", "get_weather {\"city\":\"Paris\"}\n"},
    {"gemma4 nested and parallel", CHAT_SYNTAX_GEMMA4, T | R,
     "<|channel>thought\nTwo calls.\n<channel|>Sure.<|tool_call>call:f{a:<|\"|>x, y: {z} "
     "✓<|\"|>,b:{c:1.5,d:[true,"
     "false,null,<|\"|>q<|\"|>]},e:-3}<tool_call|><|tool_call>call:g{}<tool_call|>",
     "Sure.", "Two calls.",
     "f {\"a\":\"x, y: {z} ✓\",\"b\":{\"c\":1.5,\"d\":[true,false,null,\"q\"]},\"e\":-3}\ng {}\n"},
    {"gemma4 bad", CHAT_SYNTAX_GEMMA4, T, "<|tool_call>call:f{a:}<tool_call|>",
     "<|tool_call>call:f{a:}<tool_call|>", "", ""},
    {"gemma4 thought only", CHAT_SYNTAX_GEMMA4, R, "<|channel>thought\nHm\n<channel|>Hello", "Hello", "Hm",
     ""},
};

static void check_golden(const golden *g) {
    chat_parse_opts o = {g->syn, (g->flags & T) != 0, (g->flags & R) != 0, (g->flags & IR) != 0};
    result r;
    run_all_splits(&o, g->name, g->raw, &r);
    if (strcmp(str0(&r.content), g->content) != 0)
        fail_msg("%s: content\n  got:  '%s'\n  want: '%s'", g->name, str0(&r.content), g->content);
    if (strcmp(str0(&r.reasoning), g->reasoning) != 0)
        fail_msg("%s: reasoning\n  got:  '%s'\n  want: '%s'", g->name, str0(&r.reasoning), g->reasoning);
    if (strcmp(str0(&r.calls), g->calls) != 0)
        fail_msg("%s: calls\n  got:  '%s'\n  want: '%s'", g->name, str0(&r.calls), g->calls);
    result_free(&r);
}

static void test_goldens(void **st) {
    (void)st;
    for (size_t i = 0; i < sizeof GOLDENS / sizeof *GOLDENS; i++)
        check_golden(&GOLDENS[i]);
}

/* ---- limits ---------------------------------------------------------------------------- */

static void test_limits(void **st) {
    (void)st;
    chat_parse_opts o = {CHAT_SYNTAX_HERMES, true, false, false};
    /* more than CHAT_MAX_CALLS calls: the extra ones are content */
    static const char CALL[] = "<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call>";
    sbuf text = {0};
    for (unsigned i = 0; i < CHAT_MAX_CALLS + 2; i++)
        sb_str(&text, CALL);
    result r;
    run_all_splits(&o, "too many calls", text.s, &r);
    assert_int_equal(r.ncalls, CHAT_MAX_CALLS);
    assert_int_equal(r.content.n, 2 * strlen(CALL));
    result_free(&r);
    free(text.s);
    /* a call longer than CHAT_MAX_CALL_BYTES is content, fed whole or in pieces */
    memset(&text, 0, sizeof text);
    sb_str(&text, "<tool_call>{\"name\":\"f\",\"arguments\":{\"a\":\"");
    for (size_t i = 0; i < CHAT_MAX_CALL_BYTES / 64 + 1; i++)
        sb_str(&text, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    sb_str(&text, "\"}}</tool_call> <tool_call>{\"name\":\"g\",\"arguments\":{}}</tool_call>");
    result whole, pieces;
    run_cuts(&o, text.s, text.n, NULL, 0, &whole);
    size_t cuts[1024], nc = 0;
    for (size_t c = 4093; c < text.n && nc < 1024; c += 4093)
        cuts[nc++] = c;
    run_cuts(&o, text.s, text.n, cuts, nc, &pieces);
    assert_string_equal(str0(&whole.seq), str0(&pieces.seq));
    assert_string_equal(str0(&whole.calls), "g {}\n");
    assert_int_equal(whole.content.n,
                     text.n - strlen(" <tool_call>{\"name\":\"g\",\"arguments\":{}}</tool_call>"));
    result_free(&whole);
    result_free(&pieces);
    free(text.s);
}
/* ---- names, detection -------------------------------------------------------------- */

static void test_names(void **st) {
    (void)st;
    for (int s = 0; s < CHAT_SYNTAX_COUNT; s++) {
        chat_syntax back;
        assert_true(chat_syntax_parse(chat_syntax_name((chat_syntax)s), &back));
        assert_int_equal(back, s);
        assert_non_null(chat_syntax_markers((chat_syntax)s));
    }
    chat_syntax x;
    assert_false(chat_syntax_parse("hermes2", &x));
    assert_false(chat_syntax_parse("", &x));
    assert_string_equal(chat_syntax_name(CHAT_SYNTAX_GENERIC), "generic");
    chat_parser *p = NULL;
    kn_err e;
    chat_parse_opts bad = {CHAT_SYNTAX_COUNT, false, false, false};
    assert_int_equal(chat_parser_create(&bad, &p, &e), KN_EINVAL);
    assert_null(p);
    assert_true(chat_prompt_in_reasoning("<｜Assistant｜><think>\n", strlen("<｜Assistant｜><think>\n")));
    assert_false(chat_prompt_in_reasoning("<think>\n\n</think>\n", strlen("<think>\n\n</think>\n")));
}

static const struct {
    const char *file;
    chat_syntax syn;
    bool thinks;
} TEMPLATES[] = {
    {"HuggingFaceTB-SmolLM3-3B", CHAT_SYNTAX_PLAIN, true}, /* Unsloth's edit renders no tools */
    {"Qwen-Qwen2.5-7B-Instruct", CHAT_SYNTAX_HERMES, false},
    {"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", CHAT_SYNTAX_DEEPSEEK, true},
    {"google-gemma-2-2b-it", CHAT_SYNTAX_PLAIN, false},
    {"google-gemma-4-31B-it", CHAT_SYNTAX_GEMMA4, true},
    {"ibm-granite-granite-3.3-2B-Instruct", CHAT_SYNTAX_GRANITE, true},
    {"meta-llama-Llama-3.2-3B-Instruct", CHAT_SYNTAX_LLAMA3, false},
    {"microsoft-Phi-3.5-mini-instruct", CHAT_SYNTAX_PLAIN, false},
    {"mistralai-Mistral-Nemo-Instruct-2407", CHAT_SYNTAX_MISTRAL, false},
    {"openai-gpt-oss-120b", CHAT_SYNTAX_HARMONY, true},
};

static void test_detect_shared(void **st) {
    (void)st;
    char dir[1024], path[2048];
    tu_shared_path(dir, sizeof dir, "chat_templates");
    /* every template file there must be in the table above */
    DIR *d = opendir(dir);
    if (!d) fail_msg("cannot open %s", dir);
    size_t nfiles = 0;
    for (struct dirent *de; (de = readdir(d));) {
        size_t l = strlen(de->d_name);
        if (l < 7 || strcmp(de->d_name + l - 6, ".jinja") != 0) continue;
        nfiles++;
        bool known = false;
        for (size_t i = 0; i < sizeof TEMPLATES / sizeof *TEMPLATES; i++)
            known |= strlen(TEMPLATES[i].file) == l - 6 && strncmp(TEMPLATES[i].file, de->d_name, l - 6) == 0;
        if (!known) fail_msg("%s: no expected syntax for it in this test", de->d_name);
    }
    closedir(d);
    assert_int_equal(nfiles, sizeof TEMPLATES / sizeof *TEMPLATES);
    for (size_t i = 0; i < sizeof TEMPLATES / sizeof *TEMPLATES; i++) {
        snprintf(path, sizeof path, "%s/%s.jinja", dir, TEMPLATES[i].file);
        char *src;
        size_t n;
        kn_err e;
        if (kn_read_file(path, 1 << 20, &src, &n, &e) != KN_OK) fail_msg("%s", e.msg);
        chat_syntax got = chat_syntax_detect(src, n);
        if (got != TEMPLATES[i].syn)
            fail_msg("%s: detected %s, want %s", TEMPLATES[i].file, chat_syntax_name(got),
                     chat_syntax_name(TEMPLATES[i].syn));
        if (chat_template_thinks(src, n) != TEMPLATES[i].thinks)
            fail_msg("%s: thinks %d, want %d", TEMPLATES[i].file, !TEMPLATES[i].thinks, TEMPLATES[i].thinks);
        free(src);
    }
}

/* kiln's built-in templates: the family ones that render tools are detected
 * as their family; the others render no tool markup. */
static void test_detect_builtin(void **st) {
    (void)st;
    static const struct {
        const char *name;
        chat_syntax syn;
        bool thinks;
    } WANT[] = {
        {"chatml", CHAT_SYNTAX_PLAIN, false}, {"llama2", CHAT_SYNTAX_PLAIN, false},
        {"llama3", CHAT_SYNTAX_PLAIN, false}, {"mistral", CHAT_SYNTAX_PLAIN, false},
        {"zephyr", CHAT_SYNTAX_PLAIN, false}, {"phi3", CHAT_SYNTAX_PLAIN, false},
        {"gemma", CHAT_SYNTAX_PLAIN, false},  {"qwen3", CHAT_SYNTAX_HERMES, true},
        {"gemma4", CHAT_SYNTAX_GEMMA4, true}, {"harmony", CHAT_SYNTAX_HARMONY, true},
    };
    size_t nb = 0;
    while (tok_tmpl_builtin_name(nb))
        nb++;
    assert_int_equal(nb, sizeof WANT / sizeof *WANT);
    for (size_t i = 0; i < nb; i++) {
        const char *src = tok_tmpl_builtin(WANT[i].name);
        if (!src) fail_msg("no built-in '%s'", WANT[i].name);
        chat_syntax got = chat_syntax_detect(src, strlen(src));
        if (got != WANT[i].syn)
            fail_msg("built-in %s: detected %s, want %s", WANT[i].name, chat_syntax_name(got),
                     chat_syntax_name(WANT[i].syn));
        assert_int_equal(chat_template_thinks(src, strlen(src)), WANT[i].thinks);
    }
}
/* ---- the markup the templates render parses back ------------------------------------ */

/* The assistant turns that templates render for tool calls are exactly the
 * markup their models are trained to write: render [user, assistant with
 * tool_calls] with kiln's template engine, take what follows the prompt
 * ([user] with the generation prompt), drop the end-of-turn token, parse it
 * with the detected syntax and compare the calls with the ones rendered. */
static const struct {
    const char *file;
    int ncalls; /* how many calls the template renders in one turn */
} RENDERED[] = {
    {"Qwen-Qwen2.5-7B-Instruct", 2},
    {"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", 2},
    {"google-gemma-4-31B-it", 2},
    {"meta-llama-Llama-3.2-3B-Instruct", 1},
    {"mistralai-Mistral-Nemo-Instruct-2407", 2},
    {"openai-gpt-oss-120b", 1},
};

static char *render(const tok_tmpl *t, json_t *msgs, json_t *tools, bool agp) {
    struct tm now = {.tm_year = 125, .tm_mon = 0, .tm_mday = 2};
    tok_tmpl_inputs in = {.messages = msgs,
                          .tools = tools,
                          .add_generation_prompt = agp,
                          .bos_token = "<s>",
                          .eos_token = "</s>",
                          .now = &now};
    char *out = NULL;
    size_t len;
    kn_err e;
    if (tok_tmpl_render(t, &in, &out, &len, NULL, &e) != KN_OK) fail_msg("render: %s", e.msg);
    return out;
}

static void test_rendered_calls(void **st) {
    (void)st;
    static const char *const ENDS[] = {
        "<|im_end|>",       "<|eot_id|>",      "</s>", "<｜end▁of▁sentence｜>", "<turn|>",
        "<|tool_response>", "<｜Assistant｜>", NULL};
    const char *tools_json =
        "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": "
        "\"Weather\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": "
        "{\"type\": \"string\"}, \"days\": {\"type\": \"integer\"}}, \"required\": [\"city\"]}}}]";
    for (size_t i = 0; i < sizeof RENDERED / sizeof *RENDERED; i++) {
        char dir[1024], path[2048];
        tu_shared_path(dir, sizeof dir, "chat_templates");
        snprintf(path, sizeof path, "%s/%s.jinja", dir, RENDERED[i].file);
        char *src;
        size_t n;
        kn_err e;
        if (kn_read_file(path, 1 << 20, &src, &n, &e) != KN_OK) fail_msg("%s", e.msg);
        tok_tmpl *t = tok_tmpl_create(src, n, &e);
        if (!t) fail_msg("%s: %s", RENDERED[i].file, e.msg);
        json_error_t je;
        json_t *tools = json_loads(tools_json, 0, &je);
        json_t *calls =
            json_loads("[{\"id\": \"abcdefghi\", \"type\": \"function\", \"function\": {\"name\": "
                       "\"get_weather\", \"arguments\": {\"city\": \"Paris\"}}}, {\"id\": \"bcdefghij\", "
                       "\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": "
                       "{\"city\": \"Zürich\", \"days\": 3}}}]",
                       0, &je);
        assert_non_null(tools);
        assert_non_null(calls);
        while (json_array_size(calls) > (size_t)RENDERED[i].ncalls)
            json_array_remove(calls, json_array_size(calls) - 1);
        json_t *user = json_pack("{s:s, s:s}", "role", "user", "content", "Weather in Paris and Zürich?");
        json_t *prompt_msgs = json_pack("[O]", user);
        json_t *msgs =
            json_pack("[O, {s:s, s:s, s:O}]", user, "role", "assistant", "content", "", "tool_calls", calls);
        char *prompt = render(t, prompt_msgs, tools, true);
        char *full = render(t, msgs, tools, false);
        size_t c = 0;
        while (prompt[c] && prompt[c] == full[c])
            c++;
        while (c > 0 && (full[c] & 0xC0) == 0x80) /* a whole character */
            c--;
        for (size_t b = c;
             b > 0 && c - b < 16 && full[b - 1] != '>' && full[b - 1] != ']' && full[b - 1] != '\n'; b--)
            if (full[b - 1] == '<' || full[b - 1] == '[') { /* not inside a marker */
                c = b - 1;
                break;
            }
        char *answer = full + c;
        size_t alen = strlen(answer);
        for (bool cut = true; cut;) {
            cut = false;
            while (alen > 0 && chat_is_ws_char(answer[alen - 1]))
                alen--;
            for (const char *const *end = ENDS; *end; end++) {
                size_t l = strlen(*end);
                if (alen >= l && memcmp(answer + alen - l, *end, l) == 0) alen -= l, cut = true;
            }
        }
        answer[alen] = 0;
        chat_parse_opts o = {chat_syntax_detect(src, n), true, true, false};
        result r;
        run_all_splits(&o, RENDERED[i].file, answer, &r);
        sbuf want = {0};
        for (size_t k = 0; k < json_array_size(calls); k++) {
            json_t *fn = json_object_get(json_array_get(calls, k), "function");
            char *args = json_dumps(json_object_get(fn, "arguments"), JSON_COMPACT | JSON_PRESERVE_ORDER);
            sb_str(&want, json_string_value(json_object_get(fn, "name")));
            sb_str(&want, " ");
            sb_str(&want, args);
            if (o.syntax == CHAT_SYNTAX_MISTRAL) { /* the only one that renders the ids */
                sb_str(&want, " #");
                sb_str(&want, json_string_value(json_object_get(json_array_get(calls, k), "id")));
            }
            sb_str(&want, "\n");
            free(args);
        }
        if (strcmp(str0(&r.calls), str0(&want)) != 0 || r.content.n || r.reasoning.n)
            fail_msg(
                "%s (%s): the rendered turn\n%s\nparsed to calls\n%s\ncontent '%s' reasoning '%s', want\n%s",
                RENDERED[i].file, chat_syntax_name(o.syntax), answer, str0(&r.calls), str0(&r.content),
                str0(&r.reasoning), str0(&want));
        result_free(&r);
        free(want.s);
        free(prompt);
        free(full);
        json_decref(prompt_msgs);
        json_decref(msgs);
        json_decref(user);
        json_decref(calls);
        json_decref(tools);
        tok_tmpl_destroy(t);
        free(src);
    }
}
int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),          cmocka_unit_test(test_goldens),
        cmocka_unit_test(test_limits),         cmocka_unit_test(test_detect_shared),
        cmocka_unit_test(test_detect_builtin), cmocka_unit_test(test_rendered_calls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
