/*
 * stop.c — see stop.h. The held text is shorter than the longest stop
 * string, and one call takes at most ENG_STOP_PIECE new bytes, so the
 * buffers are sized once.
 */
#include "stop.h"

#include <stdlib.h>
#include <string.h>

struct eng_stop {
    size_t n;
    char str[ENG_STOP_MAX][ENG_STOP_MAX_LEN + 1];
    size_t len[ENG_STOP_MAX];
    int idx[ENG_STOP_MAX];                         /* each string's index in the request's list */
    int matched;                                   /* the request's index of the string that stopped, or -1 */
    size_t held;                                   /* bytes in buf not yet emitted */
    char buf[ENG_STOP_MAX_LEN + ENG_STOP_PIECE];   /* held bytes + the new slice */
    char out[ENG_STOP_MAX_LEN + ENG_STOP_PIECE];   /* what a call releases */
    bool stopped;
};

kn_status eng_stop_create(const char *const *strs, size_t n, eng_stop **out, kn_err *err) {
    *out = NULL;
    eng_stop *s = calloc(1, sizeof *s);
    if (!s) return kn_fail(err, KN_ENOMEM, "out of memory");
    s->matched = -1;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(strs[i]);
        if (l == 0) continue;
        if (s->n == ENG_STOP_MAX) {
            free(s);
            return kn_fail(err, KN_ERANGE, "too many stop strings (at most %d)", ENG_STOP_MAX);
        }
        if (l > ENG_STOP_MAX_LEN) {
            free(s);
            return kn_fail(err, KN_ERANGE, "stop string %zu is %zu bytes long (at most %d)", i, l, ENG_STOP_MAX_LEN);
        }
        memcpy(s->str[s->n], strs[i], l + 1);
        s->idx[s->n] = (int)i;
        s->len[s->n++] = l;
    }
    *out = s;
    return KN_OK;
}

void eng_stop_destroy(eng_stop *s) { free(s); }

void eng_stop_reset(eng_stop *s) {
    s->held = 0;
    s->stopped = false;
    s->matched = -1;
}

int eng_stop_matched(const eng_stop *s) { return s->matched; }

/* Length of the longest suffix of buf[0..n) that is a proper prefix of a stop string. */
static size_t partial_suffix(const eng_stop *s, const char *buf, size_t n) {
    size_t best = 0;
    for (size_t i = 0; i < s->n; i++) {
        size_t max = s->len[i] - 1 < n ? s->len[i] - 1 : n;
        for (size_t k = max; k > best; k--)
            if (!memcmp(buf + n - k, s->str[i], k)) {
                best = k;
                break;
            }
    }
    return best;
}

size_t eng_stop_feed(eng_stop *s, const char *bytes, size_t len, const char **out, size_t *out_len, bool *stopped) {
    *out = s->out;
    *out_len = 0;
    *stopped = s->stopped;
    if (s->stopped) return len;
    const size_t take = len < ENG_STOP_PIECE ? len : ENG_STOP_PIECE;
    memcpy(s->buf + s->held, bytes, take);
    const size_t n = s->held + take;
    /* the earliest complete stop string ends the stream */
    size_t cut = n;
    int which = -1;
    for (size_t i = 0; i < s->n; i++)
        for (size_t p = 0; p + s->len[i] <= n && p < cut; p++)
            if (!memcmp(s->buf + p, s->str[i], s->len[i])) {
                cut = p;
                which = s->idx[i];
                break;
            }
    if (cut < n) {
        memcpy(s->out, s->buf, cut);
        *out_len = cut;
        s->held = 0;
        s->matched = which;
        s->stopped = *stopped = true;
        return take;
    }
    /* release all but a suffix that may still grow into a stop string */
    const size_t rel = n - partial_suffix(s, s->buf, n);
    memcpy(s->out, s->buf, rel);
    *out_len = rel;
    memmove(s->buf, s->buf + rel, n - rel);
    s->held = n - rel;
    return take;
}

void eng_stop_flush(eng_stop *s, const char **out, size_t *out_len) {
    memcpy(s->out, s->buf, s->held);
    *out = s->out;
    *out_len = s->held;
    s->held = 0;
}
