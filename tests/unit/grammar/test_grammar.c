/* test_grammar.c — the GBNF engine: parse errors and their messages, strings
 * accepted and rejected by many grammars (arithmetic, JSON, lists,
 * repetition bounds, negated classes, UTF-8), partial UTF-8 across tokens,
 * can_end, clone/copy/reset, token masks against brute force over a random
 * vocabulary, and the bounds on nesting and ambiguity. */
#include "testutil.h"
#include "kiln/grammar.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static gram *compile(const char *text) {
    gram *g = NULL;
    kn_err e = {0};
    kn_status st = gram_compile(text, strlen(text), NULL, &g, &e);
    if (st != KN_OK) fail_msg("compile failed: %s\n--- grammar:\n%s", e.msg, text);
    return g;
}

/* Whether the whole of s is a sentence of g. */
static bool full_match(const gram *g, const char *s) {
    gram_state *st;
    assert_int_equal(gram_state_create(g, &st, NULL), KN_OK);
    bool ok = gram_accept_bytes(st, s, strlen(s)) && gram_can_end(st);
    gram_state_destroy(st);
    return ok;
}

/* Whether s is a prefix of some sentence of g. */
static bool prefix_ok(const gram *g, const char *s) {
    gram_state *st;
    assert_int_equal(gram_state_create(g, &st, NULL), KN_OK);
    bool ok = gram_accept_bytes(st, s, strlen(s));
    gram_state_destroy(st);
    return ok;
}

static void check_all(const char *grammar, const char *const *yes, const char *const *no) {
    gram *g = compile(grammar);
    for (; yes && *yes; yes++)
        if (!full_match(g, *yes)) fail_msg("should match: '%s'\n--- grammar:\n%s", *yes, grammar);
    for (; no && *no; no++)
        if (full_match(g, *no)) fail_msg("should not match: '%s'\n--- grammar:\n%s", *no, grammar);
    gram_destroy(g);
}

/* ---- parse errors ------------------------------------------------------------------ */

static void expect_error(const char *text, kn_status want, const char *msg_part) {
    gram *g = NULL;
    kn_err e = {0};
    kn_status st = gram_compile(text, strlen(text), NULL, &g, &e);
    if (st == KN_OK) fail_msg("should not compile:\n%s", text);
    assert_null(g);
    if (st != want) fail_msg("status %s, want %s (%s)", kn_status_str(st), kn_status_str(want), e.msg);
    if (!strstr(e.msg, msg_part)) fail_msg("message '%s' lacks '%s'", e.msg, msg_part);
}

static void test_parse_errors(void **st) {
    (void)st;
    expect_error("root ::= a\na ::= \"x\"\nb ::= \"y\" foo\n", KN_EINVAL, "undefined rule 'foo' at 3:11");
    expect_error("root ::= \"abc\n", KN_EINVAL, "unterminated string at 1:10");
    expect_error("root ::= [abc\n", KN_EINVAL, "unterminated character class at 1:10");
    expect_error("root ::= x\nx ::= x \"a\" | \"b\"\n", KN_EINVAL, "left recursion in rule 'x' at 2:1");
    expect_error("root ::= a\na ::= b \"c\"\nb ::= \"\" | a\n", KN_EINVAL, "left recursion in rule");
    expect_error("root ::= x\nx ::= e x \"a\" | \"b\"\ne ::= \"\" | \"z\"\n", KN_EINVAL,
                 "left recursion in rule 'x'");
    expect_error("root ::= (\"\" | \"a\")*\n", KN_EINVAL, "left recursion in rule 'root'");
    expect_error("root = \"a\"\n", KN_EINVAL, "expecting '::=' at 1:6");
    expect_error("root ::= \"a\\q\"\n", KN_EINVAL, "unknown escape '\\q' at 1:12");
    expect_error("root ::= \"\\x4\"\n", KN_EINVAL, "expecting 2 hex digits");
    expect_error("root ::= \"\\U00110000\"\n", KN_EINVAL, "out of range");
    expect_error("root ::= \"a\"{1001}\n", KN_ERANGE, "repetition count over the limit of 1000");
    expect_error("root ::= \"a\"{3,2}\n", KN_EINVAL, "max < min");
    expect_error("root ::= \"a\"{2\n", KN_EINVAL, "expecting '}'");
    expect_error("root ::= * \"a\"\n", KN_EINVAL, "expecting an item before '*' at 1:10");
    expect_error("root ::= (\"a\"\n", KN_EINVAL, "expecting ')'");
    expect_error("root ::= \"a\")\n", KN_EINVAL, "unmatched ')' at 1:13");
    expect_error("a ::= \"a\"\n", KN_EINVAL, "no rule named 'root'");
    expect_error("root ::= \"a\"\nroot ::= \"b\"\n", KN_EINVAL,
                 "rule 'root' defined again (first at 1:1) at 2:1");
    expect_error("root ::= []\n", KN_EINVAL, "empty character class");
    expect_error("root ::= [z-a]\n", KN_EINVAL, "backwards");
    expect_error("root ::= \"\xC3\x28\"\n", KN_EINVAL, "invalid UTF-8");
    expect_error("::= \"a\"\n", KN_EINVAL, "expecting a rule name at 1:1");
    /* nesting depth */
    char deep[400] = "root ::= ";
    for (int i = 0; i < 70; i++)
        strcat(deep, "(");
    strcat(deep, "\"a\"");
    for (int i = 0; i < 70; i++)
        strcat(deep, ")");
    expect_error(deep, KN_ERANGE, "nested deeper than 64");
    /* text length */
    size_t big = GRAM_MAX_TEXT + 1;
    char *t = malloc(big);
    memset(t, ' ', big);
    gram *g = NULL;
    kn_err e = {0};
    assert_int_equal(gram_compile(t, big, NULL, &g, &e), KN_ERANGE);
    assert_non_null(strstr(e.msg, "over the limit"));
    free(t);
    /* a NUL byte */
    assert_int_equal(gram_compile("root ::= \"a\"\0", 13, NULL, &g, &e), KN_EINVAL);
    /* too many repetition helpers */
    char reps[4096] = "root ::= ";
    for (int i = 0; i < 70; i++)
        strcat(reps, "\"a\"{0,1000} ");
    strcat(reps, "\n");
    expect_error(reps, KN_ERANGE, "too many rules");
    /* another root name */
    assert_int_equal(gram_compile("start ::= \"a\"\n", 14, "start", &g, &e), KN_OK);
    assert_true(full_match(g, "a"));
    gram_destroy(g);
}

/* ---- accepting ----------------------------------------------------------------------- */

static const char ARITH[] = "root  ::= (expr \"=\" ws term \"\\n\")+\n"
                            "expr  ::= term ([-+*/] ws term)*\n"
                            "term  ::= ident | num | \"(\" ws expr \")\" ws\n"
                            "ident ::= [a-z] [a-z0-9_]* ws\n"
                            "num   ::= [0-9]+ ws\n"
                            "ws    ::= [ \\t\\n]*\n";

static void test_arithmetic(void **st) {
    (void)st;
    const char *yes[] = {"1+2=3\n", "(a+b)*c=x\n", "x=1\ny=2\n", "(1 + 2) * 3 = 9\n", "( ( 1 ) )=1\n", NULL};
    const char *no[] = {"1+2=3", "1+=3\n", "(1=1\n", "=1\n", "1+2\n", "A=1\n", "", NULL};
    check_all(ARITH, yes, no);
}

static const char JSON[] =
    "# JSON, from RFC 8259\n"
    "root   ::= object\n"
    "value  ::= object | array | string | number | (\"true\" | \"false\" | \"null\") ws\n"
    "\n"
    "object ::=\n"
    "  \"{\" ws (\n"
    "            string \":\" ws value\n"
    "    (\",\" ws string \":\" ws value)*\n"
    "  )? \"}\" ws\n"
    "\n"
    "array  ::=\n"
    "  \"[\" ws (\n"
    "            value\n"
    "    (\",\" ws value)*\n"
    "  )? \"]\" ws\n"
    "\n"
    "string ::=\n"
    "  \"\\\"\" (\n"
    "    [^\"\\\\\\x00-\\x1F] |\n"
    "    \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4}) # escapes\n"
    "  )* \"\\\"\" ws\n"
    "\n"
    "number ::= (\"-\"? ([0-9] | [1-9] [0-9]{0,15})) (\".\" [0-9]+)? ([eE] [-+]? [0-9] [0-9]{0,15})? ws\n"
    "\n"
    "ws ::= | \" \" | \"\\n\" [ \\t]{0,20}\n";

static void test_json(void **st) {
    (void)st;
    const char *yes[] = {"{}",
                         "{ }",
                         "{\"a\":1}",
                         "{\"a\": [1, 2.5, -3e10, true, false, null], \"b\": {\"c\": \"d\\n\\u00e9\"}}",
                         "{\"k\": \"h\xC3\xA9llo \xE2\x9C\x93 \xF0\x9F\x98\x80\"}",
                         "{\"a\":[]}",
                         "{\"a\":[[[[]]]]}\n",
                         "{\"esc\": \"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}",
                         NULL};
    const char *no[] = {"[]",
                        "{",
                        "{\"a\"}",
                        "{\"a\":}",
                        "{\"a\":1,}",
                        "{'a':1}",
                        "{\"a\":01x}",
                        "{\"a\":\"\\x\"}",
                        "{\"a\":\"\\u12g4\"}",
                        "{\"a\":\"tab\there\"}",
                        "{\"a\":tru}",
                        "{\"a\":1} x",
                        NULL};
    check_all(JSON, yes, no);
    gram *g = compile(JSON);
    assert_true(prefix_ok(g, "{\"a\": [1, {\"b\""));
    assert_false(prefix_ok(g, "{\"a\": ]"));
    gram_destroy(g);
}

static void test_lists_and_repetition(void **st) {
    (void)st;
    const char *y1[] = {"a", "a,b", "a,b,cc", NULL};
    const char *n1[] = {"", ",", "a,", "a,,b", NULL};
    check_all("root ::= item (\",\" item)*\nitem ::= [a-z]+\n", y1, n1);

    const char *y2[] = {"aa", "aaa", "aaaa", "aaaaa", NULL};
    const char *n2[] = {"", "a", "aaaaaa", NULL};
    check_all("root ::= \"a\"{2,5}\n", y2, n2);

    const char *y3[] = {"xyzxyzxyz", NULL};
    const char *n3[] = {"xyzxyz", "xyzxyzxyzxyz", "xyzxyzxy", NULL};
    check_all("root ::= \"xyz\"{3}\n", y3, n3);

    const char *y4[] = {"bb", "bbb", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", NULL};
    const char *n4[] = {"b", "", NULL};
    check_all("root ::= \"b\"{2,}\n", y4, n4);

    const char *y5[] = {"", "q", NULL};
    const char *n5[] = {"qq", NULL};
    check_all("root ::= \"q\"{0,1}\n", y5, n5);
    check_all("root ::= \"q\"?\n", y5, n5);

    const char *y6[] = {"", "ab", "abab", NULL};
    const char *n6[] = {"a", "aba", NULL};
    check_all("root ::= (\"a\" \"b\")*\n", y6, n6);

    const char *y7[] = {"12-34", "1-3", NULL};
    const char *n7[] = {"123-4", "-1", NULL};
    check_all("root ::= d{1,2} \"-\" d{1,2}\nd ::= [0-9]\n", y7, n7);

    const char *y8[] = {"ok", "abcok", NULL};
    const char *n8[] = {"abcdok", NULL};
    check_all("root ::= [a-z] { 0 , 3 } \"ok\"\n", y8, n8);
}

static void test_classes_and_escapes(void **st) {
    (void)st;
    const char *y1[] = {"X", "Z", "0", "\xC3\xA9", " ", NULL};
    const char *n1[] = {"a", "m", "z", "\"", "\n", NULL};
    check_all("root ::= [^a-z\"\\n]\n", y1, n1);

    const char *y2[] = {"\t\r\n\\\"", NULL};
    check_all("root ::= \"\\t\\r\\n\\\\\\\"\"\n", y2, NULL);

    const char *y3[] = {"A", "B", "\xC3\xA9", "\xE2\x9C\x93", "\xF0\x9F\x98\x80", NULL};
    const char *n3[] = {"C", "\xC3\xA8", NULL};
    check_all("root ::= \"\\x41\" | \"\\u0042\" | \"\\u00e9\" | \"\\U00002713\" | \"\\U0001F600\"\n", y3, n3);

    const char *y4[] = {"a-", "]^", "[", NULL};
    const char *n4[] = {"b", NULL};
    check_all("root ::= [a\\-]+ | [\\]^]+ | [\\[]\n", y4, n4);

    const char *y5[] = {"a", "\xF0\x9F\x98\x80", "\n", NULL};
    const char *n5[] = {"", "ab", NULL};
    check_all("root ::= .\n", y5, n5);

    /* comments and layout */
    const char *y6[] = {"ab", NULL};
    check_all("# top\nroot ::= a b # trailing\n\n  a ::= \"a\"\r\nb ::= \"b\"", y6, NULL);
    check_all("root ::= x\nx ::= (\n  \"a\" # in a group\n  \"b\"\n)\n", y6, NULL);
    check_all("root ::= \"a\" |\n  \"b\"\n", (const char *[]){"a", "b", NULL}, (const char *[]){"ab", NULL});
}

static void test_utf8(void **st) {
    (void)st;
    const char *y1[] = {"\xC3\xA9\xE2\x9C\x93", "\xCE\xB1\xCE\xB2\xCE\xB3", "\xE2\x9C\x94\xF0\x9F\x98\x80",
                        NULL};
    const char *n1[] = {"e", "\xC3\xA9", "\xCE\xB1\xCE\xB2\xCE\xB3\xCE\xB4", "\xE2\x9C\x95", NULL};
    check_all("root ::= \"\xC3\xA9\xE2\x9C\x93\" | [\xCE\xB1-\xCE\xB3]{3} | [\xE2\x9C\x93-\xE2\x9C\x94] "
              "[\xF0\x9F\x98\x80-\xF0\x9F\x98\x8F]\n",
              y1, n1);

    /* one character split across tokens; the partial tail is kept */
    gram *g = compile("root ::= \"\xC3\xA9\xE2\x9C\x93\" \"!\"?\n");
    gram_state *s;
    assert_int_equal(gram_state_create(g, &s, NULL), KN_OK);
    assert_false(gram_accept_bytes(s, "\xE2", 1)); /* no 3-byte character can come first */
    assert_false(gram_accept_bytes(s, "\xC3\xA8", 2));
    assert_true(gram_accept_bytes(s, "\xC3", 1));
    assert_false(gram_can_end(s));
    assert_false(gram_accept_cp(s, 'x')); /* a sequence is pending */
    assert_false(gram_accept_bytes(s, "A", 1));
    assert_true(gram_accept_bytes(s, "\xA9\xE2", 2));
    assert_true(gram_accept_bytes(s, "\x9C", 1));
    assert_false(gram_accept_bytes(s, "\x94", 1)); /* U+2714: not this one */
    assert_true(gram_accept_bytes(s, "\x93", 1));
    assert_true(gram_can_end(s));
    assert_true(gram_accept_cp(s, '!'));
    assert_true(gram_can_end(s));
    assert_false(gram_accept_cp(s, '!'));
    gram_state_destroy(s);
    gram_destroy(g);

    /* invalid UTF-8 never matches, even '.' */
    g = compile("root ::= .*\n");
    const char *bad[] = {"\xC0\x80", "\xC1\xBF",     "\xED\xA0\x80",     "\xF4\x90\x80\x80", "\xFF",
                         "\x80",     "\xE0\x80\x80", "\xF0\x80\x80\x80", "\xF5\x80\x80\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (prefix_ok(g, bad[i])) fail_msg("accepted invalid UTF-8 #%zu", i);
    assert_true(full_match(g, "\xF4\x8F\xBF\xBF\xED\x9F\xBF\xEE\x80\x80\xC2\x80"));
    assert_true(prefix_ok(g, "\xF0\x9F"));
    assert_false(full_match(g, "\xF0\x9F"));
    assert_int_equal(gram_state_create(g, &s, NULL), KN_OK);
    assert_false(gram_accept_cp(s, 0xD800));
    assert_false(gram_accept_cp(s, 0x110000));
    assert_true(gram_accept_cp(s, 0x10FFFF));
    gram_state_destroy(s);
    gram_destroy(g);
}

static void test_can_end_clone_reset(void **st) {
    (void)st;
    gram *g = compile("root ::= \"ab\" (\"c\" | \"cd\")\n");
    gram_state *s, *c;
    assert_int_equal(gram_state_create(g, &s, NULL), KN_OK);
    assert_false(gram_can_end(s));
    assert_true(gram_accept_bytes(s, "ab", 2));
    assert_false(gram_can_end(s));
    assert_int_equal(gram_state_clone(s, &c, NULL), KN_OK);
    assert_true(gram_accept_cp(s, 'c'));
    assert_true(gram_can_end(s));
    assert_int_equal(gram_state_stacks(s), 2); /* ended, or before 'd' */
    assert_true(gram_accept_cp(s, 'd'));
    assert_true(gram_can_end(s));
    assert_false(gram_accept_cp(s, 'd'));
    /* the clone is where s was */
    assert_false(gram_can_end(c));
    assert_false(gram_accept_bytes(c, "cdd", 3)); /* all or nothing */
    assert_true(gram_accept_bytes(c, "cd", 2));
    assert_true(gram_can_end(c));
    /* copy back and reset */
    assert_int_equal(gram_state_copy(s, c, NULL), KN_OK);
    assert_true(gram_can_end(s));
    gram_state_reset(s);
    assert_false(gram_can_end(s));
    assert_true(gram_accept_bytes(s, "abc", 3));
    assert_int_equal(gram_state_status(s, NULL), KN_OK);
    gram_state_destroy(c);
    gram_state_destroy(s);
    gram_destroy(g);

    /* empty sentence */
    g = compile("root ::= \"x\"*\n");
    assert_int_equal(gram_state_create(g, &s, NULL), KN_OK);
    assert_true(gram_can_end(s));
    gram_state_destroy(s);
    gram_destroy(g);
}

/* ---- bounds --------------------------------------------------------------------------------- */

static void test_bounds(void **st) {
    (void)st;
    /* nesting: each '(' adds a continuation to the stack */
    gram *g = compile("root ::= \"(\" root \")\" | \"x\"\n");
    gram_state *s;
    kn_err e = {0};
    assert_int_equal(gram_state_create(g, &s, NULL), KN_OK);
    int i = 0;
    while (i < 10000 && gram_accept_cp(s, '('))
        i++;
    assert_true(i > 1000 && i < 10000);
    assert_int_equal(gram_state_status(s, &e), KN_ERANGE);
    assert_non_null(strstr(e.msg, "deeper than"));
    assert_false(gram_accept_cp(s, 'x')); /* sticky */
    gram_state_reset(s);
    assert_true(gram_accept_bytes(s, "((x))", 5));
    assert_true(gram_can_end(s));
    gram_state_destroy(s);
    gram_destroy(g);

    /* ambiguity: after n x's, 2^n distinct stacks of pending y/z */
    g = compile("root ::= \"x\" root \"y\" | \"x\" root \"z\" | \"w\"\n");
    assert_int_equal(gram_state_create(g, &s, NULL), KN_OK);
    for (i = 0; i < 40 && gram_accept_cp(s, 'x'); i++)
        assert_int_equal(gram_state_stacks(s), 3u << (i + 1));
    assert_true(i >= 10 && i < 40);
    assert_int_equal(gram_state_status(s, &e), KN_ERANGE);
    assert_non_null(strstr(e.msg, "parse stacks"));
    gram_state_destroy(s);
    gram_destroy(g);
}

/* ---- masks against brute force ---------------------------------------------------------------- */

typedef struct rvocab {
    gram_token *toks;
    char **bytes;
    size_t n;
} rvocab;

static void rvocab_make(rvocab *v, size_t n, uint64_t seed) {
    static const char *units[] = {
        "{",    "}",        "[",        "]",        "\"",   ":", ",",  " ",     "\n",   "0",    "1",
        "7",    ".",        "-",        "e",        "a",    "b", "x",  "y",     "true", "null", "(",
        ")",    "+",        "*",        "=",        "\\",   "u", "é",  "✓",     "😀",    "\xC3", "\xA9",
        "\xE2", "\x9C\x93", "\xF0\x9F", "\x98\x80", "\xFF", "z", "\t", "\"a\"", "\": "};
    tu_rng r = {seed};
    v->n = n;
    v->toks = calloc(n, sizeof *v->toks);
    v->bytes = calloc(n, sizeof *v->bytes);
    for (size_t i = 0; i < n; i++) {
        char buf[64] = {0};
        size_t len = 0;
        size_t k = i == 0 ? 0 : 1 + tu_rng_u64(&r) % 4; /* token 0 is empty */
        for (size_t j = 0; j < k; j++) {
            const char *u = units[tu_rng_u64(&r) % (sizeof units / sizeof *units)];
            size_t ul = strlen(u);
            memcpy(buf + len, u, ul);
            len += ul;
        }
        if (i % 37 == 5 && i >= 37) { /* a few duplicates of an earlier token */
            size_t d = tu_rng_u64(&r) % i;
            len = v->toks[d].len;
            memcpy(buf, v->bytes[d], len);
        }
        v->bytes[i] = malloc(len + 1);
        memcpy(v->bytes[i], buf, len + 1);
        v->toks[i] = (gram_token){.bytes = v->bytes[i], .len = (uint32_t)len, .kind = GRAM_TOK_TEXT};
    }
    v->toks[n - 1].kind = GRAM_TOK_EOG;
    v->toks[n - 2].kind = GRAM_TOK_CONTROL;
    v->toks[n / 2].kind = GRAM_TOK_EOG;
}

static void rvocab_free(rvocab *v) {
    for (size_t i = 0; i < v->n; i++)
        free(v->bytes[i]);
    free(v->bytes);
    free(v->toks);
}

/* Walks random allowed tokens; at each step the mask must equal the brute
 * force answer (a clone taking each token), and gram_token_ok too. */
static void mask_walk(const char *grammar, uint64_t seed, int steps, int *n_checked, int *n_allowed) {
    gram *g = compile(grammar);
    rvocab rv;
    rvocab_make(&rv, 400, seed);
    gram_vocab *v;
    kn_err e = {0};
    assert_int_equal(gram_vocab_create(rv.toks, rv.n, &v, &e), KN_OK);
    assert_int_equal(gram_vocab_size(v), rv.n);
    gram_state *s, *c;
    assert_int_equal(gram_state_create(g, &s, NULL), KN_OK);
    assert_int_equal(gram_state_create(g, &c, NULL), KN_OK);
    uint8_t *mask = malloc(rv.n);
    uint32_t *allowed = malloc(rv.n * sizeof *allowed);
    tu_rng r = {seed * 7 + 1};
    for (int step = 0; step < steps; step++) {
        assert_int_equal(gram_mask(s, v, mask, &e), KN_OK);
        size_t na = 0;
        for (uint32_t id = 0; id < rv.n; id++) {
            bool brute;
            if (rv.toks[id].kind == GRAM_TOK_EOG) {
                brute = gram_can_end(s);
            } else if (rv.toks[id].kind == GRAM_TOK_CONTROL) {
                brute = false;
            } else {
                assert_int_equal(gram_state_copy(c, s, NULL), KN_OK);
                brute = gram_accept_bytes(c, rv.toks[id].bytes, rv.toks[id].len);
            }
            if (mask[id] != brute)
                fail_msg("step %d token %u ('%.*s'): mask %d, brute force %d", step, id, (int)rv.toks[id].len,
                         (const char *)rv.toks[id].bytes, mask[id], brute);
            assert_int_equal(gram_token_ok(s, v, id), brute);
            (*n_checked)++;
            if (brute && rv.toks[id].kind == GRAM_TOK_TEXT && rv.toks[id].len) allowed[na++] = id;
        }
        *n_allowed += (int)na;
        if (!na) break;
        uint32_t pick = allowed[tu_rng_u64(&r) % na];
        assert_true(gram_accept_token(s, v, pick));
    }
    free(mask);
    free(allowed);
    gram_state_destroy(c);
    gram_state_destroy(s);
    gram_vocab_destroy(v);
    rvocab_free(&rv);
    gram_destroy(g);
}

static void test_mask_brute_force(void **st) {
    (void)st;
    const char *grammars[] = {
        JSON,
        ARITH,
        "root ::= (\"\xC3\xA9\" | [\xE2\x9C\x93-\xE2\x9C\x95] | \"\xF0\x9F\x98\x80\" | [^a-z\\x00-\\x1f{}])+ "
        "\".\"\n",
        "root ::= \"[\" ws (item (\",\" ws item)*)? \"]\"\nitem ::= \"\\\"\" [a-z]{1,3} \"\\\"\" | [0-9]+\n"
        "ws ::= [ \\n]*\n",
        "root ::= .{0,6}\n",
    };
    int checked = 0, allowed = 0;
    for (size_t i = 0; i < sizeof grammars / sizeof *grammars; i++)
        for (uint64_t seed = 1; seed <= 4; seed++)
            mask_walk(grammars[i], seed * 1000 + i, 25, &checked, &allowed);
    print_message("mask checks: %d tokens, %d allowed\n", checked, allowed);
    assert_true(allowed > 200);
}

/* An empty grammar; a long chain of rules that are nullable only through
 * the next one (compiles in linear time); masks reused across steps and
 * copies (the transition cache survives them). */
static void test_edges(void **st) {
    (void)st;
    gram *g = compile("root ::=\n");
    gram_state *s;
    assert_int_equal(gram_state_create(g, &s, NULL), KN_OK);
    assert_true(gram_can_end(s));
    assert_false(gram_accept_cp(s, 'a'));
    assert_true(gram_accept_bytes(s, "", 0));
    gram_token toks[3] = {{"", 0, GRAM_TOK_TEXT}, {"a", 1, GRAM_TOK_TEXT}, {"", 0, GRAM_TOK_EOG}};
    gram_vocab *v;
    assert_int_equal(gram_vocab_create(toks, 3, &v, NULL), KN_OK);
    uint8_t m[3];
    assert_int_equal(gram_mask(s, v, m, NULL), KN_OK);
    assert_true(m[0] && !m[1] && m[2]);
    gram_state_destroy(s);
    gram_destroy(g);
    gram_vocab_destroy(v);

    size_t n = 20000, cap = n * 32;
    char *t = malloc(cap), *p = t;
    p += sprintf(p, "root ::= r1 \"x\"\n");
    for (size_t i = 1; i < n; i++)
        p += sprintf(p, "r%zu ::= r%zu\n", i, i + 1);
    p += sprintf(p, "r%zu ::= \"\" | \"y\"\n", n);
    double t0 = kn_now_s();
    g = compile(t);
    assert_true(kn_now_s() - t0 < 5.0);
    assert_true(full_match(g, "x") && full_match(g, "yx") && !full_match(g, "y"));
    gram_destroy(g);
    free(t);

    /* the same masks from a state, its copy, and after reset */
    g = compile(JSON);
    rvocab rv;
    rvocab_make(&rv, 300, 99);
    assert_int_equal(gram_vocab_create(rv.toks, rv.n, &v, NULL), KN_OK);
    gram_state *c;
    assert_int_equal(gram_state_create(g, &s, NULL), KN_OK);
    assert_int_equal(gram_state_create(g, &c, NULL), KN_OK);
    uint8_t *m1 = malloc(rv.n), *m2 = malloc(rv.n);
    const char *text = "{\"a\": [1, \"b\xC3\xA9\", {\"c\": null}], \"d\": \"xyz";
    for (size_t i = 0; text[i]; i++) {
        assert_int_equal(gram_mask(s, v, m1, NULL), KN_OK);
        assert_int_equal(gram_state_copy(c, s, NULL), KN_OK);
        assert_int_equal(gram_mask(c, v, m2, NULL), KN_OK);
        assert_memory_equal(m1, m2, rv.n);
        assert_int_equal(gram_mask(s, v, m2, NULL), KN_OK); /* again, from the cache */
        assert_memory_equal(m1, m2, rv.n);
        assert_true(gram_accept_bytes(s, text + i, 1));
    }
    gram_state_reset(c);
    assert_int_equal(gram_mask(c, v, m2, NULL), KN_OK);
    gram_state_reset(s);
    assert_int_equal(gram_mask(s, v, m1, NULL), KN_OK);
    assert_memory_equal(m1, m2, rv.n);
    free(m1);
    free(m2);
    gram_state_destroy(c);
    gram_state_destroy(s);
    gram_vocab_destroy(v);
    rvocab_free(&rv);
    gram_destroy(g);
}

static void test_vocab_errors(void **st) {
    (void)st;
    gram_vocab *v = NULL;
    kn_err e = {0};
    char *big = calloc(GRAM_MAX_TOKEN_BYTES + 1, 1);
    gram_token t = {.bytes = big, .len = GRAM_MAX_TOKEN_BYTES + 1};
    assert_int_equal(gram_vocab_create(&t, 1, &v, &e), KN_ERANGE);
    assert_null(v);
    t.kind = 7;
    t.len = 1;
    assert_int_equal(gram_vocab_create(&t, 1, &v, &e), KN_EINVAL);
    /* a long control token is fine: never matched */
    t.kind = GRAM_TOK_CONTROL;
    t.len = GRAM_MAX_TOKEN_BYTES + 1;
    assert_int_equal(gram_vocab_create(&t, 1, &v, &e), KN_OK);
    gram *g = compile("root ::= \"a\"\n");
    gram_state *s;
    assert_int_equal(gram_state_create(g, &s, NULL), KN_OK);
    uint8_t m = 9;
    assert_int_equal(gram_mask(s, v, &m, &e), KN_OK);
    assert_int_equal(m, 0);
    assert_false(gram_token_ok(s, v, 0));
    assert_false(gram_token_ok(s, v, 1));
    gram_state_destroy(s);
    gram_destroy(g);
    gram_vocab_destroy(v);
    free(big);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_arithmetic),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_lists_and_repetition),
        cmocka_unit_test(test_classes_and_escapes),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_can_end_clone_reset),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_mask_brute_force),
        cmocka_unit_test(test_edges),
        cmocka_unit_test(test_vocab_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
