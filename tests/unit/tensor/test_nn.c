/* test_attn.c — the attention tile and SwiGLU kernels of every kernel set
 * this CPU runs against the scalar reference: attention over several tiles
 * with the online softmax, for head dims with and without vector tails and
 * GQA groups; SwiGLU over lengths with tails and extreme inputs. */
#include "testutil.h"
#include "kiln/tensor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void run_attn(q_attn_tile_fn fn, int hd, int G, int n, const float *q, const q_f16_t *k, const q_f16_t *v,
                     float *out) {
    float m[16], l[16], *acc = calloc((size_t)G * hd, sizeof *acc), *s = malloc((size_t)G * 32 * sizeof *s);
    for (int g = 0; g < G; g++) m[g] = -INFINITY, l[g] = 0;
    for (int t0 = 0; t0 < n; t0 += 32) {
        int len = n - t0 < 32 ? n - t0 : 32;
        fn(hd, G, len, q, k + (size_t)t0 * hd, v + (size_t)t0 * hd, 1.0f / sqrtf((float)hd), m, l, acc, s);
    }
    for (int g = 0; g < G; g++)
        for (int d = 0; d < hd; d++) out[g * hd + d] = acc[g * hd + d] / l[g];
    free(acc);
    free(s);
}

static void test_attn_sets_match_reference(void **state) {
    (void)state;
    kn_cpu_features f;
    kn_cpu_features_detect(&f);
    const int hds[] = {8, 24, 64, 128}, Gs[] = {1, 2, 8}, ns[] = {1, 5, 32, 33, 100};
    tu_rng r = {7};
    int checked = 0;
    for (int lvl = KN_CPU_GENERIC; lvl < KN_CPU_LEVEL_COUNT; lvl++) {
        if (!kn_cpu_supports(&f, (kn_cpu_level)lvl)) continue;
        tensor_ops ops;
        tensor_ops_init(&ops, (kn_cpu_level)lvl);
        assert_non_null(ops.attn_tile_f16);
        for (size_t a = 0; a < 4; a++)
            for (size_t b = 0; b < 3; b++)
                for (size_t c = 0; c < 5; c++) {
                    int hd = hds[a], G = Gs[b], n = ns[c];
                    float *q = malloc((size_t)G * hd * sizeof *q);
                    q_f16_t *k = malloc((size_t)n * hd * sizeof *k), *v = malloc((size_t)n * hd * sizeof *v);
                    for (int i = 0; i < G * hd; i++) q[i] = 2.0f * tu_rng_normal(&r);
                    for (int i = 0; i < n * hd; i++) {
                        k[i] = q_f32_to_f16(tu_rng_normal(&r));
                        v[i] = q_f32_to_f16(tu_rng_normal(&r));
                    }
                    float *o1 = malloc((size_t)G * hd * sizeof *o1), *o2 = malloc((size_t)G * hd * sizeof *o2);
                    run_attn(tensor_attn_tile_f16_ref, hd, G, n, q, k, v, o1);
                    run_attn(ops.attn_tile_f16, hd, G, n, q, k, v, o2);
                    for (int i = 0; i < G * hd; i++) {
                        if (fabsf(o1[i] - o2[i]) > 1e-4f * (1.0f + fabsf(o1[i])))
                            fail_msg("set %s hd %d G %d n %d: element %d: %g vs reference %g",
                                     kn_cpu_level_name((kn_cpu_level)lvl), hd, G, n, i, o2[i], o1[i]);
                    }
                    /* the same inputs give the same bits (no state leaks between calls) */
                    float *o3 = malloc((size_t)G * hd * sizeof *o3);
                    run_attn(ops.attn_tile_f16, hd, G, n, q, k, v, o3);
                    assert_memory_equal(o2, o3, (size_t)G * hd * sizeof *o3);
                    checked++;
                    free(q), free(k), free(v), free(o1), free(o2), free(o3);
                }
    }
    assert_true(checked >= 60);
}

static void test_swiglu_sets_match_reference(void **state) {
    (void)state;
    kn_cpu_features f;
    kn_cpu_features_detect(&f);
    tu_rng r = {11};
    enum { N = 301 };
    float g[N], u[N], o1[N], o2[N];
    for (int i = 0; i < N; i++) g[i] = 6.0f * tu_rng_normal(&r), u[i] = tu_rng_normal(&r);
    g[0] = -100.0f, g[1] = 100.0f, g[2] = 0.0f, g[3] = -1e-30f;
    for (int lvl = KN_CPU_GENERIC; lvl < KN_CPU_LEVEL_COUNT; lvl++) {
        if (!kn_cpu_supports(&f, (kn_cpu_level)lvl)) continue;
        tensor_ops ops;
        tensor_ops_init(&ops, (kn_cpu_level)lvl);
        for (int n = 1; n <= N; n += 37) {
            tensor_swiglu_ref(n, o1, g, u);
            ops.swiglu(n, o2, g, u);
            for (int i = 0; i < n; i++)
                if (fabsf(o1[i] - o2[i]) > 1e-5f * (1.0f + fabsf(o1[i])))
                    fail_msg("set %s n %d i %d: %g vs %g", kn_cpu_level_name((kn_cpu_level)lvl), n, i, o2[i], o1[i]);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_attn_sets_match_reference),
                                       cmocka_unit_test(test_swiglu_sets_match_reference)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
