/*
 * embed.c — an embedding request (see kiln/engine.h): every input is looked
 * up in the embedding cache first (keyed on its text or token ids, so
 * without the model); the misses are tokenized and run as one engine
 * request, micro-batched with others on an encoder, then stored. When
 * every input hits, the model is not loaded.
 */
#include "service_internal.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct eng_embed {
    eng_service *s;
    const rt_front *front;
    rt_model *m;
    eng_req *r;
    int efd;
    size_t n, n_miss, n_hit;
    int n_embd;
    bool cacheable, normalize;
    uint64_t tag;
    double load_s;
    rc_key *keys;       /* [n] */
    void **hit;         /* [n] a hit's cached value, NULL for a miss */
    const float **hit_v; /* [n] its vector */
    size_t *hit_nt;     /* [n] its token count */
    size_t *miss;       /* [n_miss] the input index of each miss */
    int32_t **toks;     /* [n_miss] */
    size_t *lens;       /* [n_miss] */
    float *out;         /* [n x n_embd] */
};

static void notify_efd(void *arg) { eng_efd_signal(*(int *)arg); }

static bool alloc_tables(eng_embed *h, size_t n) {
    h->keys = calloc(n, sizeof *h->keys);
    h->hit = calloc(n, sizeof *h->hit);
    h->hit_v = calloc(n, sizeof *h->hit_v);
    h->hit_nt = calloc(n, sizeof *h->hit_nt);
    h->miss = calloc(n, sizeof *h->miss);
    h->toks = calloc(n, sizeof *h->toks);
    h->lens = calloc(n, sizeof *h->lens);
    return h->keys && h->hit && h->hit_v && h->hit_nt && h->miss && h->toks && h->lens;
}

/* Looks every input up (ctx: the truncation context, 0 when the request
 * does not truncate). */
static void lookup_all(eng_embed *h, const eng_embed_request *q, int ctx) {
    eng_key_ctx k = h->s->key;
    k.name = h->front->name;
    k.quant = h->front->quant;
    k.sha256 = h->front->sha256;
    for (size_t i = 0; i < q->n; i++) {
        bool tokens = q->tokens != NULL;
        const void *in = tokens ? (const void *)q->tokens[i] : (const void *)q->texts[i];
        size_t bytes = tokens ? q->lens[i] * sizeof(int32_t) : q->lens[i];
        h->keys[i] = eng_embed_key(&k, h->normalize, q->truncate ? ctx : 0, tokens, in, bytes);
        void *val = NULL;
        size_t len = 0;
        if (rc_lookup(h->s->cache, RC_EMBEDDING, h->tag, h->keys[i], &val, &len) == RC_TIER_NONE) continue;
        if (eng_emb_parse(val, len, h->n_embd, &h->hit_v[i], &h->hit_nt[i])) {
            h->hit[i] = val;
            h->n_hit++;
            continue;
        }
        KN_WARN("%s: a cached embedding is not well-formed; computing it again", h->front->id);
        free(val);
    }
}

/* Tokenizes the misses with the instance's vocabulary, each within its
 * context (cut when the request truncates). */
static bool tokenize_misses(eng_embed *h, const eng_embed_request *q, eng_error *e) {
    const rt_model *m = h->m;
    for (size_t i = 0; i < q->n; i++) {
        if (h->hit[i]) continue;
        kn_err err = {0};
        size_t k = h->n_miss;
        if (q->tokens) {
            if (!(h->toks[k] = malloc((q->lens[i] ? q->lens[i] : 1) * sizeof **h->toks)))
                return eng_fail(e, ENG_ERR_INTERNAL, NULL, NULL, "out of memory");
            memcpy(h->toks[k], q->tokens[i], q->lens[i] * sizeof **h->toks);
            h->lens[k] = q->lens[i];
        } else if (tok_encode_alloc(m->front->vocab, q->texts[i], q->lens[i], true, false, &h->toks[k], &h->lens[k], &err) !=
                   KN_OK) {
            return eng_fail(e, ENG_ERR_REQUEST, "input", NULL, "cannot tokenize input %zu: %s", i, err.msg);
        }
        h->miss[h->n_miss++] = i;
        if (h->lens[k] == 0) return eng_fail(e, ENG_ERR_REQUEST, "input", "empty_input", "input %zu has no tokens", i);
        if (h->lens[k] <= (size_t)m->n_ctx) continue;
        if (!q->truncate)
            return eng_fail(e, ENG_ERR_REQUEST, "input", "context_length_exceeded",
                            "input %zu has %zu tokens, but the context holds %d; shorten it or pass \"truncate\": true",
                            i, h->lens[k], m->n_ctx);
        /* an encoder's input keeps its closing special token ([SEP]) */
        if (h->front->encoder && !q->tokens) h->toks[k][m->n_ctx - 1] = h->toks[k][h->lens[k] - 1];
        h->lens[k] = (size_t)m->n_ctx;
    }
    return true;
}

static bool run_misses(eng_embed *h, eng_error *e) {
    kn_err err = {0};
    kn_status st = eng_req_create_embed(h->m->engine, (const int32_t *const *)h->toks, h->lens, h->n_miss,
                                        h->normalize, &h->r, &err);
    if (st != KN_OK)
        return eng_fail(e, st == KN_ENOMEM ? ENG_ERR_INTERNAL : ENG_ERR_REQUEST, "input", NULL, "%s", err.msg);
    eng_req_set_notify(h->r, notify_efd, &h->efd);
    if ((st = eng_sched_submit(h->m->engine, h->r, &err)) != KN_OK)
        return eng_fail(e, ENG_ERR_BUSY, NULL, st == KN_EBUSY ? "overloaded" : "shutting_down", "%s", err.msg);
    return true;
}

bool eng_embed_start(eng_service *s, const eng_embed_request *q, eng_embed **out, eng_error *e) {
    *out = NULL;
    double t0 = kn_now_s();
    eng_embed *h = calloc(1, sizeof *h);
    if (!h) return eng_fail(e, ENG_ERR_INTERNAL, NULL, NULL, "out of memory");
    h->s = s;
    h->efd = -1;
    h->n = q->n;
    h->normalize = true;
    if (!eng_front_get(s, q->model, &h->front, e)) goto fail;
    h->n_embd = h->front->n_embd;
    h->tag = rc_model_tag(h->front->id);
    if (!alloc_tables(h, q->n ? q->n : 1) || (h->efd = eng_efd_new()) < 0) {
        eng_fail(e, ENG_ERR_INTERNAL, NULL, NULL, "out of memory (or descriptors)");
        goto fail;
    }
    rt_acquire_opts ao = {.n_ctx = 0, .keep_alive_s = q->keep_alive_s, .touch = true};
    h->cacheable = rc_enabled(s->cache, RC_EMBEDDING) && q->cache && h->front->sha256[0];
    /* truncation keys on the context: an encoder's is fixed, a decoder's is its instance's */
    bool need_model = q->truncate && !h->front->encoder;
    if (h->cacheable && need_model && !eng_model_get(s, h->front->id, &ao, &h->m, e)) goto fail;
    if (h->cacheable) lookup_all(h, q, h->m ? h->m->n_ctx : h->front->ctx_min);
    if (h->n_hit < h->n) {
        if (!h->m && !eng_model_get(s, h->front->id, &ao, &h->m, e)) goto fail;
        if (h->m->front != h->front || strcmp(h->m->sha256, h->front->sha256)) h->cacheable = false;
        h->load_s = kn_now_s() - t0;
        if (!tokenize_misses(h, q, e) || !run_misses(h, e)) goto fail;
    } else {
        notify_efd(&h->efd);
    }
    *out = h;
    return true;
fail:
    eng_embed_close(h);
    return false;
}

int eng_embed_fd(const eng_embed *h) { return h->efd; }

bool eng_embed_ready(eng_embed *h) {
    if (!h->r) return true;
    eng_efd_drain(h->efd);
    size_t dummy = 0;
    char tb[1];
    eng_req_result res;
    if (!eng_req_read(h->r, 0, tb, 0, &dummy, NULL, 0, NULL, &res)) return false;
    notify_efd(&h->efd); /* stays readable */
    return true;
}

bool eng_embed_result_get(eng_embed *h, eng_embed_result *res, eng_error *e) {
    memset(res, 0, sizeof *res);
    const float *emb = NULL;
    size_t n_tok = 0;
    if (h->r) {
        eng_req_result rr;
        size_t dummy = 0;
        char tb[1];
        eng_req_read(h->r, 0, tb, 0, &dummy, NULL, 0, NULL, &rr);
        if (rr.finish != ENG_FINISH_STOP)
            return eng_fail(e,
                            rr.status == KN_EBUSY || rr.finish == ENG_FINISH_CANCELLED ? ENG_ERR_BUSY
                                                                                       : ENG_ERR_INTERNAL,
                            NULL, NULL, "%s", rr.err[0] ? rr.err : "embedding failed");
        size_t n_in;
        int ne;
        emb = eng_req_embeddings(h->r, &n_in, &ne, &n_tok);
        if (n_in != h->n_miss || ne != h->n_embd)
            return eng_fail(e, ENG_ERR_INTERNAL, NULL, NULL,
                            "the engine returned %zu embeddings of %d values for %zu inputs of %d", n_in, ne,
                            h->n_miss, h->n_embd);
        for (size_t k = 0; h->cacheable && k < h->n_miss; k++) {
            size_t len = 0;
            void *v = eng_emb_value(emb + k * (size_t)h->n_embd, h->n_embd, h->lens[k], &len);
            if (v) rc_store(h->s->cache, RC_EMBEDDING, h->tag, h->keys[h->miss[k]], v, len);
            free(v);
        }
    }
    /* every input's vector, in order */
    if (!h->out && !(h->out = malloc(h->n * (size_t)h->n_embd * sizeof *h->out)))
        return eng_fail(e, ENG_ERR_INTERNAL, NULL, NULL, "out of memory");
    for (size_t i = 0, k = 0; i < h->n; i++) {
        const float *v = h->hit[i] ? h->hit_v[i] : emb + (k++) * (size_t)h->n_embd;
        if (h->hit[i]) n_tok += h->hit_nt[i];
        memcpy(h->out + i * (size_t)h->n_embd, v, (size_t)h->n_embd * sizeof *v);
    }
    *res = (eng_embed_result){.model_id = h->front->id, .vecs = h->out, .n_embd = h->n_embd, .n = h->n,
                              .n_tokens = n_tok, .n_hit = h->n_hit,
                              .cache = !h->cacheable ? ENG_CACHE_BYPASS : h->n_miss ? ENG_CACHE_MISS : ENG_CACHE_HIT,
                              .load_s = h->load_s};
    return true;
}

void eng_embed_cancel(eng_embed *h) {
    if (h && h->r) eng_req_cancel(h->r);
}

void eng_embed_close(eng_embed *h) {
    if (!h) return;
    eng_req_release(h->r);
    if (h->m) rt_release(h->s->reg, h->m);
    rt_front_release(h->s->reg, h->front);
    if (h->efd >= 0) close(h->efd);
    for (size_t i = 0; h->toks && i < h->n_miss; i++) free(h->toks[i]);
    for (size_t i = 0; h->hit && i < h->n; i++) free(h->hit[i]);
    free(h->keys);
    free(h->hit);
    free(h->hit_v);
    free(h->hit_nt);
    free(h->miss);
    free(h->toks);
    free(h->lens);
    free(h->out);
    free(h);
}
