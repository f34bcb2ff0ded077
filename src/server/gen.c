/*
 * gen.c — the generation routes (/v1/chat/completions, /v1/completions,
 * /api/generate, /api/chat) and the embedding routes (/v1/embeddings,
 * /api/embed): request -> prompt tokens -> engine request, then either one
 * JSON answer or a stream (SSE for OpenAI, NDJSON for Ollama) fed token by
 * token from the engine's output ring.
 */
#include "server_internal.h"

#include "../tokenizer/tok_chat.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EV_BATCH 64

typedef struct gen_job {
    srv_server *s;
    rt_model *m;
    eng_req *r;
    srv_api api;
    struct MHD_Connection *c;
    bool stream, include_usage, echo;
    int n_logprobs;
    char id[48];
    time_t created;
    double t0, load_s;
    char *echo_text;
    size_t echo_len;
    /* output being formatted (stream) */
    kn_buf out;
    size_t out_off;
    bool started, sent_final;
    /* text read from the engine; an incomplete UTF-8 tail is held */
    char text[8192];
    size_t held;
    eng_tok_event ev[EV_BATCH];
    eng_req_result res;
    size_t text_offset; /* completions logprobs: bytes of text so far */
    /* accumulated answer (non-stream) */
    kn_buf acc;
    json_t *lp_acc; /* logprobs entries (non-stream) */
    json_t *lp_tokens, *lp_token_lps, *lp_tops, *lp_offsets; /* completions */
    /* the response cache */
    const char *xcache;   /* the X-Cache header: hit, miss or bypass */
    double t_arrival;     /* cx->t0, for Server-Timing */
    void *hit_val;        /* a hit: the cached record (owned), replayed through rv */
    srv_rec_view rv;
    bool recording;       /* a miss: the answer is recorded and stored when it finishes */
    srv_rec rec;
    rc_key key;
    uint64_t tag;
    bool log_text;        /* --log-prompts: the completion is logged when it ends */
    kn_buf logged;        /* a stream's text so far, for that log line */
} gen_job;

/* --log-prompts caps each logged text at this many bytes. */
#define LOG_TEXT_MAX 65536

static void log_completion(gen_job *j, const char *text, size_t n) {
    if (!j->log_text) return;
    j->log_text = false;
    KN_INFO("%s: completion (%zu bytes%s): %.*s", j->id, n, n > LOG_TEXT_MAX ? ", truncated" : "",
            (int)(n > LOG_TEXT_MAX ? LOG_TEXT_MAX : n), text ? text : "");
}

static bool is_ollama(srv_api a) { return a == SRV_API_OLLAMA_GENERATE || a == SRV_API_OLLAMA_CHAT; }
static bool is_chat(srv_api a) { return a == SRV_API_OPENAI_CHAT || a == SRV_API_OLLAMA_CHAT; }

static void job_free(gen_job *j) {
    if (!j) return;
    eng_req_release(j->r);
    if (j->m) rt_release(j->s->reg, j->m);
    free(j->echo_text);
    kn_buf_free(&j->out);
    kn_buf_free(&j->acc);
    json_decref(j->lp_acc);
    json_decref(j->lp_tokens);
    json_decref(j->lp_token_lps);
    json_decref(j->lp_tops);
    json_decref(j->lp_offsets);
    free(j->hit_val);
    srv_rec_free(&j->rec);
    kn_buf_free(&j->logged);
    free(j);
}

/* X-Cache and Server-Timing, as name/value pairs for srv_send_json_h
 * (timing is the caller's buffer). */
static void cache_headers(const gen_job *j, const char *hdrs[5], char *timing, size_t cap) {
    snprintf(timing, cap, "total;dur=%.3f", (kn_now_s() - j->t_arrival) * 1e3);
    hdrs[0] = "X-Cache";
    hdrs[1] = j->xcache;
    hdrs[2] = "Server-Timing";
    hdrs[3] = timing;
    hdrs[4] = NULL;
}

/* ---- logprobs ------------------------------------------------------------- */

static json_t *bytes_json(const char *p, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_integer((unsigned char)p[i]));
    return a;
}

static json_t *tok_entry(const tok_vocab *v, int32_t id, float lp, bool with_bytes) {
    size_t n = 0;
    const char *p = tok_token_piece(v, id, true, &n);
    json_t *o = json_pack("{s:o, s:f}", "token", srv_json_text(p, n), "logprob", (double)lp);
    if (with_bytes) json_object_set_new(o, "bytes", bytes_json(p, n));
    return o;
}

/* Chat: logprobs.content entries for these events. */
static json_t *chat_lp_entries(const gen_job *j, const eng_tok_event *ev, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *o = tok_entry(j->m->vocab, ev[i].token, ev[i].logprob, true);
        json_t *tops = json_array();
        for (int k = 0; k < ev[i].n_top; k++)
            json_array_append_new(tops, tok_entry(j->m->vocab, ev[i].top_id[k], ev[i].top_lp[k], true));
        json_object_set_new(o, "top_logprobs", tops);
        json_array_append_new(a, o);
    }
    return a;
}

/* Completions: the legacy {tokens, token_logprobs, top_logprobs, text_offset}
 * arrays, appended to. */
static void comp_lp_append(gen_job *j, const eng_tok_event *ev, size_t n, json_t *tokens, json_t *lps, json_t *tops,
                           json_t *offs) {
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        const char *p = tok_token_piece(j->m->vocab, ev[i].token, true, &len);
        json_array_append_new(tokens, srv_json_text(p, len));
        json_array_append_new(lps, json_real(ev[i].logprob));
        json_t *t = json_object();
        for (int k = 0; k < ev[i].n_top; k++) {
            size_t tl = 0;
            const char *tp = tok_token_piece(j->m->vocab, ev[i].top_id[k], true, &tl);
            json_t *key = srv_json_text(tp, tl);
            if (key) json_object_set_new(t, json_string_value(key), json_real(ev[i].top_lp[k]));
            json_decref(key);
        }
        json_array_append_new(tops, t);
        json_array_append_new(offs, json_integer((json_int_t)j->text_offset));
        j->text_offset += len;
    }
}

/* ---- formatting ------------------------------------------------------------- */

static void out_json(gen_job *j, json_t *o) {
    if (!o) return;
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(o);
    if (!s) return;
    if (is_ollama(j->api)) {
        kn_buf_add(&j->out, s, strlen(s), 0);
        kn_buf_add(&j->out, "\n", 1, 0);
    } else {
        kn_buf_add(&j->out, "data: ", 6, 0);
        kn_buf_add(&j->out, s, strlen(s), 0);
        kn_buf_add(&j->out, "\n\n", 2, 0);
    }
    free(s);
}

static json_t *usage_json(const gen_job *j) {
    const eng_req_result *r = &j->res;
    json_t *u = json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)r->n_prompt, "completion_tokens",
                          (json_int_t)r->n_gen, "total_tokens", (json_int_t)(r->n_prompt + r->n_gen));
    if (j->hit_val) json_object_set_new(u, "cached", json_true());
    return u;
}

static json_t *openai_chunk(gen_job *j, json_t *choice) {
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:s, s:[o]}", "id", j->id, "object",
                          is_chat(j->api) ? "chat.completion.chunk" : "text_completion", "created",
                          (json_int_t)j->created, "model", j->m->id, "system_fingerprint", "kiln-" KILN_VERSION,
                          "choices", choice);
    if (j->include_usage) json_object_set_new(o, "usage", json_null());
    return o;
}

static void ollama_durations(gen_job *j, json_t *o) {
    const eng_req_result *r = &j->res;
    double now = kn_now_s();
    double pe = r->t_first > 0 && r->t_start > 0 ? r->t_first - r->t_start : 0;
    double ev = r->t_end > 0 && r->t_first > 0 ? r->t_end - r->t_first : 0;
    json_object_set_new(o, "total_duration", json_integer((json_int_t)((now - j->t0) * 1e9)));
    json_object_set_new(o, "load_duration", json_integer((json_int_t)(j->load_s * 1e9)));
    json_object_set_new(o, "prompt_eval_count", json_integer((json_int_t)r->n_prompt));
    json_object_set_new(o, "prompt_eval_duration", json_integer((json_int_t)(pe * 1e9)));
    json_object_set_new(o, "eval_count", json_integer((json_int_t)r->n_gen));
    json_object_set_new(o, "eval_duration", json_integer((json_int_t)(ev * 1e9)));
}

static json_t *ollama_obj(gen_job *j, const char *text, size_t n, bool done) {
    char ts[32];
    srv_iso_time(time(NULL), ts, sizeof ts);
    json_t *o = json_pack("{s:s, s:s}", "model", j->m->id, "created_at", ts);
    if (j->api == SRV_API_OLLAMA_CHAT)
        json_object_set_new(o, "message", json_pack("{s:s, s:o}", "role", "assistant", "content", srv_json_text(text, n)));
    else
        json_object_set_new(o, "response", srv_json_text(text, n));
    json_object_set_new(o, "done", json_boolean(done));
    return o;
}

/* A piece of generated text (and its tokens' logprobs) for a stream. */
static void stream_delta(gen_job *j, const char *text, size_t n, const eng_tok_event *ev, size_t nev) {
    if (is_ollama(j->api)) {
        if (n) out_json(j, ollama_obj(j, text, n, false));
        return;
    }
    json_t *choice;
    if (j->api == SRV_API_OPENAI_CHAT) {
        choice = json_pack("{s:i, s:{s:o}, s:n}", "index", 0, "delta", "content", srv_json_text(text, n),
                           "finish_reason");
        json_object_set_new(choice, "logprobs",
                            j->n_logprobs >= 0 ? json_pack("{s:o}", "content", chat_lp_entries(j, ev, nev)) : json_null());
    } else {
        choice = json_pack("{s:i, s:o, s:n}", "index", 0, "text", srv_json_text(text, n), "finish_reason");
        if (j->n_logprobs >= 0) {
            json_t *t = json_array(), *l = json_array(), *p = json_array(), *o = json_array();
            comp_lp_append(j, ev, nev, t, l, p, o);
            json_object_set_new(choice, "logprobs",
                                json_pack("{s:o, s:o, s:o, s:o}", "tokens", t, "token_logprobs", l, "top_logprobs", p,
                                          "text_offset", o));
        } else {
            json_object_set_new(choice, "logprobs", json_null());
        }
    }
    out_json(j, openai_chunk(j, choice));
}

static void stream_error(gen_job *j) {
    srv_error e;
    srv_err(&e, j->res.status == KN_EBUSY ? 503 : 500, NULL, NULL, "%s",
            j->res.err[0] ? j->res.err : "generation failed");
    out_json(j, srv_error_json(&e, is_ollama(j->api)));
}

static void stream_final(gen_job *j) {
    const char *fin = eng_finish_name(j->res.finish);
    if (j->res.finish == ENG_FINISH_ERROR) stream_error(j);
    if (is_ollama(j->api)) {
        if (j->res.finish != ENG_FINISH_ERROR) {
            json_t *o = ollama_obj(j, "", 0, true);
            json_object_set_new(o, "done_reason", json_string(fin));
            ollama_durations(j, o);
            out_json(j, o);
        }
        return;
    }
    if (j->res.finish != ENG_FINISH_ERROR) {
        json_t *choice = j->api == SRV_API_OPENAI_CHAT
                             ? json_pack("{s:i, s:{}, s:n, s:s}", "index", 0, "delta", "logprobs", "finish_reason", fin)
                             : json_pack("{s:i, s:s, s:n, s:s}", "index", 0, "text", "", "logprobs", "finish_reason", fin);
        out_json(j, openai_chunk(j, choice));
        if (j->include_usage) {
            json_t *u = json_pack("{s:s, s:s, s:I, s:s, s:s, s:[], s:o}", "id", j->id, "object",
                                  is_chat(j->api) ? "chat.completion.chunk" : "text_completion", "created",
                                  (json_int_t)j->created, "model", j->m->id, "system_fingerprint",
                                  "kiln-" KILN_VERSION, "choices", "usage", usage_json(j));
            out_json(j, u);
        }
    }
    kn_buf_add(&j->out, "data: [DONE]\n\n", 14, 0);
}

/* Formats a piece of the answer (stream) or accumulates it. */
static void consume(gen_job *j, const char *text, size_t n, const eng_tok_event *ev, size_t nev) {
    if (!n && !nev) return;
    if (j->recording) srv_rec_chunk(&j->rec, text, n, ev, nev);
    if (j->log_text && j->stream && j->logged.n < LOG_TEXT_MAX + 1) kn_buf_add(&j->logged, text, n, 0);
    if (j->stream) {
        stream_delta(j, text, n, ev, nev);
        return;
    }
    kn_buf_add(&j->acc, text, n, 0);
    if (j->n_logprobs >= 0) {
        if (j->api == SRV_API_OPENAI_CHAT) {
            json_t *more = chat_lp_entries(j, ev, nev);
            json_array_extend(j->lp_acc, more);
            json_decref(more);
        } else {
            comp_lp_append(j, ev, nev, j->lp_tokens, j->lp_token_lps, j->lp_tops, j->lp_offsets);
        }
    }
}

/* A hit: the next recorded chunk, then the recorded result. */
static bool replay(gen_job *j) {
    const char *text = NULL;
    size_t n = 0, nev = 0;
    if (srv_rec_next(&j->rv, &text, &n, j->ev, &nev)) {
        consume(j, text, n, j->ev, nev);
        return false;
    }
    double now = kn_now_s();
    j->res = (eng_req_result){.finish = (eng_finish)j->rv.finish, .status = KN_OK, .n_prompt = j->rv.n_prompt,
                              .n_gen = j->rv.n_gen, .t_submit = now, .t_start = now, .t_first = now, .t_end = now};
    return true;
}

/* A miss that finished well: its record goes to the cache. */
static void store_answer(gen_job *j) {
    j->recording = false;
    if (j->res.finish != ENG_FINISH_STOP && j->res.finish != ENG_FINISH_LENGTH) return;
    size_t len = 0;
    void *v = srv_rec_finish(&j->rec, &j->res, &len);
    if (v) rc_store(j->s->cache, RC_RESPONSE, j->tag, j->key, v, len);
    free(v);
}

/* Reads what the engine has (waiting up to timeout_ms) and formats it or
 * accumulates it. Returns true once the request is finished. */
static bool pump(gen_job *j, int timeout_ms) {
    if (j->hit_val) return replay(j);
    size_t tl = 0, nev = 0;
    bool done = eng_req_read(j->r, timeout_ms, j->text + j->held, sizeof j->text - j->held, &tl,
                             j->n_logprobs >= 0 ? j->ev : NULL, EV_BATCH, &nev, &j->res);
    size_t total = j->held + tl;
    size_t ready = done ? total : srv_utf8_complete(j->text, total);
    consume(j, j->text, ready, j->ev, nev);
    memmove(j->text, j->text + ready, total - ready);
    j->held = total - ready;
    if (done && j->recording) store_answer(j);
    return done;
}

/* ---- streaming response ---------------------------------------------------------- */

static void stream_start(gen_job *j) {
    j->started = true;
    if (j->api == SRV_API_OPENAI_CHAT) {
        json_t *choice = json_pack("{s:i, s:{s:s, s:s}, s:n, s:n}", "index", 0, "delta", "role", "assistant",
                                   "content", "", "logprobs", "finish_reason");
        out_json(j, openai_chunk(j, choice));
    }
    if (j->echo && j->echo_len) stream_delta(j, j->echo_text, j->echo_len, NULL, 0);
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    gen_job *j = cls;
    if (!j->started) stream_start(j);
    srv_working(j->c); /* waiting for tokens is not idling */
    for (;;) {
        if (j->out_off < j->out.n) {
            size_t n = j->out.n - j->out_off < max ? j->out.n - j->out_off : max;
            memcpy(buf, j->out.p + j->out_off, n);
            j->out_off += n;
            srv_sending(j->c); /* a client that stops reading is cut off after the send timeout */
            return (ssize_t)n;
        }
        if (j->sent_final) return MHD_CONTENT_READER_END_OF_STREAM;
        j->out.n = j->out_off = 0;
        if (pump(j, 100)) {
            stream_final(j);
            j->sent_final = true;
            log_completion(j, j->logged.p, j->logged.n);
        }
        if (j->out.n == 0 && srv_client_gone(j->c)) {
            KN_INFO("%s: the client went away mid-stream; request cancelled", j->id);
            if (j->r) eng_req_cancel(j->r);
            j->recording = false;
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
}

static void stream_free(void *cls) { job_free(cls); }

static enum MHD_Result respond_stream(gen_job *j) {
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, j, stream_free);
    if (!resp) {
        job_free(j);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", is_ollama(j->api) ? "application/x-ndjson" : "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    const char *hdrs[5];
    char timing[48];
    cache_headers(j, hdrs, timing, sizeof timing);
    for (int i = 0; hdrs[i]; i += 2) MHD_add_response_header(resp, hdrs[i], hdrs[i + 1]);
    enum MHD_Result ret = srv_queue(j->c, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- whole response ------------------------------------------------------------- */

static enum MHD_Result respond_whole(gen_job *j) {
    bool done = false;
    if (j->echo && j->echo_len) kn_buf_add(&j->acc, j->echo_text, j->echo_len, 0);
    while (!done) {
        done = pump(j, 200);
        if (!done && srv_client_gone(j->c)) {
            KN_INFO("%s: the client went away; request cancelled", j->id);
            if (j->r) eng_req_cancel(j->r);
            job_free(j);
            return MHD_NO;
        }
    }
    srv_error e;
    bool oll = is_ollama(j->api);
    if (j->res.finish == ENG_FINISH_ERROR || j->res.finish == ENG_FINISH_CANCELLED) {
        if (j->res.finish == ENG_FINISH_CANCELLED)
            srv_err(&e, 503, NULL, "cancelled", "the request was cancelled: %s",
                    j->res.err[0] ? j->res.err : "the server is shutting down");
        else
            srv_err(&e, j->res.status == KN_EBUSY ? 503 : 500, NULL, NULL, "%s",
                    j->res.err[0] ? j->res.err : "generation failed");
        struct MHD_Connection *c = j->c;
        job_free(j);
        return srv_send_error(c, &e, oll);
    }
    const char *fin = eng_finish_name(j->res.finish);
    json_t *o;
    const char *text = j->acc.p ? j->acc.p : "";
    log_completion(j, text, j->acc.n);
    if (oll) {
        o = ollama_obj(j, text, j->acc.n, true);
        json_object_set_new(o, "done_reason", json_string(fin));
        ollama_durations(j, o);
    } else {
        json_t *choice;
        json_t *lp = json_null();
        if (j->n_logprobs >= 0) {
            json_decref(lp);
            if (j->api == SRV_API_OPENAI_CHAT) {
                lp = json_pack("{s:O}", "content", j->lp_acc);
            } else {
                lp = json_pack("{s:O, s:O, s:O, s:O}", "tokens", j->lp_tokens, "token_logprobs", j->lp_token_lps,
                               "top_logprobs", j->lp_tops, "text_offset", j->lp_offsets);
            }
        }
        if (j->api == SRV_API_OPENAI_CHAT)
            choice = json_pack("{s:i, s:{s:s, s:o}, s:o, s:s}", "index", 0, "message", "role", "assistant", "content",
                               srv_json_text(text, j->acc.n), "logprobs", lp, "finish_reason", fin);
        else
            choice = json_pack("{s:i, s:o, s:o, s:s}", "index", 0, "text", srv_json_text(text, j->acc.n), "logprobs",
                               lp, "finish_reason", fin);
        o = json_pack("{s:s, s:s, s:I, s:s, s:s, s:[o], s:o}", "id", j->id, "object",
                      j->api == SRV_API_OPENAI_CHAT ? "chat.completion" : "text_completion", "created",
                      (json_int_t)j->created, "model", j->m->id, "system_fingerprint", "kiln-" KILN_VERSION,
                      "choices", choice, "usage", usage_json(j));
    }
    struct MHD_Connection *c = j->c;
    const char *hdrs[5];
    char timing[48];
    cache_headers(j, hdrs, timing, sizeof timing);
    job_free(j);
    return srv_send_json_h(c, 200, o, hdrs);
}

/* ---- request -> engine --------------------------------------------------------- */

static json_t *ollama_generate_messages(const srv_gen_req *q) {
    json_t *a = json_array();
    if (q->system && *q->system) json_array_append_new(a, json_pack("{s:s, s:s}", "role", "system", "content", q->system));
    json_array_append_new(a, json_pack("{s:s, s:s%}", "role", "user", "content", q->prompt, q->prompt_len));
    return a;
}

static enum MHD_Result handle_gen(srv_server *s, struct MHD_Connection *c, conn_ctx *cx, srv_api api) {
    bool oll = is_ollama(api);
    srv_error e;
    srv_gen_req q;
    memset(&q, 0, sizeof q);
    rt_model *m = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    gen_job *j = NULL;
    double t0 = kn_now_s();
    json_t *root = srv_parse_json(cx->body.p, cx->body.n, s->lim.json_depth, &e);
    if (!root) return srv_send_error(c, &e, oll);
    if (!srv_parse_gen(api, root, &s->lim, &q, &e)) goto fail;
    /* num_ctx above the default instance's context asks for an instance of its own */
    rt_acquire_opts ao = {.n_ctx = q.num_ctx, .keep_alive_s = q.keep_alive_s, .touch = true};
    if (!srv_acquire_model(s, q.model, &ao, &m, &e)) goto fail;
    cx->model = m->id;
    double load_s = kn_now_s() - t0;
    if (model_is_encoder(m->m)) {
        srv_err(&e, 400, "model", "embedding_model",
                "model %s:%s is an embedding model; it serves /v1/embeddings and /api/embed, not generation", m->name,
                m->quant);
        goto fail;
    }

    /* Ollama: an empty generate prompt only loads the model */
    if (api == SRV_API_OLLAMA_GENERATE && q.prompt_len == 0 && !(q.system && *q.system)) {
        char ts[32];
        srv_iso_time(time(NULL), ts, sizeof ts);
        json_t *o = json_pack("{s:s, s:s, s:s, s:b, s:s}", "model", m->id, "created_at", ts, "response", "", "done",
                              1, "done_reason", "load");
        rt_release(s->reg, m);
        srv_gen_req_free(&q);
        json_decref(root);
        return srv_send_json(c, 200, o);
    }

    /* prompt tokens */
    kn_err err = {0};
    kn_status st;
    if (is_chat(api) || (api == SRV_API_OLLAMA_GENERATE && !q.raw)) {
        if (!m->chat) {
            srv_err(&e, 400, "messages", "no_chat_template", "model '%s' has no usable chat template: %s", m->name,
                    m->chat_err);
            goto fail;
        }
        json_t *msgs = api == SRV_API_OLLAMA_GENERATE ? ollama_generate_messages(&q) : json_incref(q.messages);
        st = tok_chat_tokenize(m->chat, msgs, q.tools, &ids, &n_ids, &err);
        json_decref(msgs);
        if (st != KN_OK) {
            srv_err(&e, 400, "messages", "template_error", "the chat template failed: %s", err.msg);
            goto fail;
        }
    } else if (q.prompt_tokens) {
        ids = malloc(q.n_prompt_tokens * sizeof *ids);
        if (!ids) {
            srv_err(&e, 500, NULL, NULL, "out of memory");
            goto fail;
        }
        memcpy(ids, q.prompt_tokens, q.n_prompt_tokens * sizeof *ids);
        n_ids = q.n_prompt_tokens;
    } else {
        st = tok_encode_alloc(m->vocab, q.prompt, q.prompt_len, q.add_special, true, &ids, &n_ids, &err);
        if (st != KN_OK) {
            srv_err(&e, 400, "prompt", NULL, "cannot tokenize the prompt: %s", err.msg);
            goto fail;
        }
    }
    if (n_ids == 0) {
        srv_err(&e, 400, is_chat(api) ? "messages" : "prompt", "empty_prompt", "the prompt is empty");
        goto fail;
    }
    /* context: the instance's, or a smaller num_ctx */
    int ctx = m->n_ctx;
    if (q.num_ctx > 0 && q.num_ctx < ctx) ctx = q.num_ctx;
    if (n_ids >= (size_t)ctx) {
        srv_err(&e, 400, is_chat(api) ? "messages" : "prompt", "context_length_exceeded",
                "the prompt has %zu tokens, but the context holds %d (prompt and generated tokens together); "
                "shorten the prompt or raise the context size (-c)",
                n_ids, ctx);
        goto fail;
    }
    eng_gen_params gp = {.sp = q.sp, .n_predict = q.n_predict_set ? q.n_predict : s->cfg->max_tokens,
                         .ignore_eos = q.ignore_eos, .stops = q.stops, .n_stops = q.n_stops,
                         .n_logprobs = q.n_logprobs, .t_origin = cx->t0, .spec = q.spec,
                         .spec_max = q.spec_max, .stall_timeout_s = s->cfg->send_timeout_s};
    if (ctx < m->n_ctx) {
        int32_t room = (int32_t)((size_t)ctx - n_ids);
        if (gp.n_predict < 0 || gp.n_predict > room) gp.n_predict = room;
    }
    /* --limit-max-tokens also caps a generation that asked for no limit */
    if (gp.n_predict < 0 || gp.n_predict > s->lim.max_tokens) gp.n_predict = s->lim.max_tokens;
    unsigned long long seq = atomic_fetch_add(&s->seq, 1) + 1;
    if (!q.seed_set) gp.sp.seed = kn_now_ns() ^ (seq * 0x9E3779B97F4A7C15ull);

    j = calloc(1, sizeof *j);
    if (!j) {
        srv_err(&e, 500, NULL, NULL, "out of memory");
        goto fail;
    }
    j->s = s;
    j->api = api;
    j->c = c;
    j->stream = q.stream;
    j->include_usage = q.include_usage;
    j->n_logprobs = q.n_logprobs;
    j->created = time(NULL);
    j->t0 = t0;
    j->load_s = load_s;
    snprintf(j->id, sizeof j->id, "%s-%llu%06llu", is_chat(api) ? "chatcmpl" : "cmpl", (unsigned long long)j->created,
             seq % 1000000);
    if (j->n_logprobs >= 0) {
        j->lp_acc = json_array();
        j->lp_tokens = json_array();
        j->lp_token_lps = json_array();
        j->lp_tops = json_array();
        j->lp_offsets = json_array();
    }
    if (q.echo && api == SRV_API_OPENAI_COMPLETION) {
        j->echo = true;
        if (q.prompt_tokens) {
            tok_decoder_opts o = {.special = true, .strip_space = false, .replace_invalid = true};
            if (tok_decode_all(m->vocab, q.prompt_tokens, q.n_prompt_tokens, &o, &j->echo_text, &j->echo_len, &err) !=
                KN_OK)
                j->echo_len = 0;
        } else if ((j->echo_text = malloc(q.prompt_len + 1))) {
            memcpy(j->echo_text, q.prompt, q.prompt_len);
            j->echo_len = q.prompt_len;
        }
        j->text_offset = j->echo_len;
    }
    j->t_arrival = cx->t0;
    if (s->cfg->log_prompts) { /* off by default: logs carry no request text */
        j->log_text = true;
        char *pj = q.messages ? json_dumps(q.messages, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
        const char *pt = pj ? pj : q.prompt ? q.prompt : "";
        size_t pn = pj ? strlen(pj) : q.prompt ? q.prompt_len : 0;
        KN_INFO("%s: %s (%zu bytes%s): %.*s", j->id, pj ? "messages" : "prompt", pn,
                pn > LOG_TEXT_MAX ? ", truncated" : "", (int)(pn > LOG_TEXT_MAX ? LOG_TEXT_MAX : pn), pt);
        free(pj);
    }
    j->xcache = SRV_XC_BYPASS;
    if (srv_gen_cacheable(s, m, &q, c)) {
        j->key = srv_gen_key(s, m, &q, ids, n_ids, &gp, ctx);
        j->tag = rc_model_tag(m->id);
        void *val = NULL;
        size_t len = 0;
        if (rc_lookup(s->cache, RC_RESPONSE, j->tag, j->key, &val, &len) != RC_TIER_NONE) {
            if (srv_rec_parse(val, len, EV_BATCH, &j->rv)) {
                j->hit_val = val;
                j->xcache = SRV_XC_HIT;
            } else {
                KN_WARN("%s: a cached answer is not a well-formed record; computing it again", j->id);
                free(val);
            }
        }
        if (!j->hit_val) {
            j->xcache = SRV_XC_MISS;
            j->recording = true;
            j->rec.with_events = q.n_logprobs >= 0;
        }
    }
    if (j->hit_val) { /* served from the cache: the engine is not involved */
        j->m = m;
        free(ids);
        srv_gen_req_free(&q);
        json_decref(root);
        return j->stream ? respond_stream(j) : respond_whole(j);
    }
    st = eng_req_create_gen(m->sched, ids, n_ids, &gp, &j->r, &err);
    if (st != KN_OK) {
        srv_err(&e, st == KN_ENOMEM ? 500 : 400, NULL, NULL, "%s", err.msg);
        goto fail;
    }
    st = eng_sched_submit(m->sched, j->r, &err);
    if (st != KN_OK) {
        srv_err(&e, 503, NULL, st == KN_EBUSY ? "overloaded" : "shutting_down", "%s", err.msg);
        goto fail;
    }
    j->m = m;
    m = NULL;
    free(ids);
    srv_gen_req_free(&q);
    json_decref(root);
    return j->stream ? respond_stream(j) : respond_whole(j);
fail:
    job_free(j);
    free(ids);
    if (m) rt_release(s->reg, m);
    srv_gen_req_free(&q);
    json_decref(root);
    return srv_send_error(c, &e, oll);
}

enum MHD_Result srv_h_chat(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    return handle_gen(s, c, cx, SRV_API_OPENAI_CHAT);
}
enum MHD_Result srv_h_completions(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    return handle_gen(s, c, cx, SRV_API_OPENAI_COMPLETION);
}
enum MHD_Result srv_h_ollama_generate(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    return handle_gen(s, c, cx, SRV_API_OLLAMA_GENERATE);
}
enum MHD_Result srv_h_ollama_chat(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    return handle_gen(s, c, cx, SRV_API_OLLAMA_CHAT);
}

/* ---- embeddings ---------------------------------------------------------------- */

static json_t *vec_json(const float *v, int n, bool base64) {
    if (base64) {
        size_t bytes = (size_t)n * sizeof(float);
        unsigned char *enc = malloc(4 * ((bytes + 2) / 3) + 1);
        if (!enc) return NULL;
        EVP_EncodeBlock(enc, (const unsigned char *)v, (int)bytes); /* little-endian float32, as OpenAI's */
        json_t *s = json_string((const char *)enc);
        free(enc);
        return s;
    }
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_real(v[i]));
    return a;
}

/* An embedding request: the inputs found in the cache are served from it,
 * the others are tokenized and embedded in one engine request, then
 * stored. The answer lists every input's vector in order. */
static enum MHD_Result handle_embed(srv_server *s, struct MHD_Connection *c, conn_ctx *cx, bool oll) {
    srv_error e;
    srv_embed_req q;
    memset(&q, 0, sizeof q);
    rt_model *m = NULL;
    eng_req *r = NULL;
    int32_t **toks = NULL;   /* [n_miss] */
    size_t *lens = NULL;     /* [n_miss] */
    size_t *miss = NULL;     /* [n_miss] input index of each miss */
    void **hit = NULL;       /* [q.n] cached value of a hit, NULL for a miss */
    const float **hit_v = NULL; /* [q.n] its vector */
    size_t *hit_nt = NULL;   /* [q.n] its token count */
    rc_key *keys = NULL;     /* [q.n] */
    json_t *out = NULL;
    const char *hdrs[7] = {0};
    char timing[48], hits[48];
    size_t n_miss = 0, n_hit = 0;
    const bool normalize = true;
    double t0 = kn_now_s();
    json_t *root = srv_parse_json(cx->body.p, cx->body.n, s->lim.json_depth, &e);
    if (!root) return srv_send_error(c, &e, oll);
    if (!srv_parse_embed(oll, root, &s->lim, &q, &e)) goto fail;
    rt_acquire_opts ao = {.n_ctx = 0, .keep_alive_s = q.keep_alive_s, .touch = true};
    if (!srv_acquire_model(s, q.model, &ao, &m, &e)) goto fail;
    cx->model = m->id;
    double load_s = kn_now_s() - t0;
    const int n_embd = m->m->hp.n_embd;
    toks = calloc(q.n, sizeof *toks);
    lens = calloc(q.n, sizeof *lens);
    miss = calloc(q.n, sizeof *miss);
    hit = calloc(q.n, sizeof *hit);
    keys = calloc(q.n, sizeof *keys);
    hit_v = calloc(q.n, sizeof *hit_v);
    hit_nt = calloc(q.n, sizeof *hit_nt);
    if (!toks || !lens || !miss || !hit || !keys || !hit_v || !hit_nt) {
        srv_err(&e, 500, NULL, NULL, "out of memory");
        goto fail;
    }
    bool cacheable = srv_embed_cacheable(s, m, &q, c);
    uint64_t tag = rc_model_tag(m->id);
    for (size_t i = 0; i < q.n; i++) {
        if (cacheable) {
            keys[i] = srv_embed_key(s, m, &q, i, normalize);
            void *val = NULL;
            size_t len = 0;
            if (rc_lookup(s->cache, RC_EMBEDDING, tag, keys[i], &val, &len) != RC_TIER_NONE) {
                if (srv_emb_parse(val, len, n_embd, &hit_v[i], &hit_nt[i])) {
                    hit[i] = val;
                    n_hit++;
                    continue;
                }
                KN_WARN("%s: a cached embedding is not well-formed; computing it again", m->id);
                free(val);
            }
        }
        kn_err err = {0};
        size_t k = n_miss;
        if (q.token_inputs) {
            if (!(toks[k] = malloc(q.lens[i] * sizeof **toks))) {
                srv_err(&e, 500, NULL, NULL, "out of memory");
                goto fail;
            }
            memcpy(toks[k], q.token_inputs[i], q.lens[i] * sizeof **toks);
            lens[k] = q.lens[i];
        } else if (tok_encode_alloc(m->vocab, q.texts[i], q.lens[i], true, false, &toks[k], &lens[k], &err) != KN_OK) {
            srv_err(&e, 400, "input", NULL, "cannot tokenize input %zu: %s", i, err.msg);
            goto fail;
        }
        miss[n_miss++] = i;
        if (lens[k] == 0) {
            srv_err(&e, 400, "input", "empty_input", "input %zu has no tokens", i);
            goto fail;
        }
        if (lens[k] > (size_t)m->n_ctx) {
            if (!q.truncate) {
                srv_err(&e, 400, "input", "context_length_exceeded",
                        "input %zu has %zu tokens, but the context holds %d; shorten it or pass \"truncate\": true",
                        i, lens[k], m->n_ctx);
                goto fail;
            }
            /* an encoder's input keeps its closing special token ([SEP]) */
            if (model_is_encoder(m->m) && !q.token_inputs) toks[k][m->n_ctx - 1] = toks[k][lens[k] - 1];
            lens[k] = (size_t)m->n_ctx;
        }
    }
    const float *emb = NULL;
    size_t n_tok_miss = 0;
    if (n_miss) {
        kn_err err = {0};
        kn_status st = eng_req_create_embed(m->sched, (const int32_t *const *)toks, lens, n_miss, normalize, &r, &err);
        if (st != KN_OK) {
            srv_err(&e, st == KN_ENOMEM ? 500 : 400, "input", NULL, "%s", err.msg);
            goto fail;
        }
        if ((st = eng_sched_submit(m->sched, r, &err)) != KN_OK) {
            srv_err(&e, 503, NULL, st == KN_EBUSY ? "overloaded" : "shutting_down", "%s", err.msg);
            goto fail;
        }
        eng_req_result res;
        size_t dummy;
        char tb[1];
        while (!eng_req_read(r, 200, tb, 0, &dummy, NULL, 0, NULL, &res)) {
            if (srv_client_gone(c)) {
                eng_req_cancel(r);
                srv_err(&e, 499, NULL, NULL, "client closed the connection");
                goto fail;
            }
        }
        if (res.finish != ENG_FINISH_STOP) {
            srv_err(&e, res.status == KN_EBUSY || res.finish == ENG_FINISH_CANCELLED ? 503 : 500, NULL, NULL, "%s",
                    res.err[0] ? res.err : "embedding failed");
            goto fail;
        }
        size_t n_in;
        int ne;
        emb = eng_req_embeddings(r, &n_in, &ne, &n_tok_miss);
        if (n_in != n_miss || ne != n_embd) {
            srv_err(&e, 500, NULL, NULL, "the engine returned %zu embeddings of %d values for %zu inputs of %d", n_in,
                    ne, n_miss, n_embd);
            goto fail;
        }
        for (size_t k = 0; cacheable && k < n_miss; k++) {
            size_t len = 0;
            void *v = srv_emb_value(emb + k * (size_t)n_embd, n_embd, lens[k], &len);
            if (v) rc_store(s->cache, RC_EMBEDDING, tag, keys[miss[k]], v, len);
            free(v);
        }
    }
    /* every input's vector, in order */
    size_t n_tok = n_tok_miss, k = 0;
    json_t *vecs = json_array();
    for (size_t i = 0; i < q.n; i++) {
        const float *v;
        if (hit[i]) {
            v = hit_v[i];
            n_tok += hit_nt[i];
        } else {
            v = emb + (k++) * (size_t)n_embd;
        }
        json_array_append_new(vecs, vec_json(v, n_embd, !oll && q.base64));
    }
    if (oll) {
        out = json_pack("{s:s, s:o, s:I, s:I, s:I}", "model", m->id, "embeddings", vecs, "total_duration",
                        (json_int_t)((kn_now_s() - t0) * 1e9), "load_duration", (json_int_t)(load_s * 1e9),
                        "prompt_eval_count", (json_int_t)n_tok);
    } else {
        json_t *data = json_array();
        for (size_t i = 0; i < q.n; i++)
            json_array_append_new(data, json_pack("{s:s, s:I, s:O}", "object", "embedding", "index", (json_int_t)i,
                                                  "embedding", json_array_get(vecs, i)));
        json_decref(vecs);
        out = json_pack("{s:s, s:o, s:s, s:{s:I, s:I}}", "object", "list", "data", data, "model", m->id, "usage",
                        "prompt_tokens", (json_int_t)n_tok, "total_tokens", (json_int_t)n_tok);
    }
    snprintf(timing, sizeof timing, "total;dur=%.3f", (kn_now_s() - cx->t0) * 1e3);
    snprintf(hits, sizeof hits, "%zu/%zu", n_hit, q.n);
    hdrs[0] = "X-Cache";
    hdrs[1] = !cacheable ? SRV_XC_BYPASS : n_miss ? SRV_XC_MISS : SRV_XC_HIT;
    hdrs[2] = "X-Cache-Hits";
    hdrs[3] = hits;
    hdrs[4] = "Server-Timing";
    hdrs[5] = timing;
    e.status = 200;
fail:
    eng_req_release(r);
    if (m) rt_release(s->reg, m);
    for (size_t i = 0; toks && i < n_miss; i++) free(toks[i]);
    for (size_t i = 0; hit && i < q.n; i++) free(hit[i]);
    free(toks);
    free(lens);
    free(miss);
    free(hit);
    free(hit_v);
    free(hit_nt);
    free(keys);
    srv_embed_req_free(&q);
    json_decref(root);
    if (e.status == 200) return srv_send_json_h(c, 200, out, hdrs);
    if (e.status == 499) return MHD_NO;
    return srv_send_error(c, &e, oll);
}

enum MHD_Result srv_h_embeddings(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    return handle_embed(s, c, cx, false);
}
enum MHD_Result srv_h_ollama_embed(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    return handle_embed(s, c, cx, true);
}
