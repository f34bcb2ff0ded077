/*
 * sse.c — incremental parser of an OpenAI completion stream (Server-Sent
 * Events carrying JSON chunks). See bench.h for the accepted format and the
 * bounds. The chunk JSON is parsed by jansson.
 */
#include "kiln/bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool sse_fail(bench_sse *p, const char *msg, const char *detail) {
    if (!p->failed) {
        p->failed = true;
        snprintf(p->msg, sizeof p->msg, "%s%s%.80s", msg, detail ? ": " : "", detail ? detail : "");
    }
    return false;
}

void bench_sse_reset(bench_sse *p) {
    p->len = 0;
    p->body_bytes = 0;
    p->done = false;
    p->failed = false;
    p->usage_tokens = -1;
    p->usage_prompt_tokens = -1;
    p->events = 0;
    p->msg[0] = 0;
}

void bench_sse_free(bench_sse *p) {
    if (!p) return;
    free(p->line);
    p->line = NULL;
    p->cap = p->len = 0;
}

/* One JSON chunk of the stream. */
static bool handle_chunk(bench_sse *p, const char *s, size_t n) {
    json_error_t je;
    json_t *o = json_loadb(s, n, JSON_ALLOW_NUL, &je); /* a model may emit a NUL byte token */
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return sse_fail(p, "a data line is not a JSON object", je.text);
    }
    json_t *e = json_object_get(o, "error");
    if (e) {
        json_t *m = json_is_object(e) ? json_object_get(e, "message") : e;
        char buf[100];
        snprintf(buf, sizeof buf, "%s", json_is_string(m) ? json_string_value(m) : "(no message)");
        json_decref(o);
        return sse_fail(p, "the server sent an error in the stream", buf);
    }
    json_t *choices = json_object_get(o, "choices");
    json_t *c0 = json_is_array(choices) ? json_array_get(choices, 0) : NULL;
    if (json_is_object(c0)) {
        json_t *t = json_object_get(c0, "text");
        if (!json_is_string(t)) {
            json_t *d = json_object_get(c0, "delta");
            t = json_is_object(d) ? json_object_get(d, "content") : NULL;
        }
        if (json_is_string(t) && json_string_length(t) > 0) {
            p->events++;
            if (p->on_text) p->on_text(p->user, json_string_value(t), json_string_length(t));
            if (p->on_output) p->on_output(p->user);
        }
    }
    json_t *u = json_object_get(o, "usage");
    json_t *ct = json_is_object(u) ? json_object_get(u, "completion_tokens") : NULL;
    if (json_is_integer(ct) && json_integer_value(ct) >= 0) p->usage_tokens = json_integer_value(ct);
    json_t *pt = json_is_object(u) ? json_object_get(u, "prompt_tokens") : NULL;
    if (json_is_integer(pt) && json_integer_value(pt) >= 0) p->usage_prompt_tokens = json_integer_value(pt);
    json_decref(o);
    return true;
}

static bool handle_line(bench_sse *p, const char *s, size_t n) {
    if (n && s[n - 1] == '\r') n--;
    if (n == 0 || s[0] == ':') return true; /* event boundary or comment */
    if (n >= 5 && !memcmp(s, "data:", 5)) {
        s += 5, n -= 5;
        if (n && *s == ' ') s++, n--;
        if (p->done) return sse_fail(p, "data after [DONE]", NULL);
        if (n == 6 && !memcmp(s, "[DONE]", 6)) {
            p->done = true;
            return true;
        }
        return handle_chunk(p, s, n);
    }
    return true; /* event:, id:, retry: and unknown fields are ignored */
}

bool bench_sse_feed(bench_sse *p, const char *data, size_t len) {
    if (p->failed) return false;
    if (len > BENCH_MAX_BODY - p->body_bytes) return sse_fail(p, "response body over the limit", NULL);
    p->body_bytes += len;
    while (len) {
        const char *nl = memchr(data, '\n', len);
        size_t take = nl ? (size_t)(nl - data) : len;
        if (take > BENCH_MAX_LINE - p->len) return sse_fail(p, "SSE line over the limit", NULL);
        if (nl && p->len == 0) { /* whole line in the input: no copy */
            if (!handle_line(p, data, take)) return false;
        } else {
            if (p->len + take + 1 > p->cap) {
                size_t nc = p->cap ? p->cap : 4096;
                while (nc < p->len + take + 1) nc *= 2;
                if (nc > BENCH_MAX_LINE + 1) nc = BENCH_MAX_LINE + 1;
                char *nb = realloc(p->line, nc);
                if (!nb) return sse_fail(p, "out of memory", NULL);
                p->line = nb;
                p->cap = nc;
            }
            memcpy(p->line + p->len, data, take);
            p->len += take;
            if (nl) {
                bool ok = handle_line(p, p->line, p->len);
                p->len = 0;
                if (!ok) return false;
            }
        }
        if (!nl) break;
        data = nl + 1;
        len -= take + 1;
    }
    return true;
}

bool bench_sse_finish(bench_sse *p) {
    if (p->failed) return false;
    if (p->len) {
        bool ok = handle_line(p, p->line, p->len);
        p->len = 0;
        if (!ok) return false;
    }
    if (!p->done) return sse_fail(p, "the stream ended without data: [DONE]", NULL);
    return true;
}
