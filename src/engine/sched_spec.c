/*
 * sched_spec.c — draft tokens for speculative decoding: prompt lookup
 * (the continuation of the last earlier occurrence of the sequence's last
 * n-gram) and a small draft model sharing the vocabulary, run greedily in
 * its own KV. The decoder step verifies the drafts (sched_step.c).
 */
#include "kiln/engine.h"
#include "sched_internal.h"

#include <string.h>

int eng_draft_ngram(const slot *sl, int max, int32_t *out) {
    const int32_t *t = sl->toks;
    int n = sl->n_toks;
    for (int g = 3; g >= 2; g--) {
        if (n <= g) continue;
        const int32_t *pat = t + n - g;
        for (int j = n - g - 1; j >= 0; j--) {
            if (memcmp(t + j, pat, (size_t)g * sizeof *t)) continue;
            int k = 0;
            while (k < max && j + g + k < n) {
                out[k] = t[j + g + k];
                k++;
            }
            if (k > 0) return k;
        }
    }
    return 0;
}

/* Draft-model drafting for the decoding slots in want[0..n_want): brings
 * the draft model's KV up to each sequence's known tokens, then runs it
 * greedily for up to the slot's draft budget (slot.n_draft on entry),
 * writing the drafts. Slots whose drafting failed get n_draft 0. */
void eng_draft_model_run(eng_sched *s, const int *want, int n_want) {
    const int V = s->m->hp.n_vocab;
    int32_t last[ENG_MAX_SLOTS];
    bool active[ENG_MAX_SLOTS];
    int rounds = 0;
    for (int w = 0; w < n_want; w++) {
        const slot *sl = &s->slots[want[w]];
        active[w] = true;
        last[w] = -1;
        if (sl->n_draft > rounds) rounds = sl->n_draft;
    }
    kn_err e;
    /* catch-up: feed each sequence's tokens the draft model has not seen, in
     * budget-sized batches; the last one's logits give the first draft */
    int row_of[ENG_MAX_SLOTS];
    for (;;) {
        int n = 0, n_rows = 0;
        for (int w = 0; w < n_want; w++) row_of[w] = -1;
        for (int w = 0; w < n_want; w++) {
            slot *sl = &s->slots[want[w]];
            if (!active[w] || last[w] >= 0) continue;
            int left = sl->n_toks - sl->d_past;
            int chunk = left < s->o.max_batch - n ? left : s->o.max_batch - n;
            for (int k = 0; k < chunk; k++) {
                s->b_tok[n] = sl->toks[sl->d_past + k];
                s->b_pos[n] = sl->d_past + k;
                s->b_seq[n] = want[w];
                s->b_flags[n] = 0;
                n++;
            }
            if (chunk == left && chunk > 0) {
                s->b_flags[n - 1] = MODEL_OUT_LOGITS;
                row_of[w] = n_rows++;
            }
            if (n == s->o.max_batch) break;
        }
        if (n == 0) break;
        model_batch b = {.n_tokens = n, .token = s->b_tok, .pos = s->b_pos, .seq = s->b_seq, .logits = s->b_flags};
        if (model_forward(s->dctx, s->dkv, &b, s->dlogits, &e) != KN_OK) {
            for (int w = 0; w < n_want; w++) s->slots[want[w]].n_draft = 0;
            return;
        }
        for (int w = 0; w < n_want; w++) {
            slot *sl = &s->slots[want[w]];
            for (int t = 0; t < n; t++)
                if (s->b_seq[t] == want[w]) sl->d_past = s->b_pos[t] + 1;
            if (row_of[w] >= 0) last[w] = eng_argmax(s->dlogits + (size_t)row_of[w] * V, V);
        }
    }
    for (int w = 0; w < n_want; w++) {
        slot *sl = &s->slots[want[w]];
        if (last[w] < 0) active[w] = false, sl->n_draft = 0;
        else sl->draft[0] = last[w];
    }
    /* then one token per sequence per round */
    for (int d = 1; d < rounds; d++) {
        int n = 0;
        for (int w = 0; w < n_want; w++) {
            slot *sl = &s->slots[want[w]];
            if (!active[w] || d >= sl->n_draft) continue;
            s->b_tok[n] = sl->draft[d - 1];
            s->b_pos[n] = sl->d_past;
            s->b_seq[n] = want[w];
            s->b_flags[n] = MODEL_OUT_LOGITS;
            n++;
        }
        if (n == 0) break;
        model_batch b = {.n_tokens = n, .token = s->b_tok, .pos = s->b_pos, .seq = s->b_seq, .logits = s->b_flags};
        if (model_forward(s->dctx, s->dkv, &b, s->dlogits, &e) != KN_OK) {
            for (int w = 0; w < n_want; w++)
                if (active[w] && s->slots[want[w]].n_draft > d) s->slots[want[w]].n_draft = d;
            break;
        }
        int row = 0;
        for (int w = 0; w < n_want; w++) {
            slot *sl = &s->slots[want[w]];
            if (!active[w] || d >= sl->n_draft) continue;
            sl->d_past++;
            sl->draft[d] = eng_argmax(s->dlogits + (size_t)row++ * V, V);
        }
    }
}

/* Orders the busy slots oldest first into s->ord; returns how many. */