/*
 * respcache.c — what the HTTP layer puts in the response and embedding
 * cache (src/cache): the canonical keys of requests, the recorded answer of
 * a generation (replayed on a hit), and the cached embedding of one input.
 *
 * Keys. A key is XXH3-128 over a canonical byte string: a kind tag, the
 * model instance (file name, quantization, sha256, KV type, kernel set),
 * then what changes the output and nothing else:
 *  - generation: the prompt tokens as rendered (so the API, the template
 *    and `stream` do not split the cache), the effective context and
 *    max tokens, ignore_eos, the stop strings, the logprobs count, the
 *    logit bias (sorted by token) and the penalties when any is on; and
 *    only for sampled requests (temperature > 0) temperature, top-k,
 *    top-p, min-p, typical-p, the seed and the speculative mode and draft
 *    length (they change which random numbers a sampled token uses).
 *  - embedding: the input's text (or token ids), whether it was truncated
 *    to the instance's context, and the normalization.
 * Every field is length-prefixed, so two different requests cannot make
 * the same byte string.
 *
 * Values (host byte order; an L2 store moves with its machine):
 *  - a generation record "KRS1": version, finish reason, prompt and
 *    generated token counts, then the chunks of text as the engine produced
 *    them (bytes and token events per chunk, two LEB128 varints: a streamed
 *    answer has a chunk per token, so this table must stay small), the
 *    events (token, logprob, top alternatives) when logprobs were asked
 *    for, and the text.
 *  - an embedding "KEM1": n_embd, the input's token count, the floats.
 * Parsing checks every length against the value's size, so a damaged
 * value is refused, never read past.
 */
#include "server_internal.h"

#include <stdlib.h>
#include <string.h>

#define REC_MAGIC "KRS1"
#define EMB_MAGIC "KEM1"
#define REC_HEAD 32
#define REC_VERSION 2

/* ---- keys --------------------------------------------------------------------- */

static void put_bytes(kn_buf *b, const void *p, size_t n) {
    uint64_t len = n;
    kn_buf_add(b, &len, sizeof len, 0);
    kn_buf_add(b, p, n, 0);
}
static void put_str(kn_buf *b, const char *s) { put_bytes(b, s ? s : "", s ? strlen(s) : 0); }
static void put_u64(kn_buf *b, uint64_t v) { kn_buf_add(b, &v, sizeof v, 0); }
static void put_f32(kn_buf *b, float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    put_u64(b, u);
}

static void put_instance(kn_buf *b, const char *kind, const srv_server *s, const rt_model *m) {
    put_str(b, kind);
    put_str(b, m->name);
    put_str(b, m->quant);
    put_str(b, m->sha256);
    put_str(b, s->cfg->kv_type);
    put_u64(b, (uint64_t)s->ops_level);
    put_u64(b, s->ops_vnni);
}

static int cmp_bias(const void *a, const void *b) {
    const eng_logit_bias *x = a, *y = b;
    return x->token < y->token ? -1 : x->token > y->token;
}

bool srv_cache_opt_out(struct MHD_Connection *c) {
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Cache-Control");
    return h && (strcasestr(h, "no-cache") || strcasestr(h, "no-store"));
}

bool srv_gen_cacheable(const srv_server *s, const rt_model *m, const srv_gen_req *q, struct MHD_Connection *c) {
    if (!rc_enabled(s->cache, RC_RESPONSE) || !q->cache || srv_cache_opt_out(c) || !m->sha256[0]) return false;
    return q->sp.temp <= 0.0f || q->seed_set;
}

rc_key srv_gen_key(const srv_server *s, const rt_model *m, const srv_gen_req *q, const int32_t *ids, size_t n_ids,
                   const eng_gen_params *gp, int ctx) {
    kn_buf b = {0};
    put_instance(&b, "kiln.response.2", s, m);
    put_bytes(&b, ids, n_ids * sizeof *ids);
    put_u64(&b, (uint64_t)(int64_t)ctx);
    put_u64(&b, (uint64_t)(int64_t)gp->n_predict);
    put_u64(&b, gp->ignore_eos);
    put_u64(&b, gp->n_stops);
    for (size_t i = 0; i < gp->n_stops; i++) put_str(&b, gp->stops[i]);
    put_u64(&b, (uint64_t)(int64_t)gp->n_logprobs);
    const eng_sampler_params *sp = &gp->sp;
    put_u64(&b, (uint64_t)(sp->n_bias > 0 ? sp->n_bias : 0));
    if (sp->n_bias > 0) {
        eng_logit_bias *sorted = malloc((size_t)sp->n_bias * sizeof *sorted);
        if (sorted) {
            memcpy(sorted, sp->bias, (size_t)sp->n_bias * sizeof *sorted);
            qsort(sorted, (size_t)sp->n_bias, sizeof *sorted, cmp_bias);
            for (int32_t i = 0; i < sp->n_bias; i++) {
                put_u64(&b, (uint64_t)(int64_t)sorted[i].token);
                put_f32(&b, sorted[i].bias);
            }
            free(sorted);
        } else {
            put_bytes(&b, sp->bias, (size_t)sp->n_bias * sizeof *sp->bias);
        }
    }
    bool penalties = sp->repeat_penalty != 1.0f || sp->presence_penalty != 0.0f || sp->frequency_penalty != 0.0f;
    put_u64(&b, penalties);
    if (penalties) {
        put_f32(&b, sp->repeat_penalty);
        put_f32(&b, sp->presence_penalty);
        put_f32(&b, sp->frequency_penalty);
        put_u64(&b, (uint64_t)(int64_t)sp->penalty_last_n);
    }
    bool sampled = sp->temp > 0.0f;
    put_u64(&b, sampled);
    if (sampled) {
        put_f32(&b, sp->temp);
        put_u64(&b, (uint64_t)(int64_t)sp->top_k);
        put_f32(&b, sp->top_p);
        put_f32(&b, sp->min_p);
        put_f32(&b, sp->typical_p);
        put_u64(&b, sp->seed);
        put_u64(&b, (uint64_t)(q->spec != ENG_SPEC_DEFAULT ? q->spec : s->spec_default));
        put_u64(&b, (uint64_t)(q->spec_max > 0 ? q->spec_max : s->cfg->draft_max));
        put_str(&b, s->cfg->model_draft);
    }
    rc_key k = rc_key_of(b.p ? b.p : "", b.n);
    kn_buf_free(&b);
    return k;
}

bool srv_embed_cacheable(const srv_server *s, const rt_model *m, const srv_embed_req *q, struct MHD_Connection *c) {
    return rc_enabled(s->cache, RC_EMBEDDING) && q->cache && !srv_cache_opt_out(c) && m->sha256[0];
}

rc_key srv_embed_key(const srv_server *s, const rt_model *m, const srv_embed_req *q, size_t i, bool normalize) {
    kn_buf b = {0};
    put_instance(&b, "kiln.embedding.1", s, m);
    put_u64(&b, normalize);
    put_u64(&b, q->truncate ? (uint64_t)m->n_ctx : 0);
    if (q->token_inputs) {
        put_u64(&b, 1);
        put_bytes(&b, q->token_inputs[i], q->lens[i] * sizeof **q->token_inputs);
    } else {
        put_u64(&b, 0);
        put_bytes(&b, q->texts[i], q->lens[i]);
    }
    rc_key k = rc_key_of(b.p ? b.p : "", b.n);
    kn_buf_free(&b);
    return k;
}

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

void srv_rec_chunk(srv_rec *r, const char *text, size_t n, const eng_tok_event *ev, size_t nev) {
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

void *srv_rec_finish(srv_rec *r, const eng_req_result *res, size_t *len) {
    if (r->failed || r->text.n > UINT32_MAX || r->events.n > UINT32_MAX) return NULL;
    size_t n = REC_HEAD + r->chunks.n + r->events.n + r->text.n;
    uint8_t *p = malloc(n);
    if (!p) return NULL;
    memcpy(p, REC_MAGIC, 4);
    p[4] = REC_VERSION;
    p[5] = (uint8_t)res->finish;
    p[6] = r->with_events;
    p[7] = 0;
    uint32_t h[6] = {(uint32_t)res->n_prompt, (uint32_t)res->n_gen, r->n_chunks, (uint32_t)r->chunks.n,
                     (uint32_t)r->text.n, (uint32_t)r->events.n};
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

void srv_rec_free(srv_rec *r) {
    kn_buf_free(&r->text);
    kn_buf_free(&r->chunks);
    kn_buf_free(&r->events);
}

bool srv_rec_parse(const void *val, size_t len, size_t max_ev, srv_rec_view *v) {
    const uint8_t *p = val;
    memset(v, 0, sizeof *v);
    if (len < REC_HEAD || memcmp(p, REC_MAGIC, 4) || p[4] != REC_VERSION || p[5] > ENG_FINISH_ERROR || p[6] > 1)
        return false;
    uint32_t h[6];
    memcpy(h, p + 8, sizeof h);
    v->finish = p[5];
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

bool srv_rec_next(srv_rec_view *v, const char **text, size_t *n, eng_tok_event *ev, size_t *nev) {
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

void *srv_emb_value(const float *v, int n_embd, size_t n_tok, size_t *len) {
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

bool srv_emb_parse(const void *val, size_t len, int n_embd, const float **v, size_t *n_tok) {
    const uint8_t *p = val;
    if (len < 12 || memcmp(p, EMB_MAGIC, 4)) return false;
    uint32_t h[2];
    memcpy(h, p + 4, sizeof h);
    if ((int64_t)h[0] != n_embd || len != 12 + (size_t)h[0] * sizeof(float)) return false;
    *v = (const float *)(p + 12); /* malloc'd values are aligned for float */
    *n_tok = h[1];
    return true;
}

/* ---- /cache/stats and /cache/clear ------------------------------------------------- */

static json_t *stats_json(const rc_stats *st, bool l2) {
    uint64_t looked = st->hits + st->misses;
    json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:f, s:I, s:I}", "entries", (json_int_t)st->entries, "bytes",
                          (json_int_t)st->bytes, "hits", (json_int_t)st->hits, "misses", (json_int_t)st->misses,
                          "hit_rate", looked ? (double)st->hits / (double)looked : 0.0, "evictions",
                          (json_int_t)st->evictions, "expirations", (json_int_t)st->expirations);
    if (l2) {
        json_object_set_new(o, "corrupt", json_integer((json_int_t)st->corrupt));
        json_object_set_new(o, "dropped", json_integer((json_int_t)st->dropped));
    }
    return o;
}

enum MHD_Result srv_h_cache_stats(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    (void)cx;
    json_t *out = json_object();
    for (int tier = 0; tier < 2; tier++) {
        json_t *t = json_object();
        for (int ty = 0; ty < RC_NTYPES; ty++) {
            rc_stats st;
            rc_stats_get(s->cache, tier ? RC_TIER_L2 : RC_TIER_L1, (rc_type)ty, &st);
            json_object_set_new(t, rc_type_name((rc_type)ty), stats_json(&st, tier == 1));
        }
        json_object_set_new(out, tier ? "l2" : "l1", t);
    }
    json_object_set_new(out, "enabled", json_pack("{s:b, s:b}", "response", rc_enabled(s->cache, RC_RESPONSE),
                                                  "embedding", rc_enabled(s->cache, RC_EMBEDDING)));
    json_object_set_new(out, "policy", json_string(s->cfg->cache_policy ? s->cfg->cache_policy : "lru"));
    json_object_set_new(out, "l1_entry_overhead_bytes", json_integer((json_int_t)rc_l1_entry_cost(0)));
    return srv_send_json(c, 200, out);
}

enum MHD_Result srv_h_cache_clear(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    srv_error e;
    json_t *root = NULL;
    bool all = true, l1 = true, l2 = true;
    rc_type type = RC_RESPONSE;
    uint64_t tag = 0;
    const char *model = NULL;
    if (cx->body.n) {
        if (!(root = srv_parse_json(cx->body.p, cx->body.n, s->lim.json_depth, &e)))
            return srv_send_error(c, &e, false);
        if (!json_is_object(root)) {
            srv_err(&e, 400, NULL, "invalid_type", "the body must be a JSON object");
            goto fail;
        }
        json_t *t = json_object_get(root, "type"), *m = json_object_get(root, "model"),
               *ti = json_object_get(root, "tier");
        if (t && !json_is_null(t)) {
            const char *ts = json_string_value(t);
            if (!ts || (strcmp(ts, "all") && !rc_type_parse(ts, &type))) {
                srv_err(&e, 400, "type", "invalid_value", "'type' must be \"response\", \"embedding\" or \"all\"");
                goto fail;
            }
            all = !strcmp(ts, "all");
        }
        if (ti && !json_is_null(ti)) {
            const char *ts = json_string_value(ti);
            if (!ts || (strcmp(ts, "all") && strcmp(ts, "l1") && strcmp(ts, "l2"))) {
                srv_err(&e, 400, "tier", "invalid_value", "'tier' must be \"l1\", \"l2\" or \"all\"");
                goto fail;
            }
            l1 = strcmp(ts, "l2") != 0;
            l2 = strcmp(ts, "l1") != 0;
        }
        if (m && !json_is_null(m)) {
            if (!(model = json_string_value(m))) {
                srv_err(&e, 400, "model", "invalid_type", "'model' must be a string");
                goto fail;
            }
            rt_entry_info info;
            kn_err err = {0};
            if (rt_lookup(s->reg, model, &info, &err) != KN_OK) {
                srv_err(&e, 404, "model", "model_not_found", "%s", err.msg);
                goto fail;
            }
            tag = rc_model_tag(info.id);
        }
    }
    uint64_t n = rc_clear(s->cache, all, type, tag, l1, l2);
    KN_INFO("cache: cleared %llu entries (type %s, model %s, tier %s)", (unsigned long long)n,
            all ? "all" : rc_type_name(type), model ? model : "all", l1 && l2 ? "all" : l1 ? "l1" : "l2");
    json_decref(root);
    return srv_send_json(c, 200, json_pack("{s:I}", "cleared", (json_int_t)n));
fail:
    json_decref(root);
    return srv_send_error(c, &e, false);
}
