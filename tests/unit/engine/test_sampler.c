/* test_sampler.c — samplers: greedy, top-k, top-p, min-p, typical-p,
 * penalties, logit bias and seeded reproducibility. */
#include "testutil.h"
#include "engine/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { V = 1000 };

static void fill(float *l, uint64_t seed) {
    tu_rng r = {seed};
    for (int i = 0; i < V; i++) l[i] = 3.0f * tu_rng_normal(&r);
}

static eng_sampler *mk(eng_sampler_params p) {
    eng_sampler *s;
    kn_err e = {0};
    assert_int_equal(eng_sampler_create(&p, V, &s, &e), KN_OK);
    return s;
}

static void test_greedy(void **st) {
    (void)st;
    float l[V];
    fill(l, 1);
    eng_sampler_params p = eng_sampler_defaults();
    p.temp = 0;
    eng_sampler *s = mk(p);
    assert_int_equal(eng_sampler_sample(s, l), eng_argmax(l, V));
    p.temp = 1.0f;
    p.top_k = 1;
    eng_sampler *s1 = mk(p);
    for (int i = 0; i < 20; i++) assert_int_equal(eng_sampler_sample(s1, l), eng_argmax(l, V));
    eng_sampler_destroy(s);
    eng_sampler_destroy(s1);
}

static void test_seed_reproducible(void **st) {
    (void)st;
    float l[V];
    fill(l, 2);
    eng_sampler_params p = eng_sampler_defaults();
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0;
    p.seed = 42;
    eng_sampler *a = mk(p), *b = mk(p);
    int same = 0, differ_from_other_seed = 0;
    p.seed = 43;
    eng_sampler *c = mk(p);
    for (int i = 0; i < 200; i++) {
        int32_t x = eng_sampler_sample(a, l), y = eng_sampler_sample(b, l), z = eng_sampler_sample(c, l);
        same += x == y;
        differ_from_other_seed += x != z;
    }
    assert_int_equal(same, 200);
    assert_true(differ_from_other_seed > 0);
    eng_sampler_destroy(a);
    eng_sampler_destroy(b);
    eng_sampler_destroy(c);
}

static void test_distribution_matches_softmax(void **st) {
    (void)st;
    float l[V];
    for (int i = 0; i < V; i++) l[i] = -30.0f;
    l[3] = 0.0f, l[7] = logf(3.0f); /* p = 1/4, 3/4 */
    eng_sampler_params p = eng_sampler_defaults();
    p.temp = 1.0f, p.top_k = 0, p.top_p = 1.0f, p.min_p = 0;
    eng_sampler *s = mk(p);
    int n7 = 0, n = 20000;
    for (int i = 0; i < n; i++) n7 += eng_sampler_sample(s, l) == 7;
    assert_true(fabs((double)n7 / n - 0.75) < 0.02);
    eng_sampler_destroy(s);
}

static void test_top_p_min_p_cut(void **st) {
    (void)st;
    float l[V];
    for (int i = 0; i < V; i++) l[i] = -10.0f - (float)i * 0.01f;
    l[10] = 5.0f, l[20] = 4.0f, l[30] = 0.0f;
    eng_sampler_params p = eng_sampler_defaults();
    p.temp = 1.0f, p.top_k = 0, p.top_p = 0.9f, p.min_p = 0;
    eng_sampler *s = mk(p);
    for (int i = 0; i < 500; i++) {
        int32_t t = eng_sampler_sample(s, l);
        assert_true(t == 10 || t == 20); /* 10 and 20 hold > 0.9 of the mass */
    }
    eng_sampler_destroy(s);
    p.top_p = 1.0f, p.min_p = 0.5f; /* 20 has p ratio e^-1 = 0.37 < 0.5 */
    s = mk(p);
    for (int i = 0; i < 200; i++) assert_int_equal(eng_sampler_sample(s, l), 10);
    eng_sampler_destroy(s);
    p.min_p = 0, p.typical_p = 0.5f;
    s = mk(p);
    for (int i = 0; i < 200; i++) {
        int32_t t = eng_sampler_sample(s, l);
        assert_true(t == 10 || t == 20);
    }
    eng_sampler_destroy(s);
}

static void test_bias_and_penalties(void **st) {
    (void)st;
    float l[V];
    fill(l, 3);
    int32_t top = eng_argmax(l, V);
    eng_logit_bias ban = {top, -INFINITY};
    eng_sampler_params p = eng_sampler_defaults();
    p.temp = 0;
    p.bias = &ban, p.n_bias = 1;
    eng_sampler *s = mk(p);
    assert_int_not_equal(eng_sampler_sample(s, l), top);
    eng_sampler_destroy(s);

    float flat[V];
    for (int i = 0; i < V; i++) flat[i] = 0.0f;
    flat[5] = 1.0f, flat[6] = 0.9f;
    p = eng_sampler_defaults();
    p.temp = 0, p.presence_penalty = 0.5f;
    s = mk(p);
    assert_int_equal(eng_sampler_sample(s, flat), 5);
    eng_sampler_accept(s, 5);
    assert_int_equal(eng_sampler_sample(s, flat), 6);
    eng_sampler_reset(s);
    assert_int_equal(eng_sampler_sample(s, flat), 5);
    eng_sampler_destroy(s);

    p.presence_penalty = 0, p.repeat_penalty = 2.0f, p.penalty_last_n = 2;
    s = mk(p);
    eng_sampler_accept(s, 5);
    assert_int_equal(eng_sampler_sample(s, flat), 6);
    eng_sampler_accept(s, 1);
    eng_sampler_accept(s, 2); /* 5 leaves the window of 2 */
    assert_int_equal(eng_sampler_sample(s, flat), 5);
    eng_sampler_destroy(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy), cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_distribution_matches_softmax), cmocka_unit_test(test_top_p_min_p_cut),
        cmocka_unit_test(test_bias_and_penalties),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
