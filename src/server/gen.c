/*
 * gen.c — the generation and embedding routes, for every dialect: the
 * route's dialect parses the body into the canonical request, the
 * generation session (kiln/engine.h) runs it, and the dialect formats
 * its events into one JSON answer or a stream (SSE or NDJSON), written as
 * the engine produces them.
 *
 * Push, not poll: a connection thread waiting for output sleeps in poll()
 * on the session's eventfd and the client's socket at once, so a token
 * reaches the socket as soon as the engine produced it, and a client that
 * leaves is noticed at once; there is no timer.
 */
#include "dialect.h"

#include <openssl/rand.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --log-prompts caps each logged text at this many bytes. */
#define LOG_TEXT_MAX 65536

void srv_job_emit(srv_job *j, json_t *o) {
    if (!o) return;
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(o);
    if (!s) return;
    if (j->d->sse) kn_buf_add(&j->out, "data: ", 6, 0);
    kn_buf_add(&j->out, s, strlen(s), 0);
    kn_buf_add(&j->out, j->d->sse ? "\n\n" : "\n", j->d->sse ? 2 : 1, 0);
    free(s);
}

void srv_job_emit_event(srv_job *j, const char *event, json_t *o) {
    if (!o) return;
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(o);
    if (!s) return;
    kn_buf_add(&j->out, "event: ", 7, 0);
    kn_buf_add(&j->out, event, strlen(event), 0);
    kn_buf_add(&j->out, "\ndata: ", 7, 0);
    kn_buf_add(&j->out, s, strlen(s), 0);
    kn_buf_add(&j->out, "\n\n", 2, 0);
    free(s);
}

static void hex_random(char *out, size_t n_hex) {
    unsigned char b[32];
    size_t nb = (n_hex + 1) / 2 > sizeof b ? sizeof b : (n_hex + 1) / 2;
    if (RAND_bytes(b, (int)nb) != 1) {
        /* no entropy source: time and address still make ids unique per process */
        uint64_t x = kn_now_ns() ^ (uint64_t)(uintptr_t)out;
        for (size_t i = 0; i < nb; i++, x = x * 6364136223846793005ull + 1442695040888963407ull) b[i] = (unsigned char)(x >> 56);
    }
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n_hex; i++) out[i] = hx[(b[i / 2] >> (i % 2 ? 0 : 4)) & 15];
    out[n_hex] = 0;
}

void srv_new_id(const char *prefix, char *out, size_t cap) {
    char h[25];
    hex_random(h, 24);
    snprintf(out, cap, "%s%s", prefix, h);
}

void srv_tool_call_id(const srv_job *j, const char *prefix, int index, char *out, size_t cap) {
    if (j->info && j->info->syntax == CHAT_SYNTAX_MISTRAL && cap > 9) {
        /* Mistral's template accepts only 9 letters and digits */
        static const char an[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        uint64_t x = 0;
        for (const char *p = j->call_base; *p; p++) x = x * 31 + (unsigned char)*p;
        x ^= (uint64_t)(index + 1) * 0x9E3779B97F4A7C15ull;
        for (int i = 0; i < 9; i++, x /= 62) out[i] = an[x % 62];
        out[9] = 0;
        return;
    }
    snprintf(out, cap, "%s%s%d", prefix, j->call_base, index);
}

const char *srv_job_model(const srv_job *j) { return j->info->model_id; }

void srv_job_error(const srv_job *j, srv_error *e) {
    if (j->res.finish == ENG_FINISH_CANCELLED)
        srv_err(e, 503, NULL, "cancelled", "the request was cancelled: %s",
                j->res.err[0] ? j->res.err : "the server is shutting down");
    else
        srv_err(e, j->res.status == KN_EBUSY ? 503 : 500, NULL, NULL, "%s",
                j->res.err[0] ? j->res.err : "generation failed");
}

/* ---- chat answers ------------------------------------------------------------------ */

/* A whole answer's event: into content, reasoning or calls. */
static void collect_event(void *arg, const chat_event *ev) {
    srv_job *j = arg;
    if (ev->kind == CHAT_EV_CONTENT && j->info->calls_only) return;
    if (ev->kind == CHAT_EV_CONTENT) {
        kn_buf_add(&j->content, ev->text, ev->len, 0);
    } else if (ev->kind == CHAT_EV_REASONING) {
        kn_buf_add(&j->reasoning, ev->text, ev->len, 0);
    } else {
        char id[64];
        if (ev->id && ev->id[0]) snprintf(id, sizeof id, "%s", ev->id);
        else srv_tool_call_id(j, "call_", ev->index, id, sizeof id);
        if (!j->calls) j->calls = json_array();
        json_array_append_new(j->calls, json_pack("{s:s, s:o, s:o}", "id", id, "name", srv_json_text(ev->name, strlen(ev->name)),
                                                  "arguments", srv_json_text(ev->args, ev->args_len)));
        j->n_calls++;
    }
}

static void stream_event(void *arg, const chat_event *ev) {
    srv_job *j = arg;
    if (ev->kind == CHAT_EV_CONTENT && j->info->calls_only) return; /* the leftovers of a cut call */
    if (ev->kind == CHAT_EV_TOOL_CALL) j->n_calls++;
    j->d->stream_event(j, ev);
}

/* A chat dialect's parser for this answer (when the session says it is
 * parsed). */
static bool chat_setup(srv_job *j, srv_error *e) {
    hex_random(j->call_base, 16);
    if (!j->d->stream_event || !j->info->parse) return true;
    chat_parse_opts o = {.syntax = (chat_syntax)j->info->syntax, .tools = j->info->tools,
                         .reasoning = j->info->reasoning, .in_reasoning = j->info->in_reasoning};
    kn_err err = {0};
    if (chat_parser_create(&o, &j->cp, &err) != KN_OK) return srv_err(e, 500, NULL, NULL, "%s", err.msg);
    return true;
}

/* A whole chat answer: its text parsed into content, reasoning and calls. */
static void chat_collect(srv_job *j) {
    if (!j->d->stream_event) return;
    if (!j->cp) {
        kn_buf_add(&j->content, j->acc.p ? j->acc.p : "", j->acc.n, 0);
        return;
    }
    chat_parser_feed(j->cp, j->acc.p ? j->acc.p : "", j->acc.n, collect_event, j);
    chat_parser_finish(j->cp, collect_event, j);
}

static void log_text(const char *id, const char *what, const char *text, size_t n) {
    KN_INFO("%s: %s (%zu bytes%s): %.*s", id, what, n, n > LOG_TEXT_MAX ? ", truncated" : "",
            (int)(n > LOG_TEXT_MAX ? LOG_TEXT_MAX : n), text ? text : "");
}

static void log_completion(srv_job *j, const char *text, size_t n) {
    if (!j->log_text) return;
    j->log_text = false;
    log_text(j->id, "completion", text, n);
}

/* --log-prompts: the request's messages or prompt (off by default: logs
 * carry no request text). */
static void log_prompt(srv_job *j) {
    j->log_text = true;
    char *pj = j->r.messages ? json_dumps(j->r.messages, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    const char *pt = pj ? pj : j->r.q.prompt ? j->r.q.prompt : "";
    size_t pn = pj ? strlen(pj) : j->r.q.prompt ? j->r.q.prompt_len : 0;
    log_text(j->id, pj ? "messages" : "prompt", pt, pn);
    free(pj);
}

static void job_free(srv_job *j) {
    if (!j) return;
    if (j->d && j->d->release) j->d->release(j);
    eng_gen_close(j->g);
    srv_gen_req_free(&j->r);
    json_decref(j->root);
    free(j->echo_text);
    kn_buf_free(&j->out);
    kn_buf_free(&j->acc);
    json_decref(j->lp);
    kn_buf_free(&j->logged);
    chat_parser_destroy(j->cp);
    kn_buf_free(&j->content);
    kn_buf_free(&j->reasoning);
    json_decref(j->calls);
    free(j);
}

/* X-Cache and Server-Timing, as name/value pairs (timing is the caller's
 * buffer). */
static void cache_headers(const srv_job *j, const char *hdrs[5], char *timing, size_t cap) {
    snprintf(timing, cap, "total;dur=%.3f", (kn_now_s() - j->t0) * 1e3);
    hdrs[0] = "X-Cache";
    hdrs[1] = eng_cache_use_name(j->info->cache);
    hdrs[2] = "Server-Timing";
    hdrs[3] = timing;
    hdrs[4] = NULL;
}

/* Takes everything the session has ready, formatting it (stream) or
 * accumulating it. Returns true once the answer ended (j->res set). */
static bool pump(srv_job *j, bool stream) {
    for (;;) {
        const char *text;
        size_t n, nev;
        const eng_tok_event *ev;
        eng_read_status rs = eng_gen_read(j->g, &text, &n, &ev, &nev, &j->res);
        if (rs == ENG_READ_NONE) return false;
        if (rs == ENG_READ_DONE) {
            if (stream && j->cp) {
                j->ev = NULL, j->nev = 0;
                chat_parser_finish(j->cp, stream_event, j);
            }
            return true;
        }
        if (j->log_text && stream && j->logged.n < LOG_TEXT_MAX + 1) kn_buf_add(&j->logged, text, n, 0);
        if (stream && j->d->stream_event) {
            j->ev = ev, j->nev = nev;
            if (j->cp) {
                chat_parser_feed(j->cp, text, n, stream_event, j);
            } else {
                chat_event ce = {.kind = CHAT_EV_CONTENT, .text = text, .len = n};
                j->d->stream_event(j, &ce);
            }
            j->ev = NULL, j->nev = 0;
            continue;
        }
        if (stream) {
            j->d->stream_piece(j, text, n, ev, nev);
            continue;
        }
        kn_buf_add(&j->acc, text, n, 0);
        if (j->r.q.n_logprobs >= 0 && j->d->collect) j->d->collect(j, ev, nev);
    }
}

/* ---- streaming response ---------------------------------------------------------- */

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    srv_job *j = cls;
    if (!j->started) {
        j->started = true;
        if (j->d->stream_start) j->d->stream_start(j);
    }
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
        if (pump(j, true)) {
            j->d->stream_end(j);
            j->sent_final = true;
            log_completion(j, j->logged.p, j->logged.n);
            continue;
        }
        if (j->out.n == 0 && !srv_wait(j->c, eng_gen_fd(j->g))) {
            KN_INFO("%s: the client went away mid-stream; request cancelled", j->id);
            eng_gen_cancel(j->g);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
}

static void stream_free(void *cls) { job_free(cls); }

static enum MHD_Result respond_stream(srv_job *j) {
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, j, stream_free);
    if (!resp) {
        job_free(j);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", j->d->stream_type);
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

static enum MHD_Result respond_whole(srv_job *j) {
    if (j->echo_len) kn_buf_add(&j->acc, j->echo_text, j->echo_len, 0);
    while (!pump(j, false)) {
        if (!srv_wait(j->c, eng_gen_fd(j->g))) {
            KN_INFO("%s: the client went away; request cancelled", j->id);
            eng_gen_cancel(j->g);
            job_free(j);
            return MHD_NO;
        }
    }
    struct MHD_Connection *c = j->c;
    srv_error e;
    if (j->res.finish == ENG_FINISH_ERROR || j->res.finish == ENG_FINISH_CANCELLED) {
        srv_job_error(j, &e);
        srv_error_fn shape = j->d->error_json;
        job_free(j);
        return srv_send_error_as(c, shape, &e);
    }
    log_completion(j, j->acc.p ? j->acc.p : "", j->acc.n);
    chat_collect(j);
    json_t *o = j->d->whole(j);
    const char *hdrs[5];
    char timing[48];
    cache_headers(j, hdrs, timing, sizeof timing);
    job_free(j);
    return srv_send_json_h(c, 200, o, hdrs);
}

/* ---- request -> session ----------------------------------------------------------- */

/* A load-only request (Ollama's empty generate). */
static enum MHD_Result respond_loaded(srv_job *j, conn_ctx *cx) {
    srv_error e;
    eng_error ee;
    const char *id = NULL;
    struct MHD_Connection *c = j->c;
    if (!eng_service_load(j->s->svc, j->r.q.model, j->r.q.keep_alive_s, &id, &ee)) {
        srv_err_engine(&e, &ee);
        job_free(j);
        return srv_send_error(c, cx, &e);
    }
    cx->model = id;
    json_t *o = j->d->loaded(j, id);
    job_free(j);
    return srv_send_json(c, 200, o);
}

enum MHD_Result srv_h_generate(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    const srv_gen_dialect *d = cx->route->dialect;
    srv_error e;
    srv_job *j = calloc(1, sizeof *j);
    if (!j) return MHD_NO;
    j->s = s, j->d = d, j->c = c, j->t0 = cx->t0;
    srv_gen_req_init(&j->r);
    if (!(j->root = srv_parse_json(cx->body.p, cx->body.n, s->lim.json_depth, &e))) goto fail;
    if (!d->parse(j->root, &s->lim, &j->r, &e)) goto fail;
    j->r.q.t_origin = cx->t0;
    j->r.q.echo = j->r.echo;
    if (srv_cache_opt_out(c)) j->r.q.cache = false;
    if (j->r.load_only && d->loaded) return respond_loaded(j, cx);
    unsigned long long seq = atomic_fetch_add(&s->seq, 1) + 1;
    j->created = time(NULL);
    snprintf(j->id, sizeof j->id, "%s-%llu%06llu", d->id_prefix, (unsigned long long)j->created, seq % 1000000);
    if (d->prepare && !d->prepare(j, &e)) goto fail;
    if (s->cfg->log_prompts) log_prompt(j);
    eng_error ee;
    if (!eng_gen_start(s->svc, &j->r.q, &j->g, &ee)) {
        srv_err_engine(&e, &ee);
        goto fail;
    }
    j->info = eng_gen_get_info(j->g);
    cx->model = j->info->model_id;
    if (!chat_setup(j, &e)) goto fail;
    if (j->r.echo) j->echo_text = eng_gen_prompt_text(j->g, &j->echo_len);
    j->text_offset = j->echo_len;
    return j->r.stream ? respond_stream(j) : respond_whole(j);
fail:
    job_free(j);
    return srv_send_error(c, cx, &e);
}

/* ---- embeddings ---------------------------------------------------------------- */

enum MHD_Result srv_h_embed(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    const srv_embed_dialect *d = cx->route->dialect;
    srv_error e;
    eng_error ee;
    srv_embed_req q;
    memset(&q, 0, sizeof q);
    eng_embed *h = NULL;
    json_t *out = NULL;
    const char *hdrs[7] = {0};
    char timing[48], hits[48];
    double t0 = kn_now_s();
    json_t *root = srv_parse_json(cx->body.p, cx->body.n, s->lim.json_depth, &e);
    if (!root) return srv_send_error(c, cx, &e);
    if (!d->parse(root, &s->lim, &q, &e)) goto fail;
    eng_embed_request er = {.model = q.model, .texts = q.texts, .tokens = (const int32_t *const *)q.token_inputs,
                            .lens = q.lens, .n = q.n, .truncate = q.truncate,
                            .cache = q.cache && !srv_cache_opt_out(c), .keep_alive_s = q.keep_alive_s};
    if (!eng_embed_start(s->svc, &er, &h, &ee)) {
        srv_err_engine(&e, &ee);
        goto fail;
    }
    while (!eng_embed_ready(h)) {
        if (!srv_wait(c, eng_embed_fd(h))) {
            eng_embed_cancel(h);
            srv_err(&e, 499, NULL, NULL, "client closed the connection");
            goto fail;
        }
    }
    eng_embed_result res;
    if (!eng_embed_result_get(h, &res, &ee)) {
        srv_err_engine(&e, &ee);
        goto fail;
    }
    cx->model = res.model_id;
    out = d->answer(&q, &res, t0);
    snprintf(timing, sizeof timing, "total;dur=%.3f", (kn_now_s() - cx->t0) * 1e3);
    snprintf(hits, sizeof hits, "%zu/%zu", res.n_hit, res.n);
    hdrs[0] = "X-Cache";
    hdrs[1] = eng_cache_use_name(res.cache);
    hdrs[2] = "X-Cache-Hits";
    hdrs[3] = hits;
    hdrs[4] = "Server-Timing";
    hdrs[5] = timing;
    e.status = 200;
fail:
    eng_embed_close(h);
    srv_embed_req_free(&q);
    json_decref(root);
    if (e.status == 200) return srv_send_json_h(c, 200, out, hdrs);
    if (e.status == 499) return MHD_NO;
    return srv_send_error(c, cx, &e);
}
