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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_goldens),
        cmocka_unit_test(test_detect_shared),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
