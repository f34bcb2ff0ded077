/*
 * sampler.c — see sampler.h.
 */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct cand {
    int32_t id;
    float logit;
    float p;
} cand;

struct eng_sampler {
    eng_sampler_params p;
    int32_t n_vocab;
    cand *c;          /* [n_vocab] */
    int32_t *hist;    /* [penalty_last_n] ring */
    int32_t n_hist, hist_pos;
    uint16_t *counts; /* [n_vocab] occurrences within the window */
    uint64_t rng;
};

eng_sampler_params eng_sampler_defaults(void) {
    return (eng_sampler_params){.temp = 0.8f,
                                .top_k = 40,
                                .top_p = 0.95f,
                                .min_p = 0.05f,
                                .typical_p = 1.0f,
                                .repeat_penalty = 1.0f,
                                .penalty_last_n = 64,
                                .seed = 0x5eed};
}

kn_status eng_sampler_create(const eng_sampler_params *p, int32_t n_vocab, eng_sampler **out, kn_err *err) {
    *out = NULL;
    if (n_vocab < 1) return kn_fail(err, KN_EINVAL, "vocabulary is empty");
    if (p->penalty_last_n < 0 || p->penalty_last_n > 1 << 20)
        return kn_fail(err, KN_EINVAL, "penalty window %d out of range", p->penalty_last_n);
    eng_sampler *s = calloc(1, sizeof *s);
    if (!s) return kn_fail(err, KN_ENOMEM, "out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    s->c = malloc((size_t)n_vocab * sizeof *s->c);
    s->counts = calloc((size_t)n_vocab, sizeof *s->counts);
    s->hist = malloc((size_t)(p->penalty_last_n > 0 ? p->penalty_last_n : 1) * sizeof *s->hist);
    if (!s->c || !s->counts || !s->hist) {
        eng_sampler_destroy(s);
        return kn_fail(err, KN_ENOMEM, "out of memory");
    }
    eng_sampler_reset(s);
    *out = s;
    return KN_OK;
}

void eng_sampler_destroy(eng_sampler *s) {
    if (!s) return;
    free(s->c);
    free(s->counts);
    free(s->hist);
    free(s);
}

void eng_sampler_reset(eng_sampler *s) {
    s->n_hist = s->hist_pos = 0;
    memset(s->counts, 0, (size_t)s->n_vocab * sizeof *s->counts);
    s->rng = s->p.seed ^ 0x9e3779b97f4a7c15ull;
}

void eng_sampler_accept(eng_sampler *s, int32_t tok) {
    if (s->p.penalty_last_n <= 0 || tok < 0 || tok >= s->n_vocab) return;
    if (s->n_hist == s->p.penalty_last_n) {
        int32_t old = s->hist[s->hist_pos];
        if (s->counts[old]) s->counts[old]--;
    } else {
        s->n_hist++;
    }
    s->hist[s->hist_pos] = tok;
    if (s->counts[tok] < UINT16_MAX) s->counts[tok]++;
    s->hist_pos = (s->hist_pos + 1) % s->p.penalty_last_n;
}

int32_t eng_argmax(const float *logits, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

static uint64_t rng_next(uint64_t *st) {
    uint64_t z = (*st += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int cand_desc(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int cand_asc(const void *a, const void *b) { return -cand_desc(a, b); }

/* Moves the k largest candidates to the front (unordered). */
static void select_top(cand *c, int32_t n, int32_t k) {
    int32_t lo = 0, hi = n - 1;
    while (lo < hi) {
        cand piv = c[lo + (hi - lo) / 2];
        int32_t i = lo, j = hi;
        while (i <= j) {
            while (cand_desc(&c[i], &piv) < 0) i++;
            while (cand_desc(&c[j], &piv) > 0) j--;
            if (i <= j) {
                cand t = c[i];
                c[i] = c[j];
                c[j] = t;
                i++;
                j--;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
}

/* Sorts the first k (after moving the top k there). */
static void sort_top(cand *c, int32_t n, int32_t k) {
    if (k < n) select_top(c, n, k);
    qsort(c, (size_t)k, sizeof *c, cand_desc);
}

static void softmax(cand *c, int32_t n) {
    float mx = c[0].logit;
    for (int32_t i = 1; i < n; i++)
        if (c[i].logit > mx) mx = c[i].logit;
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        c[i].p = expf(c[i].logit - mx);
        sum += c[i].p;
    }
    for (int32_t i = 0; i < n; i++) c[i].p = (float)(c[i].p / sum);
}

/* draft >= 0: a token proposed by a deterministic drafter; it is kept with
 * its probability under the final distribution, else the token is drawn
 * from that distribution without it (the standard speculative-sampling
 * rule for a one-hot draft distribution: the result is distributed exactly
 * as a plain draw). */
static int32_t sample_impl(eng_sampler *s, const float *logits, int32_t draft) {
    const eng_sampler_params *p = &s->p;
    int32_t n = s->n_vocab;
    cand *c = s->c;
    bool penalties = s->n_hist > 0 &&
                     (p->repeat_penalty != 1.0f || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f);
    if (p->temp <= 0.0f && p->n_bias == 0 && !penalties) {
        /* greedy with nothing to adjust: one pass, the same choice as below
         * (the first of the largest finite logits; NaN and -inf never win) */
        int32_t best = -1;
        float bv = -INFINITY;
        for (int32_t i = 0; i < n; i++)
            if (logits[i] > bv) bv = logits[i], best = i;
        return best >= 0 ? best : eng_argmax(logits, n);
    }
    for (int32_t i = 0; i < n; i++) c[i] = (cand){i, logits[i], 0.0f};
    for (int32_t i = 0; i < p->n_bias; i++)
        if (p->bias[i].token >= 0 && p->bias[i].token < n) c[p->bias[i].token].logit += p->bias[i].bias;
    if (penalties) {
        for (int32_t h = 0; h < s->n_hist; h++) {
            int32_t t = s->hist[h];
            if (s->counts[t] == 0) continue; /* already handled */
            float *l = &c[t].logit;
            if (p->repeat_penalty != 1.0f) *l = *l > 0 ? *l / p->repeat_penalty : *l * p->repeat_penalty;
            *l -= (float)s->counts[t] * p->frequency_penalty + p->presence_penalty;
        }
    }
    /* drop banned tokens */
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++)
        if (c[i].logit != -INFINITY && !isnan(c[i].logit)) c[m++] = c[i];
    if (m == 0) return eng_argmax(logits, n);
    n = m;
    if (p->temp <= 0.0f) {
        int32_t best = 0;
        for (int32_t i = 1; i < n; i++)
            if (c[i].logit > c[best].logit) best = i;
        return c[best].id;
    }
    /* top-k, or a growing sorted prefix when top-k is off */
    int32_t k = p->top_k > 0 && p->top_k < n ? p->top_k : n;
    if (k < n) {
        sort_top(c, n, k);
        n = k;
    } else if (p->top_p < 1.0f) {
        softmax(c, n);
        int32_t kk = n < 256 ? n : 256;
        for (;;) {
            sort_top(c, n, kk);
            double cum = 0.0;
            for (int32_t i = 0; i < kk; i++) cum += c[i].p;
            if (cum >= p->top_p || kk == n) break;
            kk = kk * 4 < n ? kk * 4 : n;
        }
        n = kk;
    } else {
        qsort(c, (size_t)n, sizeof *c, cand_desc);
    }
    softmax(c, n);
    if (p->typical_p < 1.0f && n > 1) {
        double ent = 0.0;
        for (int32_t i = 0; i < n; i++)
            if (c[i].p > 0) ent -= c[i].p * log(c[i].p);
        /* order by |(-log p) - H|, keep the smallest prefix reaching
         * typical_p. The deviation sits in .logit while sorting; afterwards
         * .logit = log p, which is the same distribution. */
        for (int32_t i = 0; i < n; i++) c[i].logit = (float)fabs(-log(c[i].p) - ent);
        qsort(c, (size_t)n, sizeof *c, cand_asc);
        int32_t keep = n;
        double cum = 0.0;
        for (int32_t i = 0; i < n; i++) {
            cum += c[i].p;
            if (cum >= p->typical_p) {
                keep = i + 1;
                break;
            }
        }
        for (int32_t i = 0; i < keep; i++) c[i].logit = logf(c[i].p);
        n = keep;
        qsort(c, (size_t)n, sizeof *c, cand_desc);
        softmax(c, n);
    }
    if (p->top_p < 1.0f) {
        double cum = 0.0;
        for (int32_t i = 0; i < n; i++) {
            cum += c[i].p;
            if (cum >= p->top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0.0f) {
        float thr = c[0].p * p->min_p;
        int32_t i = 1;
        while (i < n && c[i].p >= thr) i++;
        n = i;
    }
    for (int32_t i = 0; i < n; i++) c[i].logit /= p->temp;
    softmax(c, n);
    double r = (double)(rng_next(&s->rng) >> 11) * (1.0 / 9007199254740992.0);
    if (draft >= 0) {
        double pd = 0.0;
        int32_t at = -1;
        for (int32_t i = 0; i < n; i++)
            if (c[i].id == draft) pd = c[i].p, at = i;
        if (r < pd) return draft;
        if (at >= 0 && pd < 1.0) {
            c[at].p = 0.0f;
            for (int32_t i = 0; i < n; i++) c[i].p = (float)(c[i].p / (1.0 - pd));
        }
        r = (double)(rng_next(&s->rng) >> 11) * (1.0 / 9007199254740992.0);
    }
    double cum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        cum += c[i].p;
        if (r < cum && c[i].p > 0.0f) return c[i].id;
    }
    for (int32_t i = n - 1; i > 0; i--)
        if (c[i].p > 0.0f) return c[i].id;
    return c[0].id;
}

int32_t eng_sampler_sample(eng_sampler *s, const float *logits) { return sample_impl(s, logits, -1); }

int32_t eng_sampler_sample_draft(eng_sampler *s, const float *logits, int32_t draft) {
    return sample_impl(s, logits, draft);
}
