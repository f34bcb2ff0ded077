/*
 * record.c — the values the session keeps in the response and embedding
 * cache (see record.h).
 */
#include "record.h"

#include <stdlib.h>
#include <string.h>

#define REC_MAGIC "KRS1"
#define EMB_MAGIC "KEM1"
#define REC_HEAD 36
#define REC_VERSION 3

/* ---- generation records ---------------------------------------------------------- */

static bool put_varint(kn_buf *b, uint64_t v) {
    uint8_t t[10];
    size_t n = 0;
    do {
        t[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return kn_buf_add(b, t, n, 0);
}

/* Reads a varint of at most 32 bits at *o (< end); false when malformed. */
static bool get_varint(const uint8_t *p, size_t end, size_t *o, uint32_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 35; shift += 7) {
        if (*o >= end) return false;
        uint8_t b = p[(*o)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            if (v > UINT32_MAX) return false;
            *out = (uint32_t)v;
            return true;
        }
    }
    return false;
}

void eng_rec_chunk(eng_rec *r, const char *text, size_t n, const eng_tok_event *ev, size_t nev) {
    if (r->failed || (!n && !nev)) return;
    bool ok = n <= UINT32_MAX && put_varint(&r->chunks, n) && put_varint(&r->chunks, nev) &&
              kn_buf_add(&r->text, text, n, 0);
    for (size_t i = 0; ok && r->with_events && i < nev; i++) {
        uint8_t nt = (uint8_t)(ev[i].n_top < 0 ? 0 : ev[i].n_top > ENG_MAX_LOGPROBS ? ENG_MAX_LOGPROBS : ev[i].n_top);
        ok = kn_buf_add(&r->events, &ev[i].token, 4, 0) && kn_buf_add(&r->events, &ev[i].logprob, 4, 0) &&
             kn_buf_add(&r->events, &nt, 1, 0);
        for (int k = 0; ok && k < nt; k++)
            ok = kn_buf_add(&r->events, &ev[i].top_id[k], 4, 0) && kn_buf_add(&r->events, &ev[i].top_lp[k], 4, 0);
    }
    if (!ok) r->failed = true;
    r->n_chunks++;
}

void *eng_rec_finish(eng_rec *r, const eng_req_result *res, size_t *len) {
    if (r->failed || r->text.n > UINT32_MAX || r->events.n > UINT32_MAX) return NULL;
    size_t n = REC_HEAD + r->chunks.n + r->events.n + r->text.n;
    uint8_t *p = malloc(n);
    if (!p) return NULL;
    memcpy(p, REC_MAGIC, 4);
    p[4] = REC_VERSION;
    p[5] = (uint8_t)res->finish;
    p[6] = r->with_events;
    p[7] = res->finish == ENG_FINISH_STOP && res->stop_index >= 0 && res->stop_index < 255 ? (uint8_t)(res->stop_index + 1) : 0;
    uint32_t h[7] = {(uint32_t)res->n_prompt, (uint32_t)res->n_gen, r->n_chunks, (uint32_t)r->chunks.n,
                     (uint32_t)r->text.n, (uint32_t)r->events.n, r->ctx_limit};
    memcpy(p + 8, h, sizeof h);
    size_t o = REC_HEAD;
    if (r->chunks.n) memcpy(p + o, r->chunks.p, r->chunks.n);
    o += r->chunks.n;
    if (r->events.n) memcpy(p + o, r->events.p, r->events.n);
    o += r->events.n;
    if (r->text.n) memcpy(p + o, r->text.p, r->text.n);
    *len = n;
    return p;
}

void eng_rec_free(eng_rec *r) {
    kn_buf_free(&r->text);
    kn_buf_free(&r->chunks);
    kn_buf_free(&r->events);
}

bool eng_rec_parse(const void *val, size_t len, size_t max_ev, eng_rec_view *v) {
    const uint8_t *p = val;
    memset(v, 0, sizeof *v);
    if (len < REC_HEAD || memcmp(p, REC_MAGIC, 4) || p[4] != REC_VERSION || p[5] > ENG_FINISH_ERROR || p[6] > 1)
        return false;
    uint32_t h[7];
    memcpy(h, p + 8, sizeof h);
    v->finish = p[5];
    v->stop_index = (int)p[7] - 1;
    v->ctx_limit = h[6];
    v->with_events = p[6];
    v->n_prompt = h[0];
    v->n_gen = h[1];
    v->n_chunks = h[2];
    uint64_t need = (uint64_t)REC_HEAD + h[3] + h[4] + h[5];
    if (need != len) return false;
    v->chunks = p + REC_HEAD;
    v->chunks_len = h[3];
    v->events = v->chunks + h[3];
    v->events_len = h[5];
    v->text = (const char *)v->events + h[5];
    v->text_len = h[4];
    uint64_t sum = 0;
    size_t o = 0;
    for (uint32_t i = 0; i < v->n_chunks; i++) {
        uint32_t tn, ne;
        if (!get_varint(v->chunks, v->chunks_len, &o, &tn) || !get_varint(v->chunks, v->chunks_len, &o, &ne) ||
            ne > max_ev)
            return false;
        sum += tn;
    }
    return o == v->chunks_len && sum == v->text_len;
}

bool eng_rec_next(eng_rec_view *v, const char **text, size_t *n, eng_tok_event *ev, size_t *nev) {
    *n = *nev = 0;
    if (v->i >= v->n_chunks) return false;
    uint32_t c[2];
    if (!get_varint(v->chunks, v->chunks_len, &v->chunk_off, &c[0]) ||
        !get_varint(v->chunks, v->chunks_len, &v->chunk_off, &c[1]))
        return false;
    v->i++;
    *text = v->text + v->text_off;
    *n = c[0];
    v->text_off += c[0];
    if (!v->with_events) return true;
    for (uint32_t k = 0; k < c[1]; k++) {
        if (v->ev_off + 9 > v->events_len) return false;
        eng_tok_event *e = &ev[k];
        memcpy(&e->token, v->events + v->ev_off, 4);
        memcpy(&e->logprob, v->events + v->ev_off + 4, 4);
        uint8_t nt = v->events[v->ev_off + 8];
        v->ev_off += 9;
        if (nt > ENG_MAX_LOGPROBS || v->ev_off + (size_t)nt * 8 > v->events_len) return false;
        e->n_top = nt;
        for (int t = 0; t < nt; t++) {
            memcpy(&e->top_id[t], v->events + v->ev_off, 4);
            memcpy(&e->top_lp[t], v->events + v->ev_off + 4, 4);
            v->ev_off += 8;
        }
        (*nev)++;
    }
    return true;
}

/* ---- embeddings ---------------------------------------------------------------- */

void *eng_emb_value(const float *v, int n_embd, size_t n_tok, size_t *len) {
    size_t n = 12 + (size_t)n_embd * sizeof(float);
    uint8_t *p = malloc(n);
    if (!p) return NULL;
    uint32_t h[2] = {(uint32_t)n_embd, (uint32_t)n_tok};
    memcpy(p, EMB_MAGIC, 4);
    memcpy(p + 4, h, sizeof h);
    memcpy(p + 12, v, (size_t)n_embd * sizeof(float));
    *len = n;
    return p;
}

bool eng_emb_parse(const void *val, size_t len, int n_embd, const float **v, size_t *n_tok) {
    const uint8_t *p = val;
    if (len < 12 || memcmp(p, EMB_MAGIC, 4)) return false;
    uint32_t h[2];
    memcpy(h, p + 4, sizeof h);
    if ((int64_t)h[0] != n_embd || len != 12 + (size_t)h[0] * sizeof(float)) return false;
    *v = (const float *)(p + 12); /* malloc'd values are aligned for float */
    *n_tok = h[1];
    return true;
}

