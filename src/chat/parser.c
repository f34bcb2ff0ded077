/*
 * parser.c — the streaming driver: the buffer of text not yet decided,
 * <think> blocks, finding call markers in content (holding back what may be
 * the start of one), running a syntax's handler from a marker on, and
 * emitting events.
 *
 * The buffer buf[pos..len) holds only what cannot be decided yet: a marker
 * prefix and the whitespace before it, a call whose markup has not closed
 * (at most CHAT_MAX_CALL_BYTES), an incomplete UTF-8 tail. Every decision
 * is a function of the text alone, made as soon as no continuation could
 * change it; that is why the events do not depend on the split.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

enum {
    M_START,         /* a <think> may open the answer */
    M_REASON,        /* inside <think>...</think> */
    M_AFTER_REASON,  /* whitespace after </think> is dropped */
    M_CONTENT_START, /* the first byte of content: a whole-answer call may start here */
    M_CONTENT,       /* content, watching for markers */
    M_TRIGGER,       /* a marker at pos: its handler decides */
    M_WHOLE,         /* the answer from pos on may be one JSON call */
    M_AFTER_CALL,    /* whitespace after a call: dropped unless text follows */
    M_AFTER_WHOLE,   /* after a whole-answer call: whitespace, ';' and maybe another */
    M_OWN,           /* the syntax drives (harmony) */
};

kn_status chat_parser_create(const chat_parse_opts *o, chat_parser **out, kn_err *err) {
    *out = NULL;
    if (!o || (unsigned)o->syntax >= CHAT_SYNTAX_COUNT)
        return kn_fail(err, KN_EINVAL, "chat parser: unknown syntax %d", o ? (int)o->syntax : -1);
    chat_parser *p = calloc(1, sizeof *p);
    if (!p) return kn_fail(err, KN_ENOMEM, "chat parser: out of memory");
    p->o = *o;
    p->syn = chat_syn_get(o->syntax);
    p->ti = -1;
    p->think_open = p->syn->think_open ? p->syn->think_open : "<think>";
    p->think_close = p->syn->think_close ? p->syn->think_close : "</think>";
    if (p->syn->step)
        p->mode = M_OWN;
    else if (o->reasoning)
        p->mode = o->in_reasoning ? M_REASON : M_START;
    else
        p->mode = M_CONTENT_START;
    if (o->tools && p->syn->try_call)
        for (const char *const *t = p->syn->triggers; t && *t && p->ntrig < CHAT_MAX_TRIGGERS; t++) {
            p->trig[p->ntrig] = *t;
            p->trig_len[p->ntrig] = strlen(*t);
            p->trig_kind[p->ntrig++] = CHAT_TRIG_CALL;
            p->hold_ws = true;
        }
    if (o->reasoning && o->syntax == CHAT_SYNTAX_GRANITE) /* granite 3.3 thinking: <response>...</response> */
        for (const char *const *t = (const char *const[]){"<response>", "</response>", NULL}; *t; t++) {
            p->trig[p->ntrig] = *t;
            p->trig_len[p->ntrig] = strlen(*t);
            p->trig_kind[p->ntrig++] = CHAT_TRIG_DROP;
        }
    *out = p;
    return KN_OK;
}

void chat_parser_destroy(chat_parser *p) {
    if (!p) return;
    chat_unstage(p);
    free(p->staged);
    free(p->buf);
    free(p);
}

int chat_parser_calls(const chat_parser *p) {
    return p ? p->ncalls : 0;
}

/* ---- emitting ------------------------------------------------------------------ */

void chat_emit_text(chat_parser *p, chat_ev_kind k, const char *s, size_t n) {
    if (n == 0 || !p->fn) return;
    chat_event ev = {.kind = k, .text = s, .len = n, .index = -1};
    p->fn(p->arg, &ev);
}

void chat_emit_staged(chat_parser *p) {
    for (size_t i = 0; i < p->nstaged; i++) {
        chat_staged *s = &p->staged[i];
        if (s->kind == CHAT_EV_TOOL_CALL) {
            chat_event ev = {.kind = CHAT_EV_TOOL_CALL,
                             .index = p->ncalls++,
                             .name = s->text,
                             .args = s->args,
                             .args_len = s->args_len,
                             .id = s->id};
            if (p->fn) p->fn(p->arg, &ev);
        } else
            chat_emit_text(p, s->kind, s->text, s->len);
    }
    chat_unstage(p);
}

/* Emits buf[pos, pos+n) as k and consumes it; at the tail of the text (more
 * may follow) an incomplete UTF-8 character is kept for the next piece. */
static size_t out(chat_parser *p, chat_ev_kind k, size_t n, bool tail) {
    if (tail) n = kn_utf8_complete(p->buf + p->pos, n);
    chat_emit_text(p, k, p->buf + p->pos, n);
    p->pos += n;
    return n;
}

/* The start of what to hold at the end of s[0..n): the longest suffix that
 * is a proper prefix of one of the markers, and (with ws) up to
 * CHAT_WS_HOLD bytes of whitespace before it. */
static size_t hold_start(const char *s, size_t n, const char *const *mk, const size_t *mlen, int nmk,
                         bool ws) {
    size_t h = n;
    for (int t = 0; t < nmk; t++) {
        size_t max = mlen[t] - 1 < n ? mlen[t] - 1 : n;
        for (size_t l = max; l > 0 && n - l < h; l--)
            if (memcmp(s + n - l, mk[t], l) == 0) {
                h = n - l;
                break;
            }
    }
    if (ws)
        for (size_t w = 0; h > 0 && w < CHAT_WS_HOLD && chat_is_ws(s[h - 1]); w++)
            h--;
    return h;
}

/* ---- the modes ------------------------------------------------------------------- */

static bool step_start(chat_parser *p, const char *s, size_t n, bool final) {
    size_t i = chat_skip_ws(s, n);
    if (i > CHAT_WS_HOLD) {
        p->mode = M_CONTENT_START;
        return true;
    }
    if (chat_starts(s + i, n - i, p->think_open)) {
        p->pos += i + strlen(p->think_open);
        p->mode = M_REASON;
        return true;
    }
    if (!final && (i == n || chat_is_prefix_of(s + i, n - i, p->think_open))) return false;
    p->mode = M_CONTENT_START;
    return true;
}

static bool step_reason(chat_parser *p, const char *s, size_t n, bool final) {
    if (!p->reason_began) { /* reasoning starts at its first non-space */
        size_t i = chat_skip_ws(s, n);
        p->pos += i;
        if (i == n) return i > 0;
        p->reason_began = true;
        return true;
    }
    size_t cl = strlen(p->think_close);
    size_t j = chat_find(s, n, 0, p->think_close, cl);
    if (j < n) {
        size_t e = j;
        for (size_t w = 0; e > 0 && w < CHAT_WS_HOLD && chat_is_ws(s[e - 1]); w++)
            e--;
        out(p, CHAT_EV_REASONING, e, false);
        p->pos += j - e + cl;
        p->mode = M_AFTER_REASON;
        return true;
    }
    if (final) return out(p, CHAT_EV_REASONING, n, false) > 0;
    const char *mk[1] = {p->think_close};
    size_t h = hold_start(s, n, mk, &cl, 1, true);
    return out(p, CHAT_EV_REASONING, h, true) > 0;
}

static bool step_skip_ws(chat_parser *p, const char *s, size_t n, bool final, int next) {
    size_t i = chat_skip_ws(s, n);
    p->pos += i;
    if (i < n || final) {
        p->mode = next;
        return true;
    }
    return i > 0;
}

static bool step_content_start(chat_parser *p, const char *s, size_t n, bool final) {
    if (p->o.tools && p->syn->try_whole) {
        size_t i = chat_skip_ws(s, n);
        if (i == n && !final && i <= CHAT_WS_HOLD) return false;
        if (i < n && i <= CHAT_WS_HOLD && s[i] == '{') {
            p->trig_ws = i;
            p->ti = -1;
            memset(&p->js, 0, sizeof p->js);
            p->sub = 0;
            p->mode = M_WHOLE;
            return true;
        }
    }
    p->mode = M_CONTENT;
    return true;
}

static bool step_content(chat_parser *p, const char *s, size_t n, bool final) {
    if (p->ntrig == 0) return out(p, CHAT_EV_CONTENT, n, !final) > 0;
    /* the earliest marker (the longest at one place) */
    size_t at = n;
    int ti = -1;
    for (int t = 0; t < p->ntrig; t++) {
        size_t lim = at < n && at + p->trig_len[t] < n ? at + p->trig_len[t] : n;
        size_t j = chat_find(s, lim, 0, p->trig[t], p->trig_len[t]);
        if (j >= lim) continue;
        if (ti < 0 || j < at || (j == at && p->trig_len[t] > p->trig_len[ti])) at = j, ti = t;
    }
    if (ti < 0) {
        if (final) return out(p, CHAT_EV_CONTENT, n, false) > 0;
        size_t h = hold_start(s, n, p->trig, p->trig_len, p->ntrig, p->hold_ws);
        return out(p, CHAT_EV_CONTENT, h, true) > 0;
    }
    if (p->trig_kind[ti] == CHAT_TRIG_DROP) {
        out(p, CHAT_EV_CONTENT, at, false);
        p->pos += p->trig_len[ti];
        return true;
    }
    size_t ws = 0;
    while (ws < at && ws < CHAT_WS_HOLD && chat_is_ws(s[at - ws - 1]))
        ws++;
    out(p, CHAT_EV_CONTENT, at - ws, false);
    p->trig_ws = ws;
    p->ti = ti;
    memset(&p->js, 0, sizeof p->js);
    p->sub = 0;
    p->mode = M_TRIGGER;
    return true;
}

/* Runs the handler of the attempt at pos (a marker, or the whole answer). */
static bool step_attempt(chat_parser *p, const char *s, size_t n, bool final) {
    bool whole = p->mode == M_WHOLE;
    const char *t = s + p->trig_ws;
    size_t tn = n - p->trig_ws, used = 0;
    size_t tlen = whole ? 1 : p->trig_len[p->ti];
    chat_try r = (whole ? p->syn->try_whole : p->syn->try_call)(p, p->ti, t, tn, final, &used);
    if (r == CHAT_TRY_MORE && !final && tn <= CHAT_MAX_CALL_BYTES) return false;
    if (r == CHAT_TRY_MORE || used > CHAT_MAX_CALL_BYTES || used > tn ||
        used < (r == CHAT_TRY_TEXT ? 1 : tlen)) {
        /* too long, or a handler that cannot decide at the end: the marker is content */
        chat_unstage(p);
        r = CHAT_TRY_TEXT;
        used = tlen;
    }
    if (r == CHAT_TRY_TEXT) {
        chat_unstage(p);
        out(p, CHAT_EV_CONTENT, p->trig_ws + used, false);
        p->mode = M_CONTENT;
        return true;
    }
    p->pos += p->trig_ws + used;
    chat_emit_staged(p);
    p->mode = whole && p->syn->whole_repeats ? M_AFTER_WHOLE : M_AFTER_CALL;
    return true;
}

/* Whitespace after a call goes with what follows: dropped before another
 * call or the end, content before text. */
static bool step_after_call(chat_parser *p, const char *s, size_t n, bool final) {
    size_t i = chat_skip_ws(s, n);
    if (i == n && i <= CHAT_WS_HOLD) {
        if (!final) return false;
        p->pos += i;
        return true;
    }
    p->mode = M_CONTENT;
    return true;
}

static bool step_after_whole(chat_parser *p, const char *s, size_t n, bool final) {
    size_t i = 0;
    while (i < n && (chat_is_ws(s[i]) || s[i] == ';'))
        i++;
    p->pos += i;
    if (i == n && !final) return i > 0;
    if (i < n && s[i] == '{') {
        p->trig_ws = 0;
        p->ti = -1;
        memset(&p->js, 0, sizeof p->js);
        p->sub = 0;
        p->mode = M_WHOLE;
    } else
        p->mode = M_CONTENT;
    return true;
}

static bool step(chat_parser *p, bool final) {
    const char *s = p->buf + p->pos;
    size_t n = p->len - p->pos;
    switch (p->mode) {
    case M_START: return step_start(p, s, n, final);
    case M_REASON: return step_reason(p, s, n, final);
    case M_AFTER_REASON: return step_skip_ws(p, s, n, final, M_CONTENT_START);
    case M_CONTENT_START: return step_content_start(p, s, n, final);
    case M_CONTENT: return step_content(p, s, n, final);
    case M_TRIGGER:
    case M_WHOLE: return step_attempt(p, s, n, final);
    case M_AFTER_CALL: return step_after_call(p, s, n, final);
    case M_AFTER_WHOLE: return step_after_whole(p, s, n, final);
    case M_OWN: return p->syn->step(p, final);
    }
    return false;
}

static void run(chat_parser *p, bool final) {
    while (step(p, final) && p->pos <= p->len) {
        if (p->pos == p->len && !final) break;
    }
    if (p->pos == p->len) p->pos = p->len = 0;
}

void chat_parser_feed(chat_parser *p, const char *text, size_t len, chat_event_fn fn, void *arg) {
    p->fn = fn;
    p->arg = arg;
    while (len > 0) {
        size_t k = len < CHAT_FEED_CHUNK ? len : CHAT_FEED_CHUNK;
        if (p->pos > 0) { /* keep the undecided text at the front */
            memmove(p->buf, p->buf + p->pos, p->len - p->pos);
            p->len -= p->pos;
            p->pos = 0;
        }
        if (p->len + k > p->cap) {
            size_t cap = p->cap ? p->cap : 256;
            while (cap < p->len + k)
                cap *= 2;
            char *nb = realloc(p->buf, cap);
            if (!nb) { /* out of memory: what is held and this piece go out as content */
                chat_emit_text(p, CHAT_EV_CONTENT, p->buf, p->len);
                chat_emit_text(p, CHAT_EV_CONTENT, text, len);
                p->len = p->pos = 0;
                p->mode = p->syn->step ? M_OWN : M_CONTENT;
                return;
            }
            p->buf = nb;
            p->cap = cap;
        }
        memcpy(p->buf + p->len, text, k);
        p->len += k;
        text += k;
        len -= k;
        run(p, false);
    }
}

void chat_parser_finish(chat_parser *p, chat_event_fn fn, void *arg) {
    p->fn = fn;
    p->arg = arg;
    while (p->len > p->pos && step(p, true)) { /* every step consumes or moves on */
    }
    if (p->len > p->pos) /* a mode that could not decide: what is left is what it is */
        chat_emit_text(p, p->mode == M_REASON ? CHAT_EV_REASONING : CHAT_EV_CONTENT, p->buf + p->pos,
                       p->len - p->pos);
    p->pos = p->len = 0;
}
