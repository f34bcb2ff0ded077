/* test_schema.c — JSON Schema to GBNF: for each supported keyword, the
 * grammar made from a schema is compiled and run over valid and invalid
 * JSON texts (hand-made from the JSON Schema spec and ajv-formats' rules:
 * calendar dates with leap years, integer ranges at and around their
 * bounds, ...); schemas shaped like pydantic's and zod-to-json-schema's
 * output; recursive $ref; errors with their JSON pointers; several schemas
 * sharing one grammar by prefix; and the GBNF productive-rule check. */
#include "testutil.h"
#include "kiln/grammar.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *parse(const char *js) {
    json_error_t je;
    json_t *j = json_loads(js, JSON_DECODE_ANY, &je);
    if (!j) fail_msg("bad test schema: %s: %s", je.text, js);
    return j;
}

static char *convert(const char *schema) {
    json_t *j = parse(schema);
    char *g = NULL;
    size_t len = 0;
    kn_err e = {0};
    kn_status st = gram_schema_to_gbnf(j, &g, &len, &e);
    json_decref(j);
    if (st != KN_OK) fail_msg("conversion failed: %s\n--- schema: %s", e.msg, schema);
    assert_int_equal(strlen(g), len);
    return g;
}

static bool full_match(const gram *g, const char *s) {
    gram_state *st;
    assert_int_equal(gram_state_create(g, &st, NULL), KN_OK);
    bool ok = gram_accept_bytes(st, s, strlen(s)) && gram_can_end(st);
    gram_state_destroy(st);
    return ok;
}

static gram *compile_text(const char *text, const char *root) {
    gram *g = NULL;
    kn_err e = {0};
    if (gram_compile(text, strlen(text), root, &g, &e) != KN_OK)
        fail_msg("compile failed: %s\n%s", e.msg, text);
    return g;
}

/* yes/no: NULL-terminated lists of JSON texts. */
static void check(const char *schema, const char *const *yes, const char *const *no) {
    char *text = convert(schema);
    gram *g = compile_text(text, NULL);
    for (; yes && *yes; yes++)
        if (!full_match(g, *yes))
            fail_msg("should accept: %s\n--- schema: %s\n--- grammar:\n%s", *yes, schema, text);
    for (; no && *no; no++)
        if (full_match(g, *no))
            fail_msg("should reject: %s\n--- schema: %s\n--- grammar:\n%s", *no, schema, text);
    gram_destroy(g);
    free(text);
}

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

static void expect_error(const char *schema, kn_status want, const char *msg_part) {
    json_t *j = parse(schema);
    char *g = NULL;
    kn_err e = {0};
    kn_status st = gram_schema_to_gbnf(j, &g, NULL, &e);
    json_decref(j);
    if (st == KN_OK) fail_msg("should fail: %s\n--- grammar:\n%s", schema, g);
    assert_null(g);
    if (st != want)
        fail_msg("status %s, want %s (%s) for %s", kn_status_str(st), kn_status_str(want), e.msg, schema);
    if (!strstr(e.msg, msg_part)) fail_msg("message '%s' lacks '%s' (schema %s)", e.msg, msg_part, schema);
}

/* ---- types ----------------------------------------------------------------------- */

static void test_types(void **st) {
    (void)st;
    check("{\"type\":\"string\"}",
          L("\"\"", "\"abc\"", "\"a\\\"b\"", "\"\\u00e9\\n\"", "\"é😀\"", "\"\\ud83d\\ude00\""),
          L("abc", "\"a", "\"a\"b\"", "\"\\x\"", "\"\n\"", "1", "\"\\ud800\"", "\"\\u12\""));
    check("{\"type\":\"integer\"}", L("0", "-0", "7", "-123", "9999999999999999"),
          L("01", "1.5", "1e3", "+1", "", "-", "\"1\"", "99999999999999999"));
    check("{\"type\":\"number\"}", L("0", "-1.5", "3.25e-7", "1E+10", "10", "0.5"),
          L(".5", "1.", "01", "1e", "--1", "NaN", "Infinity"));
    check("{\"type\":\"boolean\"}", L("true", "false"), L("True", "1", "null"));
    check("{\"type\":\"null\"}", L("null"), L("nul", "0", "\"null\""));
    check("{\"type\":\"object\"}",
          L("{}", "{\"a\":1}", "{\"a\": [1, {\"b\":null}], \"c\":\"x\"}", "{\"\":{}}"),
          L("[]", "{", "{a:1}", "{\"a\":1,}", "{ \"a\":1}", "{\"a\"  :1}", "{\"a\":1}\n"));
    check("{\"type\":\"array\"}", L("[]", "[1]", "[1, \"a\", null, [true]]", "[[],{}]"),
          L("[1,]", "[", "{}", "[ 1]"));
    check("{\"type\":[\"string\",\"null\"]}", L("\"x\"", "null"), L("1", "true"));
    check("{\"type\":\"string\",\"nullable\":true}", L("\"x\"", "null"), L("1"));
    check("{}", L("1", "\"a\"", "{\"a\":[]}", "null", "[1, 2]"), L("", "nul", "{"));
    check("true", L("1", "{}"), L(""));
    /* no type: any value, constrained where the keyword applies */
    check("{\"minimum\":5}", L("5", "6.5", "\"x\"", "null", "{}"), L("4", "-5", "4.99"));
    check("{\"properties\":{\"a\":{\"type\":\"integer\"}}}", L("{\"a\":1}", "{}", "\"str\"", "3"),
          L("{\"a\":\"x\"}"));
    /* whitespace: at most one space after ':' and ',' */
    check("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"}},"
          "\"required\":[\"a\",\"b\"]}",
          L("{\"a\":1,\"b\":2}", "{\"a\": 1, \"b\": 2}"),
          L("{\"a\":1 ,\"b\":2}", "{\"a\":  1,\"b\":2}", "{ \"a\":1,\"b\":2 }", "{\"a\":1,\n\"b\":2}",
            "{\"b\":2,\"a\":1}"));
}

/* ---- objects ----------------------------------------------------------------------- */

static void test_objects(void **st) {
    (void)st;
    const char *s =
        "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"string\"},"
        "\"c\":{\"type\":\"boolean\"}},\"required\":[\"b\"],\"additionalProperties\":false}";
    check(s,
          L("{\"b\":\"x\"}", "{\"a\":1,\"b\":\"x\"}", "{\"b\":\"x\",\"c\":true}",
            "{\"a\":1,\"b\":\"x\",\"c\":false}"),
          L("{}", "{\"a\":1}", "{\"b\":\"x\",\"d\":1}", "{\"b\":1}", "{\"c\":true,\"b\":\"x\"}",
            "{\"b\":\"x\",}", "{\"a\":1,\"c\":true}", "{\"b\":\"x\",\"b\":\"y\"}"));
    /* all optional, leading optional ones skipped */
    check("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"}},"
          "\"additionalProperties\":false}",
          L("{}", "{\"a\":1}", "{\"b\":2}", "{\"a\":1,\"b\":2}"),
          L("{,}", "{\"b\":2,\"a\":1}", "{\"a\":1,}", "{\"c\":1}"));
    /* additionalProperties absent beside properties: no extra members (llama.cpp's and OpenAI strict's
     * choice; every answer still validates) */
    check("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}", L("{}", "{\"a\":1}"),
          L("{\"a\":\"str\"}", "{\"a\":1,\"x\":\"y\"}", "{\"x\":[1]}", "{\"a\":1,\"a\":\"s\"}"));
    /* additionalProperties true: any, except the listed names (which must follow their schema) */
    check("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},\"additionalProperties\":true}",
          L("{}", "{\"a\":1}", "{\"a\":1,\"x\":\"y\"}", "{\"x\":[1]}", "{\"ab\":\"s\"}", "{\"\":1}",
            "{\"b\":1,\"c\":2}"),
          L("{\"a\":\"str\"}", "{\"x\":1,\"a\":\"s\"}", "{\"a\":1,\"a\":\"s\"}", "{\"\\u0061\":\"s\"}"));
    check("{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\"}}",
          L("{}", "{\"x\":1,\"y\":2}"), L("{\"x\":\"1\"}"));
    check("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}},\"required\":[\"a\"],"
          "\"additionalProperties\":{\"type\":\"integer\"}}",
          L("{\"a\":\"s\"}", "{\"a\":\"s\",\"n\":5}", "{\"a\":\"s\",\"aa\":1}"),
          L("{\"n\":5}", "{\"a\":\"s\",\"n\":\"5\"}", "{\"a\":\"s\",\"a\":3}"));
    /* a required name not in properties */
    check("{\"type\":\"object\",\"required\":[\"id\"]}", L("{\"id\":1}", "{\"id\":\"x\",\"b\":2}"),
          L("{}", "{\"b\":2}"));
    /* property names needing escapes, non-ASCII */
    check("{\"type\":\"object\",\"properties\":{\"a\\\"b\":{\"const\":1},\"é\":{\"const\":2}},\"required\":["
          "\"a\\\"b\",\"é\"],"
          "\"additionalProperties\":false}",
          L("{\"a\\\"b\":1,\"é\":2}"), L("{\"a\\\"b\":1}"));
    /* a property whose schema is false: absent */
    check("{\"type\":\"object\",\"properties\":{\"a\":false,\"b\":{\"type\":\"null\"}}}",
          L("{}", "{\"b\":null}"), L("{\"a\":1}", "{\"b\":null,\"a\":1}", "{\"c\":1}"));
}

/* ---- arrays ------------------------------------------------------------------------- */

static void test_arrays(void **st) {
    (void)st;
    check("{\"type\":\"array\",\"items\":{\"type\":\"integer\"}}", L("[]", "[1]", "[1,2, 3]"),
          L("[\"a\"]", "[1,]", "[,]"));
    check("{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":2,\"maxItems\":3}",
          L("[1,2]", "[1,2,3]"), L("[]", "[1]", "[1,2,3,4]"));
    check("{\"type\":\"array\",\"minItems\":1}", L("[1]", "[1,\"a\"]"), L("[]"));
    check("{\"type\":\"array\",\"maxItems\":0}", L("[]"), L("[1]"));
    check(
        "{\"type\":\"array\",\"prefixItems\":[{\"type\":\"string\"},{\"type\":\"integer\"}],\"items\":false}",
        L("[]", "[\"a\"]", "[\"a\",1]"), L("[1]", "[\"a\",\"b\"]", "[\"a\",1,2]"));
    check("{\"type\":\"array\",\"prefixItems\":[{\"type\":\"string\"},{\"type\":\"integer\"}],\"minItems\":2,"
          "\"items\":{\"type\":\"boolean\"}}",
          L("[\"a\",1]", "[\"a\",1,true]", "[\"a\",1,true,false]"), L("[\"a\"]", "[\"a\",1,2]"));
    check("{\"type\":\"array\",\"prefixItems\":[{\"type\":\"string\"}],\"minItems\":3,\"maxItems\":4}",
          L("[\"a\",1,2]", "[\"a\",1,2,{}]"), L("[\"a\",1]", "[1,2,3]", "[\"a\",1,2,3,4]"));
    check("{\"type\":\"array\",\"prefixItems\":[{\"type\":\"string\"},{\"type\":\"string\"},{\"type\":"
          "\"string\"}],"
          "\"maxItems\":2}",
          L("[]", "[\"a\"]", "[\"a\",\"b\"]"), L("[\"a\",\"b\",\"c\"]"));
    /* draft-07 tuple form */
    check("{\"type\":\"array\",\"items\":[{\"type\":\"integer\"}],\"additionalItems\":false}", L("[]", "[1]"),
          L("[1,2]"));
    check(
        "{\"type\":\"array\",\"items\":{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":1}}",
        L("[[1],[2,3]]", "[]"), L("[[]]", "[[1],[]]"));
}

/* ---- enum, const, combinators ---------------------------------------------------------- */

static void test_enum_const(void **st) {
    (void)st;
    check("{\"enum\":[\"red\",\"green\",1,null,{\"a\":[1,2]},0.1,true]}",
          L("\"red\"", "\"green\"", "1", "null", "{\"a\":[1,2]}", "0.1", "true"),
          L("\"blue\"", "2", "\"1\"", "{\"a\": [1,2]}", "false", "0.10000000000000001"));
    check("{\"type\":\"string\",\"enum\":[\"a\",1,\"b\"]}", L("\"a\"", "\"b\""), L("1"));
    check("{\"const\":\"x\\\"y\"}", L("\"x\\\"y\""), L("\"xy\""));
    check("{\"const\":{\"k\":[true,null]}}", L("{\"k\":[true,null]}"), L("{}"));
    check("{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"string\",\"maxLength\":2}]}", L("1", "\"ab\""),
          L("\"abc\"", "null"));
    check("{\"oneOf\":[{\"const\":\"a\"},{\"const\":\"b\"}]}", L("\"a\"", "\"b\""), L("\"c\""));
    /* siblings of anyOf apply to every alternative */
    check("{\"type\":\"object\",\"properties\":{\"k\":{\"type\":\"string\"}},\"required\":[\"k\"],"
          "\"additionalProperties\":false,\"anyOf\":[{\"properties\":{\"k\":{\"const\":\"a\"}}},"
          "{\"properties\":{\"k\":{\"const\":\"b\"}}}]}",
          L("{\"k\":\"a\"}", "{\"k\":\"b\"}"), L("{\"k\":\"c\"}", "{}"));
    /* allOf merges */
    check("{\"allOf\":[{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},\"required\":["
          "\"a\"]},"
          "{\"properties\":{\"b\":{\"type\":\"string\"}},\"required\":[\"b\"]}]}",
          L("{\"a\":1,\"b\":\"x\"}"),
          L("{\"a\":1}", "{\"b\":\"x\"}", "{\"a\":\"1\",\"b\":\"x\"}", "{\"a\":1,\"b\":\"x\",\"c\":null}"));
    check("{\"allOf\":[{\"type\":\"integer\",\"minimum\":0},{\"maximum\":10},{\"minimum\":3}]}", L("3", "10"),
          L("2", "11", "-1"));
    check("{\"allOf\":[{\"type\":[\"string\",\"integer\"]},{\"type\":[\"number\",\"null\"]}]}", L("1"),
          L("1.5", "\"a\"", "null"));
    check("{\"allOf\":[{\"const\":1},{\"const\":1}]}", L("1"), L("2"));
}

/* ---- $ref ---------------------------------------------------------------------------- */

static void test_refs(void **st) {
    (void)st;
    const char *tree =
        "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"value\":{\"type\":\"integer\"},"
        "\"children\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"}}},"
        "\"required\":[\"value\"],\"additionalProperties\":false}},\"$ref\":\"#/$defs/node\"}";
    check(tree,
          L("{\"value\":1}", "{\"value\":1,\"children\":[]}",
            "{\"value\":1,\"children\":[{\"value\":2,\"children\":[{\"value\":3}]}]}"),
          L("{\"children\":[]}", "{\"value\":1,\"children\":[{}]}",
            "{\"value\":1,\"children\":[{\"value\":\"x\"}]}"));
    /* recursion through the root, ~0 ~1 and %25 escapes, definitions */
    check("{\"type\":[\"array\",\"integer\"],\"items\":{\"$ref\":\"#\"}}", L("1", "[]", "[1,[2,[]]]"),
          L("[\"a\"]"));
    check("{\"definitions\":{\"a/"
          "b\":{\"type\":\"integer\"},\"c~d\":{\"type\":\"string\"},\"e%f\":{\"type\":\"null\"}},"
          "\"type\":\"array\",\"prefixItems\":[{\"$ref\":\"#/definitions/a~1b\"},{\"$ref\":\"#/definitions/"
          "c~0d\"},"
          "{\"$ref\":\"#/definitions/e%25f\"}],\"items\":false,\"minItems\":3}",
          L("[1,\"x\",null]"), L("[1,2,null]"));
    /* linked list: recursion in an optional property */
    check("{\"$defs\":{\"L\":{\"type\":\"object\",\"properties\":{\"next\":{\"anyOf\":[{\"$ref\":\"#/$defs/"
          "L\"},{\"type\":\"null\"}]}},"
          "\"additionalProperties\":false}},\"$ref\":\"#/$defs/L\"}",
          L("{}", "{\"next\":null}", "{\"next\":{\"next\":{}}}"), L("{\"next\":1}"));
    /* $ref with sibling keywords: both apply */
    check("{\"$defs\":{\"i\":{\"type\":\"integer\"}},\"$ref\":\"#/$defs/"
          "i\",\"minimum\":2,\"description\":\"x\"}",
          L("2", "9"), L("1", "\"a\""));
}

/* ---- strings: lengths, patterns, formats ------------------------------------------------- */

static void test_strings(void **st) {
    (void)st;
    check("{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}",
          L("\"ab\"", "\"abc\"", "\"é😀\"", "\"\\n\\u0041\"", "\"\\ud83d\\ude00x\""),
          L("\"a\"", "\"abcd\"", "\"\"", "\"😀\""));
    check("{\"type\":\"string\",\"minLength\":1}", L("\"a\""), L("\"\""));
    check("{\"type\":\"string\",\"pattern\":\"^[a-z]+-\\\\d{2,3}$\"}", L("\"ab-12\"", "\"x-123\""),
          L("\"ab-1\"", "\"AB-12\"", "\"ab-1234\"", "\"xab-12 \""));
    check("{\"type\":\"string\",\"pattern\":\"abc\"}", L("\"abc\"", "\"xxabcyy\"", "\"\\\"abc\\\\\""),
          L("\"ab\"", "\"acb\""));
    check("{\"type\":\"string\",\"pattern\":\"^(foo|ba[rz])?\\\\.(?:x|y)*$\"}",
          L("\".\"", "\"foo.xy\"", "\"baz.\""), L("\"bar\"", "\"qux.x\""));
    check("{\"type\":\"string\",\"pattern\":\"^\\\\w\\\\s\\\\W.$\"}", L("\"a !x\"", "\"_\\t-\\\"\""),
          L("\"a !\\n\"", "\"aa!x\""));
    check("{\"type\":\"string\",\"pattern\":\"^[^a-c\\\"]{2}$\"}", L("\"de\"", "\"\\\\z\"", "\"\\nz\""),
          L("\"ad\"", "\"\\\"d\"", "\"d\""));
    check("{\"type\":\"string\",\"pattern\":\"^a|b$\"}", L("\"a\"", "\"axx\"", "\"xxb\""),
          L("\"xa\"", "\"bx\""));
    check("{\"type\":\"string\",\"pattern\":\"^\\\\u00e9\\\\x41[\\\\u{1F600}-\\\\u{1F64F}]$\"}", L("\"éA😀\""),
          L("\"éA\""));
    check("{\"type\":\"string\",\"format\":\"date\"}",
          L("\"2024-02-29\"", "\"2000-02-29\"", "\"2023-02-28\"", "\"2024-12-31\"", "\"2024-04-30\"",
            "\"0000-02-29\"", "\"1600-02-29\""),
          L("\"2023-02-29\"", "\"1900-02-29\"", "\"2024-04-31\"", "\"2024-13-01\"", "\"2024-00-10\"",
            "\"2024-01-00\"", "\"2024-01-32\"", "\"24-01-01\"", "\"2024-1-01\"", "\"2100-02-29\""));
    check("{\"type\":\"string\",\"format\":\"time\"}",
          L("\"23:59:59Z\"", "\"00:00:00.123+05:30\"", "\"12:30:00-08:00\""),
          L("\"24:00:00Z\"", "\"12:60:00Z\"", "\"12:00:60Z\"", "\"12:00:00\"", "\"12:00Z\"",
            "\"12:00:00+24:00\""));
    check("{\"type\":\"string\",\"format\":\"date-time\"}",
          L("\"2024-02-29T12:00:00Z\"", "\"1999-12-31T23:59:59.5+01:00\""),
          L("\"2023-02-29T12:00:00Z\"", "\"2024-01-01 12:00:00Z\"", "\"2024-01-01T12:00:00\""));
    check("{\"type\":\"string\",\"format\":\"uuid\"}",
          L("\"123e4567-e89b-12d3-a456-426614174000\"", "\"ABCDEF01-2345-6789-abcd-ef0123456789\""),
          L("\"123e4567e89b12d3a456426614174000\"", "\"123e4567-e89b-12d3-a456-42661417400\"",
            "\"g23e4567-e89b-12d3-a456-426614174000\""));
    check("{\"type\":\"string\",\"format\":\"email\"}", L("\"a.b+c@example.com\"", "\"x_1@sub.domain.org\""),
          L("\".a@b.com\"", "\"a.@b.com\"", "\"a..b@c.com\"", "\"a@b\"", "\"a@-b.com\"", "\"a@b.c0m\"",
            "\"@b.com\""));
}

/* 'pattern' with 'minLength'/'maxLength': the pattern's quantifiers are
 * bounded so that every match has an allowed length. */
static void test_pattern_lengths(void **st) {
    (void)st;
    /* pydantic constr(min_length=3, max_length=16, pattern=...) */
    check("{\"type\":\"string\",\"minLength\":3,\"maxLength\":16,\"pattern\":\"^[a-z][a-z0-9_]*$\"}",
          L("\"abc\"", "\"a_1\"", "\"abcdefghijklmnop\"", "\"x2345678901234_6\""),
          L("\"ab\"", "\"a\"", "\"abcdefghijklmnopq\"", "\"1abc\"", "\"Abc\""));
    /* pydantic pin: constr(min_length=4, max_length=4, pattern="^[0-9]+$") */
    check("{\"type\":\"string\",\"minLength\":4,\"maxLength\":4,\"pattern\":\"^[0-9]+$\"}",
          L("\"0123\"", "\"9999\""), L("\"123\"", "\"12345\"", "\"12a4\""));
    /* the pattern's own lengths within the bounds: unchanged */
    check("{\"type\":\"string\",\"minLength\":1,\"maxLength\":10,\"pattern\":\"^[A-Z]{3}-[0-9]{4}$\"}",
          L("\"ABC-1234\""), L("\"AB-1234\"", "\"ABC-12345\""));
    /* two unbounded pieces share the slack (4 each: [a-z]{1,5} then at most one "-" [a-z]{1,3});
     * what is left is a subset of the pattern */
    check("{\"type\":\"string\",\"maxLength\":9,\"pattern\":\"^[a-z]+(-[a-z]+)*$\"}",
          L("\"a\"", "\"abcde-fgh\"", "\"a-bcd\"", "\"abcd\""),
          L("\"abcdefghij\"", "\"abcd-efghi\"", "\"-a\"", "\"a-\""));
    /* unanchored ends are bounded too (the first one takes the 3 to 4 characters) */
    check("{\"type\":\"string\",\"minLength\":5,\"maxLength\":6,\"pattern\":\"ab\"}",
          L("\"xxxab\"", "\"x\\\"xxab\""), L("\"xxab\"", "\"xxxxxab\"", "\"xxxxx\""));
    /* alternatives too short or too long are dropped */
    check("{\"type\":\"string\",\"minLength\":3,\"maxLength\":4,\"pattern\":\"^(a|bbb|cccc|ddddd)$\"}",
          L("\"bbb\"", "\"cccc\""), L("\"a\"", "\"ddddd\""));
    /* minimums raised inside groups and repeats */
    check("{\"type\":\"string\",\"minLength\":6,\"pattern\":\"^(ab)+c?$\"}",
          L("\"ababab\"", "\"abababc\"", "\"abababab\""), L("\"ababc\"", "\"abab\""));
    check("{\"type\":\"string\",\"minLength\":6,\"pattern\":\"^([a-z]{1,3}){2}$\"}", L("\"abcdef\""),
          L("\"abcde\"", "\"abcdefg\""));
    /* every repetition gets the same raised minimum: 5 from ([a-z]{1,3}){2} would need 3 + 2 */
    expect_error(
        "{\"type\":\"string\",\"minLength\":5,\"maxLength\":5,\"pattern\":\"^([a-z]{1,3}){2}$\"}", KN_EINVAL,
        "(matches of 2 to 6 characters) cannot be limited to 'minLength'/'maxLength' 5..5 at the root");
    /* zod .min(1).max(30).regex(...) */
    check("{\"type\":\"string\",\"minLength\":1,\"maxLength\":30,\"pattern\":\"^[a-z0-9]+(-[a-z0-9]+)*$\"}",
          L("\"a\"", "\"kitchen-tools\"", "\"abcdefghijklmnop-qrstuvwxyz012\""),
          L("\"\"", "\"abcdefghijklmnopqrstuvwxyz01234\"", "\"a--b\""));
    /* a maxLength over the repetition limit: bounded to the limit (fewer strings, all valid) */
    check("{\"type\":\"string\",\"maxLength\":5000,\"pattern\":\"^a+$\"}", L("\"a\"", "\"aaaa\""),
          L("\"\"", "\"ab\""));
    check("{\"type\":\"string\",\"maxLength\":5000,\"pattern\":\"^[0-9]{5}$\"}", L("\"12345\""),
          L("\"1234\""));
    /* cannot be done soundly: errors naming the pointer */
    expect_error("{\"properties\":{\"p\":{\"type\":\"string\",\"maxLength\":3,\"pattern\":\"^abcd$\"}}}",
                 KN_EINVAL, "cannot be limited to 'minLength'/'maxLength' 0..3 at /properties/p");
    expect_error("{\"type\":\"string\",\"minLength\":5,\"pattern\":\"^[a-z]{1,4}$\"}", KN_EINVAL,
                 "cannot be limited");
    expect_error("{\"type\":\"string\",\"minLength\":3,\"maxLength\":3,\"pattern\":\"^(ab)+$\"}", KN_EINVAL,
                 "cannot be limited");
    expect_error("{\"type\":\"string\",\"format\":\"date\",\"pattern\":\"^2\"}", KN_EINVAL,
                 "combining 'format' and 'pattern'");
}

/* formats: lengths, and the formats ajv-formats defines beyond dates */
static void test_formats(void **st) {
    (void)st;
    check("{\"type\":\"string\",\"format\":\"date\",\"minLength\":10,\"maxLength\":10}", L("\"2024-01-31\""),
          L("\"2024-1-31\""));
    check("{\"type\":\"string\",\"format\":\"uuid\",\"maxLength\":36}",
          L("\"123e4567-e89b-12d3-a456-426614174000\""), NULL);
    expect_error(
        "{\"properties\":{\"d\":{\"type\":\"string\",\"format\":\"date-time\",\"maxLength\":25}}}", KN_EINVAL,
        "'format' 'date-time' (strings of 20 to 35 characters here) with 'minLength'/'maxLength' 0..25 "
        "is not supported at /properties/d");
    expect_error("{\"type\":\"string\",\"format\":\"email\",\"maxLength\":100}", KN_EINVAL,
                 "'format' 'email'");
    check("{\"type\":\"string\",\"format\":\"email\",\"maxLength\":320}", L("\"a@b.cd\""), NULL);
    check("{\"type\":\"string\",\"format\":\"ipv4\"}",
          L("\"0.0.0.0\"", "\"192.168.1.255\"", "\"255.255.255.255\"", "\"10.0.99.200\""),
          L("\"256.1.1.1\"", "\"01.1.1.1\"", "\"1.1.1\"", "\"1.1.1.1.1\"", "\"1.1.1.260\"", "\"a.b.c.d\""));
    check("{\"type\":\"string\",\"format\":\"ipv6\"}",
          L("\"2001:db8:0:0:0:0:2:1\"", "\"::\"", "\"::1\"", "\"fe80::1:2\"", "\"1:2:3:4:5:6:7::\"",
            "\"1::2:3:4:5:6:7\"", "\"ABCD:ef01::\"", "\"::1:2:3:4:5:6:7\""),
          L("\"1:2:3:4:5:6:7\"", "\"1::2::3\"", "\"12345::\"", "\"1:2:3:4:5:6:7:8:9\"", "\":1\"", "\"g::\"",
            "\"1:2:3:4:5:6:7::8\""));
    check("{\"type\":\"string\",\"format\":\"hostname\"}",
          L("\"a\"", "\"example.com\"", "\"my-host.example.org\"", "\"A1.b2\""),
          L("\"-a.com\"", "\"a-.com\"", "\"a..b\"", "\"a.b.c.d\"", "\".a\"", "\"a_b\""));
    check("{\"type\":\"string\",\"format\":\"uri\"}",
          L("\"http://a\"", "\"https://example.com/x/y.html\"", "\"https://a.b/\""),
          L("\"example.com\"", "\"ftp://a\"", "\"http://\"", "\"http://a b\"", "\"http://a?x\""));
    /* RFC limits on email: a 64-character local part, 63-character labels */
    char loc[80], mail[200];
    memset(loc, 'a', 64);
    loc[64] = 0;
    snprintf(mail, sizeof mail, "\"%.32s.%.15s.%.15s@x.com\"", loc, loc, loc);
    check("{\"type\":\"string\",\"format\":\"email\"}", L(mail), NULL);
    snprintf(mail, sizeof mail, "\"%.64sa@x.com\"", loc);
    check("{\"type\":\"string\",\"format\":\"email\"}", NULL, L(mail));
    char lab[80];
    memset(lab, 'b', 64);
    lab[64] = 0;
    snprintf(mail, sizeof mail, "\"a@%.63s.com\"", lab);
    check("{\"type\":\"string\",\"format\":\"email\"}", L(mail), NULL);
    snprintf(mail, sizeof mail, "\"a@%.64s.com\"", lab);
    check("{\"type\":\"string\",\"format\":\"email\"}", NULL, L(mail));
    expect_error("{\"type\":\"string\",\"format\":\"iri\"}", KN_EINVAL, "unsupported 'format' 'iri'");
}

/* minProperties / maxProperties */
static void test_property_counts(void **st) {
    (void)st;
    /* pydantic Dict[str, int] with max_length=4 (counts) */
    check("{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\",\"minimum\":0},"
          "\"maxProperties\":4}",
          L("{}", "{\"a\":1}", "{\"a\":1,\"b\":2,\"c\":3,\"d\":4}"),
          L("{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5}", "{\"a\":-1}"));
    check("{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\"},\"minProperties\":1,"
          "\"maxProperties\":2}",
          L("{\"a\":1}", "{\"a\":1,\"b\":2}"), L("{}", "{\"a\":1,\"b\":2,\"c\":3}"));
    /* listed properties count: the extras get what is left */
    check("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"}},"
          "\"required\":[\"a\"],\"additionalProperties\":{\"type\":\"string\"},\"maxProperties\":3}",
          L("{\"a\":1}", "{\"a\":1,\"b\":2,\"x\":\"y\"}", "{\"a\":1,\"x\":\"y\"}"),
          L("{\"a\":1,\"b\":2,\"x\":\"y\",\"z\":\"w\"}", "{\"a\":1,\"x\":\"y\",\"z\":\"w\"}"));
    /* more listed properties than allowed: optional ones past the budget are left out */
    check("{\"type\":\"object\",\"properties\":{\"a\":{},\"b\":{},\"c\":{}},\"required\":[\"c\"],"
          "\"additionalProperties\":false,\"maxProperties\":2}",
          L("{\"c\":1}", "{\"a\":1,\"c\":2}"), L("{\"a\":1,\"b\":2,\"c\":3}", "{\"b\":1,\"c\":2}"));
    /* minProperties: optional properties become required, in order */
    check("{\"type\":\"object\",\"properties\":{\"a\":{},\"b\":{},\"c\":{}},\"additionalProperties\":false,"
          "\"minProperties\":2}",
          L("{\"a\":1,\"b\":2}", "{\"a\":1,\"b\":2,\"c\":3}"), L("{}", "{\"a\":1}", "{\"c\":1}"));
    /* one required extra member when the listed ones are not enough */
    check("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},\"minProperties\":2}",
          L("{\"a\":1,\"b\":2}", "{\"a\":1,\"b\":2,\"c\":3}"), L("{\"a\":1}", "{\"b\":1}"));
    /* pydantic extra='forbid' with max_length on the model */
    check("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"},"
          "\"c\":{\"type\":\"integer\"},\"d\":{\"type\":\"integer\"}},\"required\":[\"a\"],"
          "\"additionalProperties\":false,\"maxProperties\":3}",
          L("{\"a\":1}", "{\"a\":1,\"b\":2,\"c\":3}"), L("{\"a\":1,\"b\":2,\"c\":3,\"d\":4}"));
    expect_error(
        "{\"properties\":{\"o\":{\"type\":\"object\",\"properties\":{\"a\":{},\"b\":{}},\"required\":[\"a\","
        "\"b\"],\"maxProperties\":1}}}",
        KN_EINVAL,
        "'maxProperties' 1 is less than the 2 required properties (no object is allowed) at /properties/o");
    expect_error("{\"type\":\"object\",\"minProperties\":3,\"maxProperties\":2}", KN_EINVAL,
                 "'minProperties' 3 > 'maxProperties' 2");
    expect_error(
        "{\"type\":\"object\",\"properties\":{\"a\":{}},\"additionalProperties\":false,\"minProperties\":2}",
        KN_EINVAL, "'minProperties' 2 needs more properties");
    expect_error("{\"type\":\"object\",\"minProperties\":2}", KN_EINVAL, "distinct names");
    expect_error("{\"type\":\"object\",\"maxProperties\":-1}", KN_EINVAL,
                 "'maxProperties' must be a non-negative");
}

/* ---- numbers and integer ranges ------------------------------------------------------------ */

/* Checks every integer in [lo - 30, hi + 30] against the bounds, and a few far away. */
static void check_int_range(const char *schema, long long lo, long long hi) {
    char *text = convert(schema);
    gram *g = compile_text(text, NULL);
    long long probes[] = {lo - 1000, hi + 1000, lo * 10, hi * 10, -hi, -lo, 0,   1,
                          -1,        9,         10,      99,      100, 101, 999, 1000};
    for (long long v = lo - 30; v <= hi + 30; v++) {
        char buf[32];
        snprintf(buf, sizeof buf, "%lld", v);
        if (full_match(g, buf) != (v >= lo && v <= hi)) fail_msg("%s: %s wrong\n%s", schema, buf, text);
    }
    for (size_t i = 0; i < sizeof probes / sizeof *probes; i++) {
        char buf[32];
        snprintf(buf, sizeof buf, "%lld", probes[i]);
        if (full_match(g, buf) != (probes[i] >= lo && probes[i] <= hi))
            fail_msg("%s: %s wrong\n%s", schema, buf, text);
    }
    gram_destroy(g);
    free(text);
}

static void test_numbers(void **st) {
    (void)st;
    check_int_range("{\"type\":\"integer\",\"minimum\":0,\"maximum\":100}", 0, 100);
    check_int_range("{\"type\":\"integer\",\"minimum\":-57,\"maximum\":1234}", -57, 1234);
    check_int_range("{\"type\":\"integer\",\"minimum\":-900,\"maximum\":-17}", -900, -17);
    check_int_range("{\"type\":\"integer\",\"exclusiveMinimum\":7,\"exclusiveMaximum\":250}", 8, 249);
    check_int_range("{\"type\":\"integer\",\"minimum\":1.5,\"maximum\":99.9}", 2, 99);
    check_int_range("{\"type\":\"integer\",\"minimum\":5,\"maximum\":5}", 5, 5);
    check_int_range("{\"type\":\"integer\",\"minimum\":19,\"maximum\":20301}", 19, 20301);
    check_int_range("{\"type\":\"integer\",\"minimum\":10,\"maximum\":19,\"exclusiveMaximum\":true}", 10, 18);
    /* one-sided */
    check("{\"type\":\"integer\",\"minimum\":1}", L("1", "2", "10", "999999"), L("0", "-1", "-10"));
    check("{\"type\":\"integer\",\"minimum\":-3}", L("-3", "-2", "0", "123456"), L("-4", "-10", "-100"));
    check("{\"type\":\"integer\",\"maximum\":-3}", L("-3", "-4", "-1000"), L("-2", "0", "5"));
    check("{\"type\":\"integer\",\"maximum\":250}", L("250", "0", "-99999", "99"), L("251", "1000", "300"));
    check("{\"type\":\"integer\",\"minimum\":123456789012345678}",
          L("123456789012345678", "999999999999999999"), L("123456789012345677", "12345678901234567"));
    /* numbers with integer bounds */
    check("{\"type\":\"number\",\"minimum\":0,\"maximum\":1}", L("0", "1", "0.5", "1.0", "1.000", "0.999"),
          L("1.01", "-0.1", "2", "1.5", "-1", "1e0"));
    check("{\"type\":\"number\",\"exclusiveMinimum\":0}", L("0.001", "1", "123.5"),
          L("0", "0.0", "-0.5", "-1"));
    check("{\"type\":\"number\",\"minimum\":-2,\"exclusiveMaximum\":3}",
          L("-2", "-1.5", "-2.0", "0", "2.999"), L("-2.1", "3", "3.0", "-3"));
    check("{\"type\":\"number\",\"exclusiveMaximum\":0}", L("-0.5", "-1", "-1000.25"), L("0", "0.5", "-0"));
    check("{\"type\":\"number\",\"maximum\":-1}", L("-1", "-1.5", "-20"), L("-0.5", "0", "1"));
    check("{\"type\":\"number\",\"minimum\":2,\"maximum\":2}", L("2", "2.00"), L("2.01", "1.99"));
}

/* ---- schemas as generators write them -------------------------------------------------------- */

static void test_generators(void **st) {
    (void)st;
    /* pydantic v2 model_json_schema(): $defs, titles, Optional as anyOf with null, enum via $ref, defaults */
    const char *pyd =
        "{\"$defs\":{\"Color\":{\"enum\":[\"red\",\"green\"],\"title\":\"Color\",\"type\":\"string\"},"
        "\"Item\":{\"properties\":{\"name\":{\"title\":\"Name\",\"type\":\"string\"},\"qty\":{\"default\":1,"
        "\"title\":\"Qty\","
        "\"type\":\"integer\",\"minimum\":0}},\"required\":[\"name\"],\"title\":\"Item\",\"type\":\"object\"}"
        "},"
        "\"properties\":{\"id\":{\"format\":\"uuid\",\"title\":\"Id\",\"type\":\"string\"},"
        "\"color\":{\"$ref\":\"#/$defs/Color\"},"
        "\"items\":{\"items\":{\"$ref\":\"#/$defs/Item\"},\"title\":\"Items\",\"type\":\"array\"},"
        "\"note\":{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"null\"}],\"default\":null,\"title\":\"Note\"}"
        ","
        "\"when\":{\"format\":\"date-time\",\"title\":\"When\",\"type\":\"string\"}},"
        "\"required\":[\"id\",\"color\",\"items\",\"when\"],\"title\":\"Order\",\"type\":\"object\"}";
    check(
        pyd,
        L("{\"id\":\"123e4567-e89b-12d3-a456-426614174000\",\"color\":\"red\",\"items\":[{\"name\":\"a\","
          "\"qty\":2}],"
          "\"note\":null,\"when\":\"2024-01-02T03:04:05Z\"}",
          "{\"id\": \"123e4567-e89b-12d3-a456-426614174000\", \"color\": \"green\", \"items\": [], \"when\": "
          "\"2024-01-02T03:04:05Z\"}"),
        L("{\"id\": \"123e4567-e89b-12d3-a456-426614174000\", \"color\": \"green\", \"items\": [], \"when\": "
          "\"2024-01-02T03:04:05Z\", \"extra\": 1}",
          "{\"id\":\"x\",\"color\":\"red\",\"items\":[],\"when\":\"2024-01-02T03:04:05Z\"}",
          "{\"id\":\"123e4567-e89b-12d3-a456-426614174000\",\"color\":\"blue\",\"items\":[],\"when\":\"2024-"
          "01-02T03:04:05Z\"}",
          "{\"id\":\"123e4567-e89b-12d3-a456-426614174000\",\"color\":\"red\",\"items\":[{\"qty\":2}],"
          "\"when\":\"2024-01-02T03:04:05Z\"}"));
    /* zod-to-json-schema in openai mode (zodResponseFormat): definitions, additionalProperties false,
     * nullable as anyOf with null, $schema */
    const char *zod =
        "{\"$schema\":\"http://json-schema.org/draft-07/schema#\",\"type\":\"object\",\"properties\":{"
        "\"name\":{\"type\":\"string\"},\"age\":{\"type\":\"integer\",\"exclusiveMinimum\":0},"
        "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"enum\":[\"a\",\"b\"]}},"
        "\"address\":{\"anyOf\":[{\"$ref\":\"#/definitions/Address\"},{\"type\":\"null\"}]},"
        "\"kind\":{\"type\":\"string\",\"const\":\"person\"}},"
        "\"required\":[\"name\",\"age\",\"tags\",\"address\",\"kind\"],\"additionalProperties\":false,"
        "\"definitions\":{\"Address\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"
        "\"required\":[\"city\"],\"additionalProperties\":false}}}";
    check(zod,
          L("{\"name\":\"A\",\"age\":3,\"tags\":[\"a\"],\"address\":null,\"kind\":\"person\"}",
            "{\"name\":\"A\",\"age\":3,\"tags\":[],\"address\":{\"city\":\"P\"},\"kind\":\"person\"}"),
          L("{\"name\":\"A\",\"age\":0,\"tags\":[],\"address\":null,\"kind\":\"person\"}",
            "{\"name\":\"A\",\"age\":3,\"tags\":[\"c\"],\"address\":null,\"kind\":\"person\"}",
            "{\"name\":\"A\",\"age\":3,\"tags\":[],\"address\":{},\"kind\":\"person\"}",
            "{\"name\":\"A\",\"age\":3,\"tags\":[],\"address\":null}"));
}

/* ---- errors ------------------------------------------------------------------------------- */

static void test_errors(void **st) {
    (void)st;
    expect_error("{\"properties\":{\"a\":{\"not\":{}}}}", KN_EINVAL,
                 "unsupported JSON Schema keyword 'not' at /properties/a");
    expect_error("{\"type\":\"array\",\"items\":{\"type\":\"array\",\"minItems\":5,\"maxItems\":2}}",
                 KN_EINVAL, "'minItems' 5 > 'maxItems' 2 at /items");
    expect_error("{\"type\":\"string\",\"minLength\":3,\"maxLength\":1}", KN_EINVAL,
                 "'minLength' 3 > 'maxLength' 1 at the root");
    expect_error("{\"type\":\"integer\",\"minimum\":3,\"maximum\":1}", KN_EINVAL,
                 "'minimum' 3 > 'maximum' 1");
    expect_error("{\"enum\":[]}", KN_EINVAL, "'enum' is empty");
    expect_error("false", KN_EINVAL, "accepts no value");
    expect_error("{\"type\":\"object\",\"required\":[\"x\"],\"additionalProperties\":false}", KN_EINVAL,
                 "required property 'x' is not in 'properties'");
    expect_error("{\"type\":\"string\",\"pattern\":\"^(?=a)\"}", KN_EINVAL, "lookahead");
    expect_error("{\"type\":\"string\",\"pattern\":\"(a)\\\\1\"}", KN_EINVAL, "backreferences");
    expect_error("{\"type\":\"string\",\"pattern\":\"a^b\"}", KN_EINVAL, "anchors");
    expect_error("{\"type\":\"string\",\"pattern\":\"(a*)*\"}", KN_EINVAL, "can match \"\"");
    expect_error("{\"type\":\"number\",\"minimum\":0.5}", KN_EINVAL, "not an integer");
    expect_error("{\"type\":\"integer\",\"multipleOf\":2}", KN_EINVAL, "'multipleOf'");
    expect_error("{\"type\":\"string\",\"maxLength\":5000}", KN_ERANGE, "over the limit of 1000");
    expect_error("{\"type\":\"array\",\"minItems\":2000}", KN_ERANGE, "over the limit of 1000");
    expect_error("{\"$ref\":\"#/$defs/nope\"}", KN_EINVAL, "points to nothing");
    expect_error("{\"$ref\":\"http://x/y.json\"}", KN_EINVAL, "only '#...'");
    expect_error("{\"$defs\":{\"a\":{\"$ref\":\"#/$defs/a\"}},\"$ref\":\"#/$defs/a\"}", KN_EINVAL,
                 "recurses into itself");
    expect_error("{\"$defs\":{\"a\":{\"anyOf\":[{\"$ref\":\"#/$defs/"
                 "b\"}]},\"b\":{\"anyOf\":[{\"type\":\"null\"},{\"$ref\":\"#/$defs/a\"}]}},"
                 "\"$ref\":\"#/$defs/a\"}",
                 KN_EINVAL, "recurses into itself");
    /* no finite instance: a required property that is the object itself */
    expect_error("{\"type\":\"object\",\"properties\":{\"a\":{\"$ref\":\"#\"}},\"required\":[\"a\"]}",
                 KN_EINVAL, "no finite instance");
    expect_error("{\"type\":\"strin\"}", KN_EINVAL, "unknown 'type' 'strin'");
    expect_error("{\"allOf\":[{\"pattern\":\"a\"},{\"pattern\":\"b\"}]}", KN_EINVAL, "different 'pattern'");
    expect_error("{\"allOf\":[{\"properties\":{\"a\":{}},\"additionalProperties\":false},{\"properties\":{"
                 "\"b\":{}}}]}",
                 KN_EINVAL, "property 'b'");
    expect_error("{\"type\":\"array\",\"uniqueItems\":true}", KN_EINVAL, "uniqueItems");
    /* nesting bound */
    char deep[4096] = "";
    for (int i = 0; i < 80; i++)
        strcat(deep, "{\"type\":\"array\",\"items\":");
    strcat(deep, "{}");
    for (int i = 0; i < 80; i++)
        strcat(deep, "}");
    expect_error(deep, KN_ERANGE, "nested deeper than");
    /* annotations are fine */
    check("{\"$schema\":\"x\",\"$id\":\"y\",\"$comment\":\"c\",\"title\":\"t\",\"description\":\"d\","
          "\"default\":1,"
          "\"examples\":[1],\"deprecated\":false,\"readOnly\":true,\"writeOnly\":false,\"type\":\"integer\"}",
          L("1"), L("\"a\""));
}

/* ---- several schemas in one grammar ------------------------------------------------------------- */

static void test_prefix(void **st) {
    (void)st;
    kn_buf b = {0};
    kn_err e = {0};
    json_t *a =
        parse("{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"integer\"}},\"required\":[\"x\"]}");
    json_t *c = parse("{\"type\":\"array\",\"items\":{\"type\":\"string\"}}");
    assert_int_equal(gram_schema_rules(a, "a-", &b, &e), KN_OK);
    assert_int_equal(gram_schema_rules(c, "c-", &b, &e), KN_OK);
    assert_int_equal(gram_schema_rules(c, "bad prefix", &b, &e), KN_EINVAL);
    const char *top = "root ::= \"A\" a-root | \"C\" c-root\n";
    assert_true(kn_buf_add(&b, top, strlen(top), 0));
    gram *g = compile_text(b.p, NULL);
    assert_true(full_match(g, "A{\"x\":1}"));
    assert_true(full_match(g, "C[\"s\"]"));
    assert_false(full_match(g, "A[\"s\"]"));
    assert_false(full_match(g, "C{\"x\":1}"));
    gram_destroy(g);
    /* on error, the buffer is unchanged */
    size_t n = b.n;
    json_t *bad = parse("{\"not\":{}}");
    assert_int_equal(gram_schema_rules(bad, "z-", &b, &e), KN_EINVAL);
    assert_int_equal(b.n, n);
    json_decref(bad);
    json_decref(a);
    json_decref(c);
    kn_buf_free(&b);
}

/* ---- GBNF: rules that can never finish --------------------------------------------------------- */

static void expect_gbnf_error(const char *text, const char *msg_part) {
    gram *g = NULL;
    kn_err e = {0};
    if (gram_compile(text, strlen(text), NULL, &g, &e) == KN_OK) fail_msg("should not compile:\n%s", text);
    if (!strstr(e.msg, msg_part)) fail_msg("message '%s' lacks '%s'", e.msg, msg_part);
}

static void test_productive(void **st) {
    (void)st;
    expect_gbnf_error("root ::= \"a\" root\n", "rule 'root' can never finish");
    expect_gbnf_error("root ::= x | \"b\" y\nx ::= \"a\" x\ny ::= x\n", "rule 'root' can never finish");
    expect_gbnf_error("root ::= \"a\" | \"b\" x\nx ::= \"c\" y\ny ::= \"d\" x\n", "can never finish");
    expect_gbnf_error("root ::= (\"a\" root)+\n", "rule 'root' can never finish");
    /* fine: recursion with a way out, and an unreachable trap */
    gram *g = compile_text("root ::= \"a\" root | \"b\"\n", NULL);
    assert_true(full_match(g, "aab"));
    gram_destroy(g);
    g = compile_text("root ::= \"x\"\ntrap ::= \"a\" trap\n", NULL);
    gram_destroy(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types),      cmocka_unit_test(test_objects),
        cmocka_unit_test(test_arrays),     cmocka_unit_test(test_enum_const),
        cmocka_unit_test(test_refs),       cmocka_unit_test(test_strings),
        cmocka_unit_test(test_numbers),    cmocka_unit_test(test_generators),
        cmocka_unit_test(test_errors),     cmocka_unit_test(test_prefix),
        cmocka_unit_test(test_productive), cmocka_unit_test(test_pattern_lengths),
        cmocka_unit_test(test_formats),    cmocka_unit_test(test_property_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
