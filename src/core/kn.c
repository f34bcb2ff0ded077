/*
 * kn.c — status strings, errors, logging, assertions, allocation, arena,
 * clocks, file reading and the progress line. See kn.h.
 */
#define _POSIX_C_SOURCE 200809L
#include "kiln/core.h"

#include <errno.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *kn_status_str(kn_status s) {
    switch (s) {
    case KN_OK: return "ok";
    case KN_EINVAL: return "invalid argument";
    case KN_ENOMEM: return "out of memory";
    case KN_EIO: return "I/O error";
    case KN_EFORMAT: return "bad format";
    case KN_ERANGE: return "out of range";
    case KN_ENOTFOUND: return "not found";
    case KN_ETYPE: return "type mismatch";
    case KN_EUNSUPPORTED: return "unsupported";
    case KN_EBUSY: return "busy";
    case KN_ECANCELLED: return "cancelled";
    }
    return "unknown status";
}

kn_status kn_fail(kn_err *err, kn_status st, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = st;
    }
    return st;
}

void kn_err_prefix(kn_err *err, const char *fmt, ...) {
    if (!err) return;
    char pre[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    char tmp[sizeof err->msg];
    size_t pl = strlen(pre);
    if (pl > sizeof tmp - 3) pl = sizeof tmp - 3;
    memcpy(tmp, pre, pl);
    tmp[pl] = ':';
    tmp[pl + 1] = ' ';
    size_t ml = strnlen(err->msg, sizeof err->msg);
    if (ml > sizeof tmp - pl - 3) ml = sizeof tmp - pl - 3;
    memcpy(tmp + pl + 2, err->msg, ml);
    tmp[pl + 2 + ml] = 0;
    memcpy(err->msg, tmp, sizeof tmp);
}

static kn_log_level log_threshold(void) {
    const char *e = getenv("KILN_LOG");
    if (!e) return KN_LOG_INFO;
    if (!strcasecmp(e, "debug")) return KN_LOG_DEBUG;
    if (!strcasecmp(e, "warn")) return KN_LOG_WARN;
    if (!strcasecmp(e, "error")) return KN_LOG_ERROR;
    return KN_LOG_INFO;
}

bool kn_log_enabled(kn_log_level lvl) { return lvl >= log_threshold(); }

void kn_log(kn_log_level lvl, const char *fmt, ...) {
    if (!kn_log_enabled(lvl)) return;
    static const char *names[] = {"debug", "info", "warn", "error"};
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "kiln: [%s] %s\n", names[lvl], buf);
}

_Noreturn void kn_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "kiln: assertion failed: %s at %s:%d\n", expr, file, line);
    abort();
}

void *kn_alloc_aligned(size_t size) {
    if (size == 0) return NULL;
    void *p = NULL;
    size_t rounded = (size + 63) & ~(size_t)63;
    if (rounded < size) return NULL;
    if (posix_memalign(&p, 64, rounded) != 0) return NULL;
    return p;
}

void kn_free_aligned(void *p) { free(p); }

kn_status kn_arena_init(kn_arena *a, size_t cap) {
    a->used = 0;
    a->cap = cap;
    a->base = cap ? kn_alloc_aligned(cap) : NULL;
    if (cap && !a->base) {
        a->cap = 0;
        return KN_ENOMEM;
    }
    return KN_OK;
}

void kn_arena_free(kn_arena *a) {
    if (!a) return;
    kn_free_aligned(a->base);
    a->base = NULL;
    a->cap = a->used = 0;
}

void *kn_arena_alloc(kn_arena *a, size_t size) {
    size_t off = (a->used + 63) & ~(size_t)63;
    if (off < a->used || size > a->cap || off > a->cap - size) return NULL;
    a->used = off + size;
    void *p = a->base + off;
    memset(p, 0, size);
    return p;
}

void kn_arena_reset(kn_arena *a) { a->used = 0; }

uint64_t kn_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double kn_now_s(void) { return (double)kn_now_ns() * 1e-9; }

void kn_sleep_ms(int ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

kn_status kn_read_file(const char *path, size_t max_bytes, char **out, size_t *len, kn_err *err) {
    *out = NULL;
    if (len) *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return kn_fail(err, KN_EIO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        fclose(f);
        return kn_fail(err, KN_ENOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (n == cap) {
            if (cap >= max_bytes) {
                free(buf);
                fclose(f);
                return kn_fail(err, KN_ERANGE, "%s: larger than the limit of %zu bytes", path, max_bytes);
            }
            size_t ncap = cap * 2 > max_bytes ? max_bytes : cap * 2;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                free(buf);
                fclose(f);
                return kn_fail(err, KN_ENOMEM, "%s: out of memory", path);
            }
            buf = nb;
            cap = ncap;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return kn_fail(err, KN_EIO, "%s: read error", path);
    }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return KN_OK;
}

void kn_progress_begin(kn_progress *p, const char *label, uint64_t total) {
    p->label = label;
    p->total = total ? total : 1;
    p->done = 0;
    p->last_pct = -1;
    p->tty = isatty(STDERR_FILENO);
    p->t0 = kn_now_s();
    kn_progress_update(p, 0, NULL);
}

void kn_progress_update(kn_progress *p, uint64_t done, const char *note) {
    p->done = done;
    int pct = (int)(done * 100 / p->total);
    if (pct > 100) pct = 100;
    if (!p->tty && p->last_pct >= 0 && pct / 10 == p->last_pct / 10 && done != p->total) return;
    if (p->tty && pct == p->last_pct && !note) return;
    p->last_pct = pct;
    char bar[31];
    int fill = pct * 30 / 100;
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : ' ';
    bar[30] = 0;
    fprintf(stderr, "%s%s [%s] %3d%% %llu/%llu %.1fs %s%s", p->tty ? "\r" : "", p->label, bar, pct,
            (unsigned long long)done, (unsigned long long)p->total, kn_now_s() - p->t0,
            note ? note : "", p->tty ? "\033[K" : "\n");
    fflush(stderr);
}

void kn_progress_end(kn_progress *p) {
    if (p->done != p->total) kn_progress_update(p, p->total, NULL);
    if (p->tty) fputc('\n', stderr);
}

bool kn_buf_add(kn_buf *b, const void *p, size_t n, size_t max) {
    if (n > SIZE_MAX - b->n - 1 || (max && b->n + n > max)) return false;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 1024;
        while (nc < b->n + n + 1) nc = nc > SIZE_MAX / 2 ? b->n + n + 1 : nc * 2;
        if (max && nc > max + 1) nc = max + 1;
        char *q = realloc(b->p, nc);
        if (!q) return false;
        b->p = q;
        b->cap = nc;
    }
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = 0;
    return true;
}

void kn_buf_free(kn_buf *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

kn_status kn_mkdirs(const char *dir, unsigned mode, kn_err *err) {
    char p[4096];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p)
        return kn_fail(err, KN_ERANGE, "path too long: %.100s", dir);
    for (char *s = p + 1;; s++) {
        if (*s && *s != '/') continue;
        char c = *s;
        *s = 0;
        if (mkdir(p, (mode_t)mode) && errno != EEXIST)
            return kn_fail(err, KN_EIO, "cannot create %s: %s", p, strerror(errno));
        if (!(*s = c)) break;
    }
    struct stat sb;
    if (stat(dir, &sb) || !S_ISDIR(sb.st_mode)) return kn_fail(err, KN_EIO, "%s is not a directory", dir);
    return KN_OK;
}

/* ---- UTF-8 ----------------------------------------------------------------- */

static int utf8_seq_len(unsigned char c) {
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) return 2;
    if ((c & 0xF0) == 0xE0) return 3;
    if ((c & 0xF8) == 0xF0) return 4;
    return 0;
}

size_t kn_utf8_complete(const char *s, size_t n) {
    /* look back at most 3 bytes for a lead byte whose sequence runs past the end */
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char c = (unsigned char)s[n - back];
        if ((c & 0xC0) == 0x80) continue; /* continuation */
        int l = utf8_seq_len(c);
        return l > (int)back ? n - back : n;
    }
    return n;
}
