/*
 * kiln/core.h — kiln core: status codes and error messages, logging, assertions,
 * clocks, CPU feature detection, a bump arena, a thread pool and a progress
 * line.
 *
 * Owns: nothing global. Every stateful object (arena, pool, progress) is a
 * struct the caller creates and destroys; there are no mutable globals.
 *
 * Conventions used across kiln:
 *  - Functions that can fail on bad input return kn_status and, when given a
 *    non-NULL kn_err, fill it with a message naming the problem.
 *  - Programmer errors hit KN_ASSERT, which prints file:line and aborts.
 *  - Library code never calls exit().
 */
#ifndef KILN_CORE_H
#define KILN_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KILN_VERSION "0.5.0"

/* ---- status and errors ------------------------------------------------- */

typedef enum kn_status {
    KN_OK = 0,
    KN_EINVAL,       /* bad argument or malformed input */
    KN_ENOMEM,       /* allocation failed */
    KN_EIO,          /* open/read/write/mmap failed */
    KN_EFORMAT,      /* input file or data violates its format */
    KN_ERANGE,       /* a value is out of its allowed range / overflow */
    KN_ENOTFOUND,    /* key, tensor or file does not exist */
    KN_ETYPE,        /* value exists but has another type */
    KN_EUNSUPPORTED, /* valid but not supported by kiln (yet) */
    KN_EBUSY,        /* a bounded resource is full (queue, slots); retry later */
    KN_ECANCELLED,   /* the operation was cancelled (client gone, shutdown) */
} kn_status;

const char *kn_status_str(kn_status s);

/* An error message carrier. Callers own it (usually on the stack). */
typedef struct kn_err {
    kn_status status;
    char msg[512];
} kn_err;

/* Sets err (if non-NULL) and returns st, so that `return kn_fail(...)` works. */
kn_status kn_fail(kn_err *err, kn_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prepends "prefix: " to an existing message (e.g. the file name). */
void kn_err_prefix(kn_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- logging ------------------------------------------------------------ */

typedef enum kn_log_level { KN_LOG_DEBUG = 0, KN_LOG_INFO, KN_LOG_WARN, KN_LOG_ERROR } kn_log_level;

/* Writes one line to stderr: "kiln: [level] message". The threshold is read
 * from the environment variable KILN_LOG (debug|info|warn|error, default
 * info) on each call; logging is never on a hot path. */
void kn_log(kn_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool kn_log_enabled(kn_log_level lvl);

#define KN_DEBUG(...) kn_log(KN_LOG_DEBUG, __VA_ARGS__)
#define KN_INFO(...) kn_log(KN_LOG_INFO, __VA_ARGS__)
#define KN_WARN(...) kn_log(KN_LOG_WARN, __VA_ARGS__)
#define KN_ERROR(...) kn_log(KN_LOG_ERROR, __VA_ARGS__)

/* ---- assertions (programmer errors only) -------------------------------- */

_Noreturn void kn_assert_fail(const char *expr, const char *file, int line);
#define KN_ASSERT(x) ((x) ? (void)0 : kn_assert_fail(#x, __FILE__, __LINE__))

/* ---- checked arithmetic -------------------------------------------------- */

/* Return false on overflow; *out is then unspecified. */
static inline bool kn_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool kn_add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

/* ---- allocation ----------------------------------------------------------- */

/* 64-byte aligned allocation (cache line / AVX-512). Free with kn_free_aligned.
 * Returns NULL on failure or when size is 0. */
void *kn_alloc_aligned(size_t size);
void kn_free_aligned(void *p);

/* A bump arena: many allocations, one free. Not thread-safe. */
typedef struct kn_arena {
    uint8_t *base; /* [cap] owned */
    size_t cap;
    size_t used;
} kn_arena;

kn_status kn_arena_init(kn_arena *a, size_t cap);
void kn_arena_free(kn_arena *a); /* accepts a zeroed arena */
/* 64-byte aligned; NULL when the arena is full. Memory is zeroed. */
void *kn_arena_alloc(kn_arena *a, size_t size);
void kn_arena_reset(kn_arena *a);

/* ---- clocks --------------------------------------------------------------- */

uint64_t kn_now_ns(void); /* CLOCK_MONOTONIC */
double kn_now_s(void);
/* Sleeps for ms milliseconds (interrupted sleeps resume). */
void kn_sleep_ms(int ms);

/* ---- CPU features and kernel sets ---------------------------------------- */

typedef enum kn_cpu_level {
    KN_CPU_GENERIC = 0, /* portable C only */
    KN_CPU_AVX2 = 1,    /* AVX2 + FMA + F16C */
    KN_CPU_AVX512 = 2,  /* AVX-512 F/BW/VL/DQ + VNNI */
    KN_CPU_LEVEL_COUNT
} kn_cpu_level;

typedef struct kn_cpu_features {
    bool avx2, fma, f16c;
    bool avx512f, avx512bw, avx512vl, avx512dq, avx512vnni, avx512bf16, avx512vbmi;
} kn_cpu_features;

void kn_cpu_features_detect(kn_cpu_features *f);
/* The best level this CPU supports. */
kn_cpu_level kn_cpu_best(const kn_cpu_features *f);
bool kn_cpu_supports(const kn_cpu_features *f, kn_cpu_level lvl);
const char *kn_cpu_level_name(kn_cpu_level lvl);
/* Parses "generic" | "avx2" | "avx512"; returns false on anything else. */
bool kn_cpu_level_parse(const char *s, kn_cpu_level *out);
/* The level to use: KILN_CPU from the environment if set (an unsupported or
 * unknown value is reported through err and the call fails), else the best. */
kn_status kn_cpu_select(kn_cpu_level *out, kn_err *err);

/* ---- thread pool ----------------------------------------------------------- */

/* A fixed set of worker threads created once. kn_pool_run() runs
 * fn(ctx, ith, nth) on nth = kn_pool_size() threads (the caller is thread 0)
 * and returns when all are done. Workers spin briefly on an atomic barrier
 * after each job, then sleep on a condition variable, so back-to-back jobs in
 * a forward pass cost no futex wake-ups. No allocation per run.
 * kn_pool_run must not be called concurrently on one pool, nor from inside a
 * job. */
typedef struct kn_pool kn_pool;
typedef void (*kn_pool_fn)(void *ctx, int ith, int nth);

kn_pool *kn_pool_create(int n_threads); /* n_threads >= 1; NULL on failure */
void kn_pool_destroy(kn_pool *p);       /* accepts NULL */
int kn_pool_size(const kn_pool *p);
void kn_pool_run(kn_pool *p, kn_pool_fn fn, void *ctx);
/* Default thread count: the number of online CPUs (at least 1). */
int kn_default_threads(void);

/* Splits [0, n) into nth contiguous ranges aligned to `align`; thread ith gets
 * [*lo, *hi). Deterministic and independent of timing. */
void kn_split_range(int64_t n, int64_t align, int ith, int nth, int64_t *lo, int64_t *hi);

/* ---- progress line ---------------------------------------------------------- */

/* A single-line progress indicator on stderr ("label [#####    ] 42% 3/7 note").
 * Redrawn in place when stderr is a terminal, otherwise printed at most every
 * 10% so logs stay readable. */
typedef struct kn_progress {
    const char *label;
    uint64_t total;
    uint64_t done;
    int last_pct;
    bool tty;
    double t0;
} kn_progress;

void kn_progress_begin(kn_progress *p, const char *label, uint64_t total);
void kn_progress_update(kn_progress *p, uint64_t done, const char *note);
void kn_progress_end(kn_progress *p);

/* ---- files ---------------------------------------------------------------------- */

/* Reads a whole file (at most max_bytes) into a malloc'd, NUL-terminated
 * buffer the caller frees. */
kn_status kn_read_file(const char *path, size_t max_bytes, char **out, size_t *len, kn_err *err);
/* Creates dir and its missing parents with the given mode (new directories
 * only). KN_EIO naming the part that failed, or when dir ends up not being
 * a directory; KN_ERANGE for a path over 4095 bytes. */
kn_status kn_mkdirs(const char *dir, unsigned mode, kn_err *err);

/* ---- UTF-8 ------------------------------------------------------------------ */

/* Length of the longest prefix of s[0..n) that does not end inside an
 * incomplete UTF-8 sequence (the tail is held back for the next piece). */
size_t kn_utf8_complete(const char *s, size_t n);

/* ---- growable byte buffer ------------------------------------------------ */

/* Bytes appended at the end, always followed by a NUL (so text can be used
 * as a C string). Zero-initialize; free with kn_buf_free. */
typedef struct kn_buf {
    char *p;
    size_t n, cap;
} kn_buf;
/* Appends n bytes. False (buffer unchanged) when memory runs out or the
 * result would be longer than max bytes (0: no bound). */
bool kn_buf_add(kn_buf *b, const void *p, size_t n, size_t max);
void kn_buf_free(kn_buf *b); /* frees and zeroes; accepts a zeroed buffer */

#endif
