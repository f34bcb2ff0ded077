/* test_record.c — the session's cached values (src/engine/record.c):
 * a generation record round-trips chunk by chunk (text, events and top
 * logprobs exactly), every truncation and every single-byte change of the
 * header or chunk table is either refused by the parser or read within the
 * value's bounds (ASan checks the reads), and the embedding value
 * round-trips and refuses a wrong size or dimension. */
#include "testutil.h"
#include "engine/record.h"

#include <stdlib.h>
#include <string.h>

static void make_record(void **val, size_t *len, bool with_events) {
    eng_rec r = {.with_events = with_events};
    eng_tok_event ev[3];
    memset(ev, 0, sizeof ev);
    for (int i = 0; i < 3; i++) {
        ev[i].token = 100 + i;
        ev[i].logprob = -0.25f * (float)i;
        ev[i].n_top = i;
        for (int k = 0; k < i; k++) {
            ev[i].top_id[k] = 7 * k + i;
            ev[i].top_lp[k] = -1.5f - (float)k;
        }
    }
    eng_rec_chunk(&r, "Once", 4, ev, 1);
    eng_rec_chunk(&r, " upon a", 7, ev + 1, 2);
    eng_rec_chunk(&r, "", 0, NULL, 0); /* nothing: not a chunk */
    char big[300];
    memset(big, 'x', sizeof big);
    eng_rec_chunk(&r, big, sizeof big, NULL, 0); /* a length over one varint byte */
    eng_req_result res = {.finish = ENG_FINISH_LENGTH, .n_prompt = 5, .n_gen = 3};
    *val = eng_rec_finish(&r, &res, len);
    assert_non_null(*val);
    eng_rec_free(&r);
}

static void test_round_trip(void **state) {
    (void)state;
    for (int we = 0; we < 2; we++) {
        void *val;
        size_t len;
        make_record(&val, &len, we);
        eng_rec_view v;
        assert_true(eng_rec_parse(val, len, 64, &v));
        assert_int_equal(v.finish, ENG_FINISH_LENGTH);
        assert_int_equal(v.n_prompt, 5);
        assert_int_equal(v.n_gen, 3);
        assert_int_equal(v.n_chunks, 3);
        const char *t;
        size_t n, nev;
        eng_tok_event ev[64];
        assert_true(eng_rec_next(&v, &t, &n, ev, &nev));
        assert_int_equal(n, 4);
        assert_memory_equal(t, "Once", 4);
        assert_int_equal(nev, we ? 1 : 0);
        if (we) {
            assert_int_equal(ev[0].token, 100);
            assert_int_equal(ev[0].n_top, 0);
        }
        assert_true(eng_rec_next(&v, &t, &n, ev, &nev));
        assert_int_equal(n, 7);
        assert_memory_equal(t, " upon a", 7);
        assert_int_equal(nev, we ? 2 : 0);
        if (we) {
            assert_int_equal(ev[1].token, 102);
            assert_true(ev[1].logprob == -0.5f);
            assert_int_equal(ev[1].n_top, 2);
            assert_int_equal(ev[1].top_id[1], 9);
            assert_true(ev[1].top_lp[1] == -2.5f);
        }
        assert_true(eng_rec_next(&v, &t, &n, ev, &nev));
        assert_int_equal(n, 300);
        assert_false(eng_rec_next(&v, &t, &n, ev, &nev));
        /* more events in a chunk than the reader holds: refused */
        if (we) assert_false(eng_rec_parse(val, len, 1, &v));
        free(val);
    }
}

/* Reads every chunk of a parsed record (ASan checks that nothing reads out
 * of the value). */
static void drain(eng_rec_view *v) {
    const char *t;
    size_t n, nev;
    eng_tok_event ev[64];
    while (eng_rec_next(v, &t, &n, ev, &nev)) {
        volatile char sink = 0;
        for (size_t i = 0; i < n; i++) sink ^= t[i];
        (void)sink;
    }
}

static void test_damage(void **state) {
    (void)state;
    void *val;
    size_t len;
    make_record(&val, &len, true);
    /* every truncation: refused */
    for (size_t cut = 0; cut < len; cut++) {
        void *p = malloc(cut ? cut : 1);
        memcpy(p, val, cut);
        eng_rec_view v;
        assert_false(eng_rec_parse(p, cut, 64, &v));
        free(p);
    }
    /* every single byte changed, several ways: refused, or read in bounds */
    size_t accepted = 0;
    for (size_t i = 0; i < len; i++) {
        for (int d = 1; d < 256; d += 37) {
            uint8_t *p = malloc(len);
            memcpy(p, val, len);
            p[i] = (uint8_t)(p[i] + d);
            eng_rec_view v;
            if (eng_rec_parse(p, len, 64, &v)) {
                accepted++;
                drain(&v);
            }
            free(p);
        }
    }
    assert_true(accepted > 0); /* text bytes may change freely */
    /* a wrong magic or version is refused */
    uint8_t *p = malloc(len);
    memcpy(p, val, len);
    p[4] = 1; /* version 1 records are not read */
    eng_rec_view v;
    assert_false(eng_rec_parse(p, len, 64, &v));
    free(p);
    free(val);
}

static void test_embedding_value(void **state) {
    (void)state;
    float vec[5] = {0.5f, -1.0f, 0.25f, 3.0f, -0.125f};
    size_t len = 0;
    void *val = eng_emb_value(vec, 5, 17, &len);
    assert_non_null(val);
    const float *got;
    size_t nt = 0;
    assert_true(eng_emb_parse(val, len, 5, &got, &nt));
    assert_int_equal(nt, 17);
    assert_memory_equal(got, vec, sizeof vec);
    assert_false(eng_emb_parse(val, len, 6, &got, &nt));     /* another model's width */
    assert_false(eng_emb_parse(val, len - 1, 5, &got, &nt)); /* truncated */
    assert_false(eng_emb_parse(val, 3, 5, &got, &nt));
    ((char *)val)[0] = 'X';
    assert_false(eng_emb_parse(val, len, 5, &got, &nt));
    free(val);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_damage),
        cmocka_unit_test(test_embedding_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
