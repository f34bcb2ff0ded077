/*
 * syn_harmony.c — gpt-oss's harmony format. The answer starts after the
 * prompt's "<|start|>assistant" and is a series of messages:
 *
 *   header <|message|> body (<|end|> | <|call|> | <|return|> | the end)
 *
 * the next one opening with <|start|>assistant. A header names the channel
 * (<|channel|>analysis | final | commentary), maybe a recipient
 * (to=functions.NAME, before or after the channel) and a content type
 * (<|constrain|>json or just json). Analysis is reasoning, final and
 * commentary without a recipient are content, a message to a recipient is
 * a tool call whose body is the arguments. No markup reaches content or
 * reasoning: bodies are emitted, headers and ends are consumed.
 */
#include "internal.h"

#include <string.h>

enum { H_HEAD = 0, H_BODY, H_NEXT };
enum { HB_CONTENT = 0, HB_REASONING, HB_CALL, HB_CALL_AS_CONTENT };

#define H_MAX_HEADER 1024u

static const char MSG[] = "<|message|>";
/* what ends a body: the three ends (consumed), or a next header when the end was skipped */
static const char *const BODY_END[] = {"<|end|>", "<|call|>", "<|return|>", "<|start|>", "<|channel|>"};
#define N_BODY_END 5
#define N_CONSUMED_END 3
static const char *const HEAD_START[] = {"<|start|>", "<|channel|>", " to=", "to="};
#define N_HEAD_START 4

/* The earliest body end in s[0..n): its index (or -1) and place. */
static int find_end(const char *s, size_t n, size_t *at) {
    int best = -1;
    *at = n;
    for (int i = 0; i < N_BODY_END; i++) {
        size_t j = chat_find(s, n, 0, BODY_END[i], strlen(BODY_END[i]));
        if (j < *at) *at = j, best = i;
    }
    return best;
}

/* Where to stop emitting body text s[0..n): before the longest suffix that
 * may start a body end. */
static size_t body_hold(const char *s, size_t n) {
    size_t h = n;
    for (int i = 0; i < N_BODY_END; i++) {
        size_t l = strlen(BODY_END[i]);
        for (size_t k = l - 1 < n ? l - 1 : n; k > 0 && n - k < h; k--)
            if (memcmp(s + n - k, BODY_END[i], k) == 0) {
                h = n - k;
                break;
            }
    }
    return h;
}

/* Reads the header s[0..m): sets the body kind and, for a call, its name. */
static void read_header(chat_parser *p, const char *s, size_t m) {
    size_t ch = chat_find(s, m, 0, "<|channel|>", strlen("<|channel|>"));
    size_t cb = ch < m ? ch + strlen("<|channel|>") : m, ce = cb;
    while (ce < m && s[ce] != ' ' && s[ce] != '<')
        ce++;
    size_t to = chat_find(s, m, 0, "to=", 3);
    if (to < m && to > 0 && s[to - 1] != ' ' && s[to - 1] != '>') to = m; /* "to=" inside a word */
    p->hname_len = 0;
    if (to < m) {
        size_t nb = to + 3, ne = nb;
        while (ne < m && s[ne] != ' ' && s[ne] != '<')
            ne++;
        if (ne - nb > strlen("functions.") && memcmp(s + nb, "functions.", strlen("functions.")) == 0)
            nb += strlen("functions.");
        if (ne > nb && ne - nb < sizeof p->hname) {
            memcpy(p->hname, s + nb, ne - nb);
            p->hname_len = ne - nb;
        }
        p->hkind = p->o.tools && p->hname_len ? HB_CALL : HB_CALL_AS_CONTENT;
        return;
    }
    bool analysis = ce - cb == 8 && memcmp(s + cb, "analysis", 8) == 0;
    p->hkind = analysis && p->o.reasoning ? HB_REASONING : HB_CONTENT;
}

static bool step_head(chat_parser *p, const char *s, size_t n, bool final) {
    size_t m = chat_find(s, n, 0, MSG, strlen(MSG));
    bool starts = false, maybe = false;
    for (int i = 0; i < N_HEAD_START; i++) {
        starts |= chat_starts(s, n, HEAD_START[i]);
        maybe |= chat_is_prefix_of(s, n, HEAD_START[i]);
    }
    if (!starts && !(maybe && !final)) { /* not a header: text with no markup is content */
        p->hkind = HB_CONTENT;
        p->hstate = H_BODY;
        return true;
    }
    if (m == n && final) { /* the answer ended inside a header */
        p->pos += n;
        return true;
    }
    if (m == n && n <= H_MAX_HEADER) return false;
    if (m > H_MAX_HEADER) { /* a header that does not end: drop its opening marker, the rest is content */
        for (int i = 0; i < N_HEAD_START; i++)
            if (chat_starts(s, n, HEAD_START[i])) {
                p->pos += strlen(HEAD_START[i]);
                break;
            }
        p->hkind = HB_CONTENT;
        p->hstate = H_BODY;
        return true;
    }
    read_header(p, s, m);
    p->pos += m + strlen(MSG);
    p->hstate = H_BODY;
    p->sub = 0;
    return true;
}

static void emit_call_body(chat_parser *p, const char *s, size_t n) {
    size_t b = chat_skip_ws(s, n), e = n;
    while (e > b && chat_is_ws(s[e - 1]))
        e--;
    json_t *args = chat_json_load(s + b, e - b);
    bool ok = p->hkind == HB_CALL && chat_stage_call(p, p->hname, p->hname_len, args, NULL);
    json_decref(args);
    if (ok)
        chat_emit_staged(p);
    else {
        chat_unstage(p);
        chat_emit_text(p, CHAT_EV_CONTENT, s, n);
    }
}

static bool step_body(chat_parser *p, const char *s, size_t n, bool final) {
    size_t at;
    int which = find_end(s, n, &at);
    bool call = p->hkind == HB_CALL || p->hkind == HB_CALL_AS_CONTENT;
    chat_ev_kind kind = p->hkind == HB_REASONING ? CHAT_EV_REASONING : CHAT_EV_CONTENT;
    if (which < 0 && !final) {
        if (call) {
            if (n <= CHAT_MAX_CALL_BYTES) return false;
            p->hkind = HB_CONTENT; /* too long for a call: its body is content */
            return true;
        }
        size_t h = kn_utf8_complete(s, body_hold(s, n));
        chat_emit_text(p, kind, s, h);
        p->pos += h;
        return h > 0;
    }
    size_t end = which < 0 ? n : at;
    if (call) {
        if (end > CHAT_MAX_CALL_BYTES) p->hkind = HB_CALL_AS_CONTENT;
        emit_call_body(p, s, end);
    } else
        chat_emit_text(p, kind, s, end);
    p->pos += end;
    if (which >= 0 && which < N_CONSUMED_END) p->pos += strlen(BODY_END[which]);
    p->hstate = which >= 0 && which < N_CONSUMED_END ? H_NEXT : H_HEAD;
    return true;
}

bool chat_harmony_step(chat_parser *p, bool final) {
    const char *s = p->buf + p->pos;
    size_t n = p->len - p->pos;
    if (p->hstate == H_NEXT) {
        size_t i = chat_skip_ws(s, n);
        p->pos += i;
        if (i == n) return i > 0;
        p->hstate = H_HEAD;
        return true;
    }
    if (n == 0) return false;
    return p->hstate == H_HEAD ? step_head(p, s, n, final) : step_body(p, s, n, final);
}
