/* test_key.c — the response-cache key is derived from the generation
 * parameters through one table (engine/params.c), and nothing escapes it:
 *  - every field of eng_gen_params and of its eng_sampler_params, read
 *    from the struct definitions in include/kiln/engine.h, has a row (a field
 *    added without one fails here), and every row names a real field;
 *  - each row changes the key exactly as its policy says: ALWAYS fields
 *    change it, SAMPLED ones only for sampled requests, PENALTIES ones only
 *    when a penalty is on, NEVER ones never;
 *  - the model file, the KV type, the kernel set, the draft model (sampled
 *    only) and the prompt tokens change it; the order of logit_bias
 *    entries does not. */
#include "testutil.h"
#include "kiln/engine.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the struct definitions, read from the headers ------------------------------ */

static char *read_src(const char *rel) {
    const char *root = getenv("KILN_SRC");
    assert_non_null(root);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    fclose(f);
    return s;
}

/* The member names of `typedef struct NAME { ... } NAME;` in src (comments
 * dropped), each prefixed; names[] gets malloc'd strings. */
static int struct_fields(const char *src, const char *name, const char *prefix, char **names, int cap) {
    char open[128];
    snprintf(open, sizeof open, "typedef struct %s {", name);
    const char *p = strstr(src, open);
    if (!p) fail_msg("struct %s not found", name);
    p += strlen(open);
    const char *end = strstr(p, "}");
    assert_non_null(end);
    char *body = malloc((size_t)(end - p) + 1);
    memcpy(body, p, (size_t)(end - p));
    body[end - p] = 0;
    /* drop comments */
    for (char *c = body; (c = strstr(c, "/*"));) {
        char *e = strstr(c + 2, "*/");
        assert_non_null(e);
        memset(c, ' ', (size_t)(e + 2 - c));
    }
    int n = 0;
    for (char *decl = strtok(body, ";"); decl; decl = strtok(NULL, ";")) {
        /* "type a, *b" -> a, b: the identifiers ending each comma part */
        char *part = decl;
        for (;;) {
            char *comma = strchr(part, ',');
            char *stop = comma ? comma : part + strlen(part);
            char *q = stop;
            while (q > part && !(isalnum((unsigned char)q[-1]) || q[-1] == '_')) q--;
            char *id_end = q;
            while (q > part && (isalnum((unsigned char)q[-1]) || q[-1] == '_')) q--;
            if (id_end > q) {
                assert_true(n < cap);
                names[n] = malloc(strlen(prefix) + (size_t)(id_end - q) + 1);
                sprintf(names[n], "%s%.*s", prefix, (int)(id_end - q), q);
                n++;
            }
            if (!comma) break;
            part = comma + 1;
        }
    }
    free(body);
    return n;
}

static void test_every_field_has_a_row(void **state) {
    (void)state;
    char *params = read_src("include/kiln/engine.h"), *sampler = read_src("include/kiln/engine.h");
    char *names[128];
    int n = struct_fields(params, "eng_gen_params", "", names, 128);
    int total = 0;
    char *all[128];
    for (int i = 0; i < n; i++) {
        if (!strcmp(names[i], "sp")) { /* the nested sampler parameters */
            total += struct_fields(sampler, "eng_sampler_params", "sp.", all + total, 128 - total);
            free(names[i]);
        } else {
            all[total++] = names[i];
        }
    }
    assert_true(total >= 15);
    size_t nrows;
    const eng_key_field *rows = eng_gen_key_fields(&nrows);
    for (int i = 0; i < total; i++) {
        bool found = false;
        for (size_t r = 0; r < nrows; r++) found |= !strcmp(rows[r].name, all[i]);
        if (!found) fail_msg("field %s of the generation parameters has no row in the cache key table", all[i]);
    }
    for (size_t r = 0; r < nrows; r++) {
        bool found = false;
        for (int i = 0; i < total; i++) found |= !strcmp(rows[r].name, all[i]);
        if (!found) fail_msg("the key table names %s, which is not a field", rows[r].name);
        if ((rows[r].use == ENG_KEY_NEVER || rows[r].type == ENG_KT_PART) && !rows[r].why)
            fail_msg("%s: a field left out of the key says why", rows[r].name);
    }
    for (int i = 0; i < total; i++) free(all[i]);
    free(params);
    free(sampler);
}

/* ---- each row's policy ----------------------------------------------------------------- */

static const int32_t IDS[] = {1, 15043, 29892, 3186};
static const eng_key_ctx KCTX = {.name = "tiny", .quant = "Q4_K_M", .sha256 = "ab12", .kv_type = "f16",
                                 .ops_level = 2, .ops_vnni = true, .draft = ""};

static rc_key key_of(const eng_gen_params *p) { return eng_gen_key(&KCTX, IDS, 4, p); }
static bool same(rc_key a, rc_key b) { return !memcmp(&a, &b, sizeof a); }

static eng_gen_params base(bool sampled, bool penalties) {
    static const char *stops[] = {"\n\n"};
    static const eng_logit_bias bias[] = {{7, 1.5f}};
    eng_gen_params p = {.sp = eng_sampler_defaults(), .n_predict = 16, .stops = stops, .n_stops = 1,
                        .n_logprobs = -1, .t_origin = 1.0, .spec = ENG_SPEC_NONE, .spec_max = 4,
                        .stall_timeout_s = 120};
    p.sp.temp = sampled ? 0.7f : 0.0f;
    p.sp.seed = 42;
    p.sp.bias = bias;
    p.sp.n_bias = 1;
    if (penalties) p.sp.presence_penalty = 0.5f;
    return p;
}

/* Changes the field of row f in p. */
static void perturb(eng_gen_params *p, const eng_key_field *f) {
    static const char *more_stops[] = {"\n\n", "END"};
    static const eng_logit_bias more_bias[] = {{7, 1.5f}, {9, -2.0f}};
    char *at = (char *)p + f->offset;
    switch (f->type) {
    case ENG_KT_I32: *(int32_t *)at += 1; break;
    case ENG_KT_U64: *(uint64_t *)at += 12345; break;
    case ENG_KT_F32: *(float *)at += 0.25f; break;
    case ENG_KT_F64: *(double *)at += 1.5; break;
    case ENG_KT_BOOL: *(bool *)at = !*(bool *)at; break;
    case ENG_KT_ENUM: *(int *)at += 1; break;
    case ENG_KT_STOPS: p->stops = more_stops, p->n_stops = 2; break;
    case ENG_KT_BIAS: p->sp.bias = more_bias, p->sp.n_bias = 2; break;
    case ENG_KT_PART: break;
    case ENG_KT_STR: *(const char **)at = *(const char **)at ? NULL : "root ::= \"a\""; break;
    }
}

static void test_policies(void **state) {
    (void)state;
    size_t nrows;
    const eng_key_field *rows = eng_gen_key_fields(&nrows);
    for (size_t r = 0; r < nrows; r++) {
        const eng_key_field *f = &rows[r];
        if (f->type == ENG_KT_PART) continue; /* keyed with its array's row */
        for (int sampled = 0; sampled < 2; sampled++)
            for (int pen = 0; pen < 2; pen++) {
                eng_gen_params a = base(sampled, pen), b = a;
                perturb(&b, f);
                bool want = f->use == ENG_KEY_ALWAYS || (f->use == ENG_KEY_SAMPLED && sampled) ||
                            (f->use == ENG_KEY_PENALTIES && (pen || f->type == ENG_KT_F32));
                /* sp.temp turns a greedy request into a sampled one: it always counts */
                bool changed = !same(key_of(&a), key_of(&b));
                if (changed != want)
                    fail_msg("%s (sampled %d, penalties %d): the key %s, its policy says it %s", f->name, sampled, pen,
                             changed ? "changed" : "did not change", want ? "must" : "must not");
            }
    }
}

static void test_context(void **state) {
    (void)state;
    eng_gen_params p = base(true, false);
    rc_key k0 = key_of(&p);
    eng_key_ctx k = KCTX;
    k.sha256 = "ab13";
    assert_false(same(eng_gen_key(&k, IDS, 4, &p), k0));
    k = KCTX, k.kv_type = "q8_0";
    assert_false(same(eng_gen_key(&k, IDS, 4, &p), k0));
    k = KCTX, k.ops_level = 1;
    assert_false(same(eng_gen_key(&k, IDS, 4, &p), k0));
    k = KCTX, k.draft = "draft.gguf";
    assert_false(same(eng_gen_key(&k, IDS, 4, &p), k0));
    eng_gen_params g = base(false, false); /* greedy: the draft model does not change the answer */
    assert_true(same(eng_gen_key(&k, IDS, 4, &g), eng_gen_key(&KCTX, IDS, 4, &g)));
    assert_false(same(eng_gen_key(&KCTX, IDS, 3, &p), k0));
    int32_t other[4] = {1, 15043, 29892, 3187};
    assert_false(same(eng_gen_key(&KCTX, other, 4, &p), k0));
    /* the order of logit_bias entries does not change the output */
    eng_logit_bias b1[] = {{7, 1.5f}, {9, -2.0f}}, b2[] = {{9, -2.0f}, {7, 1.5f}};
    eng_gen_params x = p, y = p;
    x.sp.bias = b1, x.sp.n_bias = 2;
    y.sp.bias = b2, y.sp.n_bias = 2;
    assert_true(same(key_of(&x), key_of(&y)));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_field_has_a_row),
        cmocka_unit_test(test_policies),
        cmocka_unit_test(test_context),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
