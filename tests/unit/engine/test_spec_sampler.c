/*
 * test_spec_sampler.c — eng_sampler_sample_draft (speculative decoding's
 * acceptance rule) keeps the sampling distribution:
 *  - for fixed logits at temperature 1 with every filter off, 200k draws
 *    with a likely draft token, with an unlikely one and without a draft
 *    give frequencies within 5 binomial standard deviations of
 *    softmax(logits), computed here in double precision;
 *  - with top-k 3, a draft outside the top 3 is never returned and the
 *    frequencies match the renormalized top 3;
 *  - greedy (temp 0) returns the argmax whatever the draft.
 */
#include "testutil.h"
#include "engine/sampler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NV 6
#define DRAWS 200000

static const float LOGITS[NV] = {1.5f, 0.9f, 0.2f, -0.4f, -1.3f, -2.5f};

static eng_sampler_params plain(float temp, int top_k, uint64_t seed) {
    eng_sampler_params p = eng_sampler_defaults();
    p.temp = temp;
    p.top_k = top_k;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.typical_p = 1.0f;
    p.repeat_penalty = 1.0f;
    p.presence_penalty = 0.0f;
    p.frequency_penalty = 0.0f;
    p.seed = seed;
    return p;
}

/* softmax over the k largest logits (k = NV: all), the others 0 */
static void expected(int k, double *p) {
    int idx[NV];
    for (int i = 0; i < NV; i++) idx[i] = i;
    for (int i = 0; i < NV; i++) /* LOGITS are distinct: sort ids by logit, descending */
        for (int j = i + 1; j < NV; j++)
            if (LOGITS[idx[j]] > LOGITS[idx[i]]) {
                int t = idx[i];
                idx[i] = idx[j];
                idx[j] = t;
            }
    double sum = 0;
    for (int i = 0; i < NV; i++) p[i] = 0;
    for (int i = 0; i < k; i++) sum += exp((double)LOGITS[idx[i]]);
    for (int i = 0; i < k; i++) p[idx[i]] = exp((double)LOGITS[idx[i]]) / sum;
}

/* Draws DRAWS tokens with draft (-1: plain sampling) and checks every
 * token's count against p within 5 sigma of a binomial. */
static void check_draws(int top_k, int32_t draft, uint64_t seed) {
    eng_sampler_params p = plain(1.0f, top_k, seed);
    eng_sampler *s;
    kn_err err = {0};
    assert_int_equal(eng_sampler_create(&p, NV, &s, &err), KN_OK);
    long cnt[NV] = {0};
    for (int d = 0; d < DRAWS; d++) {
        int32_t t = draft >= 0 ? eng_sampler_sample_draft(s, LOGITS, draft) : eng_sampler_sample(s, LOGITS);
        assert_true(t >= 0 && t < NV);
        cnt[t]++;
    }
    eng_sampler_destroy(s);
    double want[NV];
    expected(top_k > 0 ? top_k : NV, want);
    for (int i = 0; i < NV; i++) {
        double mean = DRAWS * want[i], sd = sqrt(DRAWS * want[i] * (1 - want[i]));
        if (want[i] == 0) {
            if (cnt[i] != 0) fail_msg("top_k %d draft %d: token %d is filtered out but came %ld times", top_k, draft, i, cnt[i]);
            continue;
        }
        if (fabs((double)cnt[i] - mean) > 5 * sd)
            fail_msg("top_k %d draft %d: token %d came %ld times in %d draws; softmax expects %.0f (sd %.1f)", top_k,
                     draft, i, cnt[i], DRAWS, mean, sd);
    }
}

static void test_draft_keeps_distribution(void **state) {
    (void)state;
    check_draws(0, -1, 1);  /* plain, as the baseline */
    check_draws(0, 0, 2);   /* the most likely token drafted (p ~ 0.48) */
    check_draws(0, 1, 3);   /* a middling one */
    check_draws(0, 5, 4);   /* an unlikely one (p ~ 0.02) */
}

static void test_draft_filtered_out(void **state) {
    (void)state;
    check_draws(3, 5, 5); /* the draft is outside the top 3: never returned */
    check_draws(3, 2, 6); /* the draft is the last of the top 3 */
}

static void test_greedy_ignores_draft(void **state) {
    (void)state;
    eng_sampler_params p = plain(0.0f, 0, 7);
    eng_sampler *s;
    kn_err err = {0};
    assert_int_equal(eng_sampler_create(&p, NV, &s, &err), KN_OK);
    for (int32_t d = -1; d < NV; d++)
        for (int rep = 0; rep < 50; rep++) assert_int_equal(eng_sampler_sample_draft(s, LOGITS, d), 0);
    float lg[NV];
    memcpy(lg, LOGITS, sizeof lg);
    lg[4] = 3.0f; /* the argmax moves */
    for (int32_t d = -1; d < NV; d++) assert_int_equal(eng_sampler_sample_draft(s, lg, d), 4);
    eng_sampler_destroy(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_draft_keeps_distribution),
        cmocka_unit_test(test_draft_filtered_out),
        cmocka_unit_test(test_greedy_ignores_draft),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
