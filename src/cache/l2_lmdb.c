/*
 * l2_lmdb.c — the cache's disk tier (rc_l2, see cache.h): the small backend
 * vtable the public rc_l2_* functions dispatch through, and its LMDB
 * implementation (layout and record format in cache.h's top comment).
 *
 * Owns (per rc_l2): the MDB_env of the directory and its four named
 * databases, the pending counter deltas (atomics) and the persisted lifetime
 * totals they are added to, and the expiry scan's cursor position.
 *
 * Invariants:
 *  - "bytes.<type>" in "meta" is the sum over that type's records of
 *    24 (key) + the value's size. Every transaction that adds or removes a
 *    record updates it in the same transaction, so it is exact after a crash.
 *  - Every record has one "age" entry (created_ms || type || key). An age
 *    entry whose record is gone or was rewritten later (another created_ms)
 *    is an orphan: eviction and clear delete orphans as they meet them.
 *  - Counters: hits/misses/... = persisted (what "meta" held at our last
 *    write) + pending (events since, atomics). Each write transaction adds
 *    the pending deltas to "meta" and, once committed, moves them to
 *    persisted under ctr_mu (held across the commit: write transactions are
 *    exclusive, so no other writer can add the same deltas twice).
 *  - A record is served only when its header, lengths, checksum and zstd
 *    frame all check out; anything else is deleted and counted as corrupt.
 *  - Disk full: a write whose commit fails for lack of space (ENOSPC or
 *    EDQUOT, or LMDB's EIO for a short write when the file system has less
 *    free space than the write needed) leaves the environment usable (the
 *    transaction is aborted, the meta page still names the last commit) and
 *    starts a pause: writes and maintenance are skipped (KN_OK, counted) for
 *    1 s, doubling up to 60 s while the retries keep failing, so a full disk
 *    costs one log line per pause, not one per answer. The first write that
 *    succeeds ends the pause and logs how many writes were skipped.
 *
 * Threads: every function but close may run concurrently (MDB_NOTLS: read
 * transactions are not tied to a thread; LMDB serializes writers).
 */
#define XXH_STATIC_LINKING_ONLY
#include "cache.h"

#include <dirent.h>
#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <xxhash.h>
#include <zstd.h>

/* ---- the backend vtable ---------------------------------------------------- */

/* A backend embeds struct rc_l2 as its first member. When a second backend
 * (Redis) arrives, this struct moves to an internal header of src/cache. */
typedef struct rc_l2_ops {
    const char *name;
    kn_status (*get)(rc_l2 *b, rc_type t, uint64_t model, rc_key k, int64_t now_ms, void **val, size_t *len,
                     int64_t *expiry_ms, kn_err *err);
    kn_status (*put_batch)(rc_l2 *b, const rc_l2_item *items, size_t n, int64_t now_ms, kn_err *err);
    kn_status (*clear)(rc_l2 *b, bool all, rc_type t, uint64_t model, uint64_t *removed, kn_err *err);
    kn_status (*maintain)(rc_l2 *b, int64_t now_ms, size_t batch, uint64_t *removed, kn_err *err);
    void (*stats)(rc_l2 *b, rc_type t, rc_stats *s);
    void (*close)(rc_l2 *b);
} rc_l2_ops;

struct rc_l2 {
    const rc_l2_ops *ops;
};

kn_status rc_l2_get(rc_l2 *b, rc_type t, uint64_t model, rc_key k, int64_t now_ms, void **val, size_t *len,
                    int64_t *expiry_ms, kn_err *err) {
    KN_ASSERT(b && val && len);
    if ((unsigned)t >= RC_NTYPES) return kn_fail(err, KN_EINVAL, "cache L2: bad entry type %d", (int)t);
    return b->ops->get(b, t, model, k, now_ms, val, len, expiry_ms, err);
}

kn_status rc_l2_put_batch(rc_l2 *b, const rc_l2_item *items, size_t n, int64_t now_ms, kn_err *err) {
    KN_ASSERT(b && (items || !n));
    return n ? b->ops->put_batch(b, items, n, now_ms, err) : KN_OK;
}

kn_status rc_l2_clear(rc_l2 *b, bool all, rc_type t, uint64_t model, uint64_t *removed, kn_err *err) {
    KN_ASSERT(b);
    if (removed) *removed = 0;
    if (!all && (unsigned)t >= RC_NTYPES)
        return kn_fail(err, KN_EINVAL, "cache L2: bad entry type %d", (int)t);
    return b->ops->clear(b, all, t, model, removed, err);
}

kn_status rc_l2_maintain(rc_l2 *b, int64_t now_ms, size_t batch, uint64_t *removed, kn_err *err) {
    KN_ASSERT(b);
    if (removed) *removed = 0;
    return b->ops->maintain(b, now_ms, batch ? batch : 1000, removed, err);
}

void rc_l2_stats(rc_l2 *b, rc_type t, rc_stats *s) {
    KN_ASSERT(b && s);
    memset(s, 0, sizeof *s);
    if ((unsigned)t < RC_NTYPES) b->ops->stats(b, t, s);
}

void rc_l2_close(rc_l2 *b) {
    if (b) b->ops->close(b);
}

/* ---- LMDB backend: constants and byte helpers ------------------------------ */

#define HDR_LEN 48
#define KEY_LEN 24                    /* model tag || rc_key hi || rc_key lo, big endian */
#define AGE_KEY_LEN (8 + 1 + KEY_LEN) /* created_ms || type || key */
#define REC_VERSION 1
#define FLAG_RAW 1u          /* payload stored uncompressed */
#define RAW_MAX (256u << 20) /* largest value accepted or read back */
#define ZSTD_LEVEL 3
#define CLEAR_BATCH 1000          /* records per transaction in clear */
#define SCAN_FACTOR 64            /* the expiry scan examines at most batch * this per call */
#define MAINTAIN_BATCH_MAX 100000 /* records per maintenance transaction, at most */
#define FORMAT "kiln-cache 1"
#define MIB (1ull << 20)
#define GIB (1ull << 30)
#define FULL_PAUSE_MIN_MS 1000  /* first pause of the writes after a disk-full failure */
#define FULL_PAUSE_MAX_MS 60000 /* the pause doubles up to this while retries fail */

static const uint8_t MAGIC[4] = {'K', 'L', 'C', '1'};

enum { C_HITS, C_MISSES, C_EVICTIONS, C_EXPIRATIONS, C_CORRUPT, C_N };
static const char *const CTR_NAMES[C_N] = {"hits", "misses", "evictions", "expirations", "corrupt"};

static void put_be64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}
static uint64_t get_be64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}
static void put_le(uint8_t *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++, v >>= 8)
        p[i] = (uint8_t)v;
}
static uint64_t get_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void make_key(uint8_t out[KEY_LEN], uint64_t model, rc_key k) {
    put_be64(out, model);
    put_be64(out + 8, k.hi);
    put_be64(out + 16, k.lo);
}

static void make_age_key(uint8_t out[AGE_KEY_LEN], int64_t created, rc_type t, const uint8_t key[KEY_LEN]) {
    put_be64(out, (uint64_t)created);
    out[8] = (uint8_t)t;
    memcpy(out + 9, key, KEY_LEN);
}

static void key_hex(const uint8_t key[KEY_LEN], char out[2 * KEY_LEN + 2]) {
    static const char H[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < KEY_LEN; i++) {
        if (i == 8) *o++ = ':';
        *o++ = H[key[i] >> 4];
        *o++ = H[key[i] & 15];
    }
    *o = 0;
}

static uint64_t checksum(const uint8_t *hdr, const void *payload, size_t n) {
    XXH3_state_t st;
    XXH3_INITSTATE(&st);
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, hdr, 40);
    XXH3_64bits_update(&st, payload, n);
    return XXH3_64bits_digest(&st);
}

/* ---- records -------------------------------------------------------------- */

typedef struct rec_hdr {
    unsigned flags;
    uint32_t raw_len, stored_len;
    int64_t created_ms, expiry_ms;
    uint64_t model, sum;
} rec_hdr;

/* Parses and checks the header of value v found under key in type t's
 * database; NULL when sound, else why not. */
static const char *hdr_parse(const MDB_val *v, rc_type t, const uint8_t key[KEY_LEN], rec_hdr *h) {
    const uint8_t *p = v->mv_data;
    if (v->mv_size < HDR_LEN) return "shorter than its header";
    if (memcmp(p, MAGIC, 4)) return "bad magic";
    if (p[4] != REC_VERSION) return "unknown version";
    if (p[5] != (uint8_t)t) return "type does not match its database";
    h->flags = (unsigned)get_le(p + 6, 2);
    h->raw_len = (uint32_t)get_le(p + 8, 4);
    h->stored_len = (uint32_t)get_le(p + 12, 4);
    h->created_ms = (int64_t)get_le(p + 16, 8);
    h->expiry_ms = (int64_t)get_le(p + 24, 8);
    h->model = get_le(p + 32, 8);
    h->sum = get_le(p + 40, 8);
    if (h->flags & ~FLAG_RAW) return "unknown flags";
    if ((uint64_t)h->stored_len != v->mv_size - HDR_LEN) return "stored length does not match the value size";
    if (h->raw_len > RAW_MAX) return "raw length out of range";
    if ((h->flags & FLAG_RAW) && h->raw_len != h->stored_len) return "raw record with two lengths";
    if (h->model != get_be64(key)) return "model tag does not match its key";
    return NULL;
}

typedef enum rec_state { REC_OK, REC_EXPIRED, REC_CORRUPT, REC_NOMEM } rec_state;

/* Classifies the record v; on REC_OK with out non-NULL, *out is the value
 * (malloc'd) and *out_len its length. *why names a corruption. */
static rec_state rec_decode(const MDB_val *v, rc_type t, const uint8_t key[KEY_LEN], int64_t now_ms,
                            rec_hdr *h, void **out, size_t *out_len, const char **why) {
    if ((*why = hdr_parse(v, t, key, h))) return REC_CORRUPT;
    if (h->expiry_ms <= now_ms) return REC_EXPIRED;
    const uint8_t *payload = (const uint8_t *)v->mv_data + HDR_LEN;
    if (checksum(v->mv_data, payload, h->stored_len) != h->sum) {
        *why = "checksum mismatch";
        return REC_CORRUPT;
    }
    uint8_t *buf = malloc(h->raw_len ? h->raw_len : 1);
    if (!buf) return REC_NOMEM;
    if (h->flags & FLAG_RAW) {
        memcpy(buf, payload, h->raw_len);
    } else {
        unsigned long long fcs = ZSTD_getFrameContentSize(payload, h->stored_len);
        size_t got = fcs == h->raw_len ? ZSTD_decompress(buf, h->raw_len, payload, h->stored_len) : 0;
        if (fcs != h->raw_len || ZSTD_isError(got) || got != h->raw_len) {
            free(buf);
            *why = "zstd frame does not decompress to its raw length";
            return REC_CORRUPT;
        }
    }
    if (out) {
        *out = buf;
        *out_len = h->raw_len;
    } else {
        free(buf);
    }
    return REC_OK;
}

/* ---- the LMDB backend --------------------------------------------------------- */

typedef struct l2_lmdb {
    rc_l2 base; /* first: rc_l2 * <-> l2_lmdb * */
    MDB_env *env;
    MDB_dbi db[RC_NTYPES], age, meta;
    char *dir; /* owned */
    uint64_t max_bytes;
    bool ro;
    rc_tier_metrics met[RC_NTYPES];
    _Atomic uint64_t pending[RC_NTYPES][C_N];
    pthread_mutex_t ctr_mu;             /* persisted, and moving pending into it */
    uint64_t persisted[RC_NTYPES][C_N]; /* what "meta" held at our last write */
    pthread_mutex_t scan_mu;            /* the expiry scan's position */
    int scan_type;
    bool scan_has_key;
    uint8_t scan_key[KEY_LEN];
    pthread_mutex_t full_mu; /* the disk-full pause (see the top comment) */
    int64_t full_until_ms;   /* writes are skipped before this (now_ms clock) */
    int64_t full_pause_ms;   /* the current pause; 0: the disk is not known to be full */
    uint64_t full_skipped;   /* writes skipped in the current episode */
    uint64_t full_failed;    /* failed write attempts in the current episode */
} l2_lmdb;

/* Bytes free for us on the file system of the cache directory; UINT64_MAX when unknown. */
static uint64_t free_bytes(const l2_lmdb *l) {
    struct statvfs sv;
    if (statvfs(l->dir, &sv)) return UINT64_MAX;
    return (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
}

/* True when a failed write (LMDB status rc) failed for lack of disk space:
 * ENOSPC/EDQUOT, or LMDB's EIO for a short page write while the file system
 * has less free space than the write needed (need bytes, plus slack for the
 * tree pages it touches). */
static bool is_disk_full(const l2_lmdb *l, int rc, uint64_t need) {
    if (rc == ENOSPC || rc == EDQUOT) return true;
    return rc == EIO && free_bytes(l) < need + 256 * 1024;
}

/* True when writes are paused by a full disk at now_ms (counts n skipped). */
static bool full_paused(l2_lmdb *l, int64_t now_ms, size_t n) {
    pthread_mutex_lock(&l->full_mu);
    bool paused = l->full_pause_ms && now_ms < l->full_until_ms;
    if (paused) l->full_skipped += n;
    pthread_mutex_unlock(&l->full_mu);
    return paused;
}

/* A write failed for lack of space: starts or lengthens the pause and
 * returns the error that names it. */
static kn_status full_begin(l2_lmdb *l, int64_t now_ms, size_t n, kn_err *err) {
    pthread_mutex_lock(&l->full_mu);
    int64_t p = l->full_pause_ms ? l->full_pause_ms * 2 : FULL_PAUSE_MIN_MS;
    if (p > FULL_PAUSE_MAX_MS) p = FULL_PAUSE_MAX_MS;
    l->full_pause_ms = p;
    l->full_until_ms = now_ms + p;
    l->full_failed += n;
    uint64_t skipped = l->full_skipped, failed = l->full_failed;
    pthread_mutex_unlock(&l->full_mu);
    uint64_t fb = free_bytes(l);
    char fr[48] = "";
    if (fb != UINT64_MAX) snprintf(fr, sizeof fr, " (%llu KiB free)", (unsigned long long)(fb >> 10));
    return kn_fail(
        err, KN_EIO,
        "cache L2 %s: write: no space left on device%s; disk writes pause for %.0f s (%llu failed, "
        "%llu skipped since the disk filled); answers are still computed and served",
        l->dir, fr, (double)p / 1000.0, (unsigned long long)failed, (unsigned long long)skipped);
}

/* A write succeeded: ends a disk-full episode (logged). */
static void full_end(l2_lmdb *l) {
    pthread_mutex_lock(&l->full_mu);
    bool was = l->full_pause_ms != 0;
    uint64_t skipped = l->full_skipped, failed = l->full_failed;
    l->full_pause_ms = 0;
    l->full_until_ms = 0;
    l->full_skipped = l->full_failed = 0;
    pthread_mutex_unlock(&l->full_mu);
    if (was)
        KN_INFO(
            "cache L2 %s: disk writes work again after the disk was full (%llu writes failed, %llu skipped)",
            l->dir, (unsigned long long)failed, (unsigned long long)skipped);
}

static kn_status mdb_fail(kn_err *err, int rc, const char *what, const l2_lmdb *l) {
    return kn_fail(err, rc == ENOMEM ? KN_ENOMEM : KN_EIO, "cache L2 %s: %s: %s", l->dir, what,
                   mdb_strerror(rc));
}

static void count(l2_lmdb *l, rc_type t, int c) {
    atomic_fetch_add_explicit(&l->pending[t][c], 1, memory_order_relaxed);
    const rc_tier_metrics *m = &l->met[t];
    met_series *s = c == C_HITS          ? m->hits
                    : c == C_MISSES      ? m->misses
                    : c == C_EVICTIONS   ? m->evictions
                    : c == C_EXPIRATIONS ? m->expirations
                                         : NULL;
    met_inc(s);
}

static void meta_name(char *buf, size_t cap, const char *what, rc_type t) {
    snprintf(buf, cap, "%s.%s", what, rc_type_name(t));
}

static int meta_get_u64(l2_lmdb *l, MDB_txn *txn, const char *name, uint64_t *out) {
    MDB_val k = {strlen(name), (void *)name}, v;
    int rc = mdb_get(txn, l->meta, &k, &v);
    *out = 0;
    if (rc == MDB_NOTFOUND) return 0;
    if (rc) return rc;
    if (v.mv_size == 8) *out = get_le(v.mv_data, 8);
    return 0;
}

static int meta_put_u64(l2_lmdb *l, MDB_txn *txn, const char *name, uint64_t val) {
    uint8_t b[8];
    put_le(b, val, 8);
    MDB_val k = {strlen(name), (void *)name}, v = {8, b};
    return mdb_put(txn, l->meta, &k, &v, 0);
}

/* Adds delta[t] to "bytes.<t>" (clamped at 0) for every type with a change. */
static int bytes_apply(l2_lmdb *l, MDB_txn *txn, const int64_t delta[RC_NTYPES]) {
    for (int t = 0; t < RC_NTYPES; t++) {
        if (!delta[t]) continue;
        char name[32];
        uint64_t cur;
        meta_name(name, sizeof name, "bytes", (rc_type)t);
        int rc = meta_get_u64(l, txn, name, &cur);
        if (rc) return rc;
        int64_t nv = (int64_t)cur + delta[t];
        if ((rc = meta_put_u64(l, txn, name, nv < 0 ? 0 : (uint64_t)nv))) return rc;
    }
    return 0;
}

static int bytes_total(l2_lmdb *l, MDB_txn *txn, uint64_t *total) {
    *total = 0;
    for (int t = 0; t < RC_NTYPES; t++) {
        char name[32];
        uint64_t v;
        meta_name(name, sizeof name, "bytes", (rc_type)t);
        int rc = meta_get_u64(l, txn, name, &v);
        if (rc) return rc;
        *total += v;
    }
    return 0;
}

/* Commits a write transaction, adding the pending counter deltas to "meta"
 * in it. Aborts txn on failure. */
static bool pending_any(l2_lmdb *l) {
    for (int t = 0; t < RC_NTYPES; t++)
        for (int c = 0; c < C_N; c++)
            if (atomic_load_explicit(&l->pending[t][c], memory_order_relaxed)) return true;
    return false;
}

static int commit(l2_lmdb *l, MDB_txn *txn) {
    if (!pending_any(l)) return mdb_txn_commit(txn); /* nothing to add: no need to hold ctr_mu */
    uint64_t snap[RC_NTYPES][C_N], nv[RC_NTYPES][C_N];
    bool any = false;
    pthread_mutex_lock(&l->ctr_mu);
    int rc = 0;
    for (int t = 0; t < RC_NTYPES; t++)
        for (int c = 0; c < C_N; c++) {
            snap[t][c] = atomic_load_explicit(&l->pending[t][c], memory_order_relaxed);
            nv[t][c] = l->persisted[t][c];
            if (!snap[t][c] || rc) continue;
            char name[32];
            uint64_t cur;
            meta_name(name, sizeof name, CTR_NAMES[c], (rc_type)t);
            if (!(rc = meta_get_u64(l, txn, name, &cur))) {
                nv[t][c] = cur + snap[t][c];
                rc = meta_put_u64(l, txn, name, nv[t][c]);
            }
            any = true;
        }
    if (rc) {
        pthread_mutex_unlock(&l->ctr_mu);
        mdb_txn_abort(txn);
        return rc;
    }
    rc = mdb_txn_commit(txn);
    if (!rc && any)
        for (int t = 0; t < RC_NTYPES; t++)
            for (int c = 0; c < C_N; c++) {
                if (!snap[t][c]) continue;
                l->persisted[t][c] = nv[t][c];
                atomic_fetch_sub_explicit(&l->pending[t][c], snap[t][c], memory_order_relaxed);
            }
    pthread_mutex_unlock(&l->ctr_mu);
    return rc;
}

/* Deletes the record under key of type t (whose value is v, header h when
 * hdr_ok) and its age entry; adds its size to *freed. */
static int del_record(l2_lmdb *l, MDB_txn *txn, rc_type t, const uint8_t key[KEY_LEN], size_t vsize,
                      const rec_hdr *h, int64_t *freed) {
    MDB_val k = {KEY_LEN, (void *)key};
    int rc = mdb_del(txn, l->db[t], &k, NULL);
    if (rc) return rc;
    *freed += (int64_t)(KEY_LEN + vsize);
    if (h) {
        uint8_t ak[AGE_KEY_LEN];
        make_age_key(ak, h->created_ms, t, key);
        MDB_val a = {AGE_KEY_LEN, ak};
        rc = mdb_del(txn, l->age, &a, NULL);
        if (rc == MDB_NOTFOUND) rc = 0;
    }
    return rc;
}

/* ---- get ------------------------------------------------------------------------ */

/* In a write transaction: deletes the record under key again classified as
 * want (it may have been replaced since the read). */
static void delete_bad(l2_lmdb *l, rc_type t, const uint8_t key[KEY_LEN], int64_t now_ms, rec_state want) {
    MDB_txn *txn;
    int rc = mdb_txn_begin(l->env, NULL, 0, &txn);
    if (rc) {
        KN_WARN("cache L2 %s: cannot delete a bad record: %s", l->dir, mdb_strerror(rc));
        return;
    }
    MDB_val k = {KEY_LEN, (void *)key}, v;
    rec_hdr h;
    const char *why;
    int64_t delta[RC_NTYPES] = {0}, freed = 0;
    rc = mdb_get(txn, l->db[t], &k, &v);
    if (!rc) {
        rec_state st = rec_decode(&v, t, key, now_ms, &h, NULL, NULL, &why);
        bool hdr_ok = !hdr_parse(&v, t, key, &h);
        if (st == want) rc = del_record(l, txn, t, key, v.mv_size, hdr_ok ? &h : NULL, &freed);
    } else if (rc == MDB_NOTFOUND) {
        rc = 0;
    }
    delta[t] = -freed;
    if (!rc) rc = bytes_apply(l, txn, delta);
    if (!rc)
        rc = commit(l, txn);
    else
        mdb_txn_abort(txn);
    if (rc) KN_WARN("cache L2 %s: cannot delete a bad record: %s", l->dir, mdb_strerror(rc));
}

static kn_status lm_get(rc_l2 *b, rc_type t, uint64_t model, rc_key k, int64_t now_ms, void **val,
                        size_t *len, int64_t *expiry_ms, kn_err *err) {
    l2_lmdb *l = (l2_lmdb *)b;
    *val = NULL;
    *len = 0;
    uint8_t key[KEY_LEN];
    make_key(key, model, k);
    MDB_txn *txn;
    int rc = mdb_txn_begin(l->env, NULL, MDB_RDONLY, &txn);
    if (rc) return mdb_fail(err, rc, "read transaction", l);
    MDB_val kv = {KEY_LEN, key}, v;
    rc = mdb_get(txn, l->db[t], &kv, &v);
    if (rc == MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        count(l, t, C_MISSES);
        return KN_ENOTFOUND;
    }
    if (rc) {
        mdb_txn_abort(txn);
        return mdb_fail(err, rc, "get", l);
    }
    rec_hdr h;
    const char *why = NULL;
    rec_state st = rec_decode(&v, t, key, now_ms, &h, val, len, &why);
    mdb_txn_abort(txn);
    switch (st) {
    case REC_OK:
        if (expiry_ms) *expiry_ms = h.expiry_ms;
        count(l, t, C_HITS);
        return KN_OK;
    case REC_NOMEM:
        return kn_fail(err, KN_ENOMEM, "cache L2: out of memory reading a %u-byte value", h.raw_len);
    case REC_EXPIRED:
        count(l, t, C_EXPIRATIONS);
        count(l, t, C_MISSES);
        break;
    case REC_CORRUPT: {
        char hex[2 * KEY_LEN + 2];
        key_hex(key, hex);
        KN_WARN("cache L2 %s: corrupt %s record %s (%s)%s", l->dir, rc_type_name(t), hex, why,
                l->ro ? "" : ": deleted");
        count(l, t, C_CORRUPT);
        count(l, t, C_MISSES);
        break;
    }
    }
    if (!l->ro) delete_bad(l, t, key, now_ms, st);
    return KN_ENOTFOUND;
}

/* ---- eviction of the oldest ------------------------------------------------------ */

/* One transaction: removes up to max records, oldest first (orphan age
 * entries are removed on the way without counting). *records counts the
 * records removed, *freed their bytes, *walked the age entries removed. */
static int evict_oldest_txn(l2_lmdb *l, size_t max, uint64_t want_free, uint64_t *records,
                            uint64_t *freed_out, size_t *walked) {
    MDB_txn *txn;
    MDB_cursor *cur;
    int rc = mdb_txn_begin(l->env, NULL, 0, &txn);
    if (rc) return rc;
    if ((rc = mdb_cursor_open(txn, l->age, &cur))) {
        mdb_txn_abort(txn);
        return rc;
    }
    int64_t delta[RC_NTYPES] = {0};
    uint64_t freed = 0, n = 0;
    size_t w = 0;
    MDB_val ak, av;
    while (n < max && freed < want_free && !(rc = mdb_cursor_get(cur, &ak, &av, MDB_FIRST))) {
        if (ak.mv_size != AGE_KEY_LEN || ((const uint8_t *)ak.mv_data)[8] >= RC_NTYPES) {
            if ((rc = mdb_cursor_del(cur, 0))) break; /* not ours: drop it */
            w++;
            continue;
        }
        uint8_t a[AGE_KEY_LEN];
        memcpy(a, ak.mv_data, AGE_KEY_LEN);
        rc_type t = (rc_type)a[8];
        const uint8_t *key = a + 9;
        int64_t created = (int64_t)get_be64(a);
        if ((rc = mdb_cursor_del(cur, 0))) break;
        w++;
        MDB_val k = {KEY_LEN, (void *)key}, v;
        rec_hdr h;
        rc = mdb_get(txn, l->db[t], &k, &v);
        if (rc == MDB_NOTFOUND) {
            rc = 0;
            continue;
        }
        if (rc) break;
        bool hdr_ok = !hdr_parse(&v, t, key, &h);
        if (hdr_ok && h.created_ms != created) continue; /* orphan: the key was rewritten */
        size_t vs = v.mv_size;
        if ((rc = mdb_del(txn, l->db[t], &k, NULL))) break;
        delta[t] -= (int64_t)(KEY_LEN + vs);
        freed += KEY_LEN + vs;
        n++;
        count(l, t, C_EVICTIONS);
    }
    if (rc == MDB_NOTFOUND) rc = 0; /* the age index is empty */
    mdb_cursor_close(cur);
    if (!rc) rc = bytes_apply(l, txn, delta);
    if (!rc)
        rc = commit(l, txn);
    else
        mdb_txn_abort(txn);
    if (!rc) {
        *records += n;
        *freed_out += freed;
        *walked += w;
    }
    return rc;
}

/* Frees at least want_free bytes (when there are records) for a write that
 * found the map full; smaller transactions when even a delete finds it full. */
static int evict_for_space(l2_lmdb *l, uint64_t want_free, uint64_t *removed) {
    size_t per_txn = CLEAR_BATCH;
    uint64_t freed = 0;
    for (int guard = 0; guard < 100000 && freed < want_free; guard++) {
        size_t walked = 0;
        int rc = evict_oldest_txn(l, per_txn, want_free - freed, removed, &freed, &walked);
        if (rc == MDB_MAP_FULL && per_txn > 1) {
            per_txn /= 4;
            continue;
        }
        if (rc) return rc;
        if (!walked) break; /* nothing left */
    }
    /* LMDB reuses the pages a transaction freed only from the second
     * transaction after it (the one in between keeps the older snapshot
     * alive), so one small write lets the retry use what was just freed. */
    MDB_txn *txn;
    int rc = mdb_txn_begin(l->env, NULL, 0, &txn);
    if (rc) return rc;
    MDB_val k = {6, "format"}, v = {strlen(FORMAT), FORMAT};
    if ((rc = mdb_put(txn, l->meta, &k, &v, 0))) {
        mdb_txn_abort(txn);
        return rc;
    }
    return commit(l, txn);
}

/* ---- put --------------------------------------------------------------------------- */

typedef struct prepared {
    rc_type t;
    uint8_t key[KEY_LEN];
    uint8_t *rec; /* header + payload, owned */
    size_t rec_len;
} prepared;

static int put_txn(l2_lmdb *l, const prepared *p, size_t n, int64_t now_ms) {
    MDB_txn *txn;
    int rc = mdb_txn_begin(l->env, NULL, 0, &txn);
    if (rc) return rc;
    int64_t delta[RC_NTYPES] = {0};
    for (size_t i = 0; i < n && !rc; i++) {
        if (!p[i].rec) continue;
        MDB_val k = {KEY_LEN, (void *)p[i].key}, old;
        rc = mdb_get(txn, l->db[p[i].t], &k, &old);
        if (!rc) {
            rec_hdr h;
            delta[p[i].t] -= (int64_t)(KEY_LEN + old.mv_size);
            if (!hdr_parse(&old, p[i].t, p[i].key, &h)) {
                uint8_t ak[AGE_KEY_LEN];
                make_age_key(ak, h.created_ms, p[i].t, p[i].key);
                MDB_val a = {AGE_KEY_LEN, ak};
                rc = mdb_del(txn, l->age, &a, NULL);
                if (rc == MDB_NOTFOUND) rc = 0;
            }
        } else if (rc == MDB_NOTFOUND) {
            rc = 0;
        }
        if (rc) break;
        MDB_val v = {p[i].rec_len, p[i].rec};
        if ((rc = mdb_put(txn, l->db[p[i].t], &k, &v, 0))) break;
        uint8_t ak[AGE_KEY_LEN];
        make_age_key(ak, now_ms, p[i].t, p[i].key);
        MDB_val a = {AGE_KEY_LEN, ak}, e = {0, NULL};
        if ((rc = mdb_put(txn, l->age, &a, &e, 0))) break;
        delta[p[i].t] += (int64_t)(KEY_LEN + p[i].rec_len);
    }
    if (!rc) rc = bytes_apply(l, txn, delta);
    if (!rc) return commit(l, txn);
    mdb_txn_abort(txn);
    return rc;
}

static kn_status lm_put_batch(rc_l2 *b, const rc_l2_item *items, size_t n, int64_t now_ms, kn_err *err) {
    l2_lmdb *l = (l2_lmdb *)b;
    if (l->ro) return kn_fail(err, KN_EUNSUPPORTED, "cache L2 %s: opened read-only; cannot write", l->dir);
    for (size_t i = 0; i < n; i++) {
        if ((unsigned)items[i].type >= RC_NTYPES)
            return kn_fail(err, KN_EINVAL, "cache L2: item %zu: bad entry type %d", i, (int)items[i].type);
        if (items[i].len > RAW_MAX)
            return kn_fail(err, KN_ERANGE, "cache L2: item %zu: value of %zu bytes (at most %u)", i,
                           items[i].len, RAW_MAX);
        if (items[i].len && !items[i].val) return kn_fail(err, KN_EINVAL, "cache L2: item %zu: no value", i);
    }
    if (full_paused(l, now_ms, n)) return KN_OK; /* the disk is full: skipped, counted */
    prepared *p = calloc(n, sizeof *p);
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    kn_status st = KN_OK;
    uint64_t total = 0;
    if (!p || !cctx) {
        st = kn_fail(err, KN_ENOMEM, "cache L2: out of memory preparing %zu records", n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const rc_l2_item *it = &items[i];
        if (it->expiry_ms <= now_ms) continue; /* already expired: nothing to keep */
        size_t bound = ZSTD_compressBound(it->len);
        uint8_t *rec = malloc(HDR_LEN + (bound > it->len ? bound : it->len));
        if (!rec) {
            st = kn_fail(err, KN_ENOMEM, "cache L2: out of memory compressing a %zu-byte value", it->len);
            goto out;
        }
        size_t z = it->len ? ZSTD_compressCCtx(cctx, rec + HDR_LEN, bound, it->val, it->len, ZSTD_LEVEL) : 0;
        unsigned flags = 0;
        if (!it->len || ZSTD_isError(z) || z >= it->len) {
            if (it->len) memcpy(rec + HDR_LEN, it->val, it->len);
            z = it->len;
            flags = FLAG_RAW;
        }
        p[i].t = it->type;
        make_key(p[i].key, it->model, it->key);
        memcpy(rec, MAGIC, 4);
        rec[4] = REC_VERSION;
        rec[5] = (uint8_t)it->type;
        put_le(rec + 6, flags, 2);
        put_le(rec + 8, it->len, 4);
        put_le(rec + 12, z, 4);
        put_le(rec + 16, (uint64_t)now_ms, 8);
        put_le(rec + 24, (uint64_t)it->expiry_ms, 8);
        put_le(rec + 32, it->model, 8);
        put_le(rec + 40, checksum(rec, rec + HDR_LEN, z), 8);
        p[i].rec_len = HDR_LEN + z;
        if (KEY_LEN + p[i].rec_len > l->max_bytes) { /* could never stay: evicted at once */
            free(rec);
            continue;
        }
        p[i].rec = rec;
        total += KEY_LEN + p[i].rec_len + AGE_KEY_LEN;
    }
    int rc = put_txn(l, p, n, now_ms);
    if (rc == MDB_MAP_FULL) {
        uint64_t evicted = 0, want = 2 * total;
        if (want < l->max_bytes / 64) want = l->max_bytes / 64;
        int erc = evict_for_space(l, want, &evicted);
        KN_INFO("cache L2 %s: map full: evicted %llu oldest records, retrying", l->dir,
                (unsigned long long)evicted);
        rc = erc ? erc : put_txn(l, p, n, now_ms);
    }
    if (rc && is_disk_full(l, rc, total))
        st = full_begin(l, now_ms, n, err);
    else if (rc)
        st = mdb_fail(err, rc, "write", l);
    else
        full_end(l);
out:
    for (size_t i = 0; p && i < n; i++)
        free(p[i].rec);
    free(p);
    ZSTD_freeCCtx(cctx);
    return st;
}

/* ---- maintenance ------------------------------------------------------------------- */

typedef struct victim {
    rc_type t;
    uint8_t key[KEY_LEN];
    bool corrupt;
} victim;

/* One transaction of the expiry scan: removes up to batch expired records
 * (and records whose header is corrupt), examining at most batch *
 * SCAN_FACTOR, resuming where the last call stopped and wrapping around. */
static int expire_scan(l2_lmdb *l, int64_t now_ms, size_t batch, uint64_t *removed) {
    victim *vs = malloc(batch * sizeof *vs);
    if (!vs) return ENOMEM;
    MDB_txn *txn;
    int rc = mdb_txn_begin(l->env, NULL, 0, &txn);
    if (rc) {
        free(vs);
        return rc;
    }
    pthread_mutex_lock(&l->scan_mu);
    size_t nv = 0, examined = 0, limit = batch * SCAN_FACTOR;
    int type = l->scan_type, switches = 0;
    bool has = l->scan_has_key;
    uint8_t pos[KEY_LEN];
    memcpy(pos, l->scan_key, KEY_LEN);
    while (!rc && nv < batch && examined < limit && switches < RC_NTYPES) {
        MDB_cursor *cur;
        if ((rc = mdb_cursor_open(txn, l->db[type], &cur))) break;
        MDB_val k = {KEY_LEN, pos}, v;
        int g = has ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        if (!g && has && k.mv_size == KEY_LEN && !memcmp(k.mv_data, pos, KEY_LEN))
            g = mdb_cursor_get(cur, &k, &v, MDB_NEXT); /* pos itself was examined already */
        while (!g && nv < batch && examined < limit) {
            examined++;
            if (k.mv_size == KEY_LEN) {
                memcpy(pos, k.mv_data, KEY_LEN);
                has = true;
                rec_hdr h;
                const char *why = hdr_parse(&v, (rc_type)type, pos, &h);
                if (why || h.expiry_ms <= now_ms) {
                    vs[nv].t = (rc_type)type;
                    memcpy(vs[nv].key, pos, KEY_LEN);
                    vs[nv].corrupt = why != NULL;
                    if (why) {
                        char hex[2 * KEY_LEN + 2];
                        key_hex(pos, hex);
                        KN_WARN("cache L2 %s: corrupt %s record %s (%s): deleted", l->dir,
                                rc_type_name((rc_type)type), hex, why);
                    }
                    nv++;
                }
            }
            g = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
        mdb_cursor_close(cur);
        if (g && g != MDB_NOTFOUND) rc = g;
        if (g == MDB_NOTFOUND) { /* end of this type: the next one from its start */
            type = (type + 1) % RC_NTYPES;
            has = false;
            switches++;
        }
    }
    int64_t delta[RC_NTYPES] = {0};
    for (size_t i = 0; i < nv && !rc; i++) {
        MDB_val k = {KEY_LEN, vs[i].key}, v;
        rec_hdr h;
        if ((rc = mdb_get(txn, l->db[vs[i].t], &k, &v))) {
            if (rc == MDB_NOTFOUND) rc = 0;
            continue;
        }
        bool hdr_ok = !hdr_parse(&v, vs[i].t, vs[i].key, &h);
        int64_t freed = 0;
        rc = del_record(l, txn, vs[i].t, vs[i].key, v.mv_size, hdr_ok ? &h : NULL, &freed);
        delta[vs[i].t] -= freed;
    }
    if (!rc) rc = bytes_apply(l, txn, delta);
    if (!rc) {
        for (size_t i = 0; i < nv; i++) {
            if (vs[i].corrupt) {
                count(l, vs[i].t, C_CORRUPT);
            } else {
                count(l, vs[i].t, C_EXPIRATIONS);
            }
        }
        rc = commit(l, txn);
    } else {
        mdb_txn_abort(txn);
    }
    if (!rc) {
        l->scan_type = type;
        l->scan_has_key = has;
        memcpy(l->scan_key, pos, KEY_LEN);
        *removed += nv;
    }
    pthread_mutex_unlock(&l->scan_mu);
    free(vs);
    return rc;
}

static kn_status lm_maintain(rc_l2 *b, int64_t now_ms, size_t batch, uint64_t *removed, kn_err *err) {
    l2_lmdb *l = (l2_lmdb *)b;
    if (l->ro) return kn_fail(err, KN_EUNSUPPORTED, "cache L2 %s: opened read-only; cannot maintain", l->dir);
    if (batch > MAINTAIN_BATCH_MAX) batch = MAINTAIN_BATCH_MAX;
    if (removed) *removed = 0;
    if (full_paused(l, now_ms, 0)) return KN_OK; /* the disk is full: no write transactions now */
    uint64_t n = 0;
    int rc = expire_scan(l, now_ms, batch, &n);
    while (!rc) { /* size: the oldest go while over the limit */
        MDB_txn *txn;
        uint64_t total;
        if ((rc = mdb_txn_begin(l->env, NULL, MDB_RDONLY, &txn))) break;
        rc = bytes_total(l, txn, &total);
        mdb_txn_abort(txn);
        if (rc || total <= l->max_bytes) break;
        size_t walked = 0;
        uint64_t freed = 0;
        rc = evict_oldest_txn(l, batch, total - l->max_bytes, &n, &freed, &walked);
        if (!walked) break;
    }
    if (!rc && pending_any(l)) { /* flush the counters */
        MDB_txn *txn;
        if (!(rc = mdb_txn_begin(l->env, NULL, 0, &txn))) rc = commit(l, txn);
    }
    if (removed) *removed = n;
    if (rc && is_disk_full(l, rc, 0)) return full_begin(l, now_ms, 0, err);
    return rc ? mdb_fail(err, rc, "maintenance", l) : KN_OK;
}

/* ---- clear ---------------------------------------------------------------------------- */

/* Removes the age entries of type t whose record is gone (after a drop),
 * CLEAR_BATCH per transaction. */
static int clear_orphans(l2_lmdb *l, rc_type t) {
    uint8_t pos[AGE_KEY_LEN] = {0};
    bool has = false, done = false;
    while (!done) {
        MDB_txn *txn;
        MDB_cursor *cur;
        int rc = mdb_txn_begin(l->env, NULL, 0, &txn);
        if (rc) return rc;
        if ((rc = mdb_cursor_open(txn, l->age, &cur))) {
            mdb_txn_abort(txn);
            return rc;
        }
        MDB_val k = {AGE_KEY_LEN, pos}, v;
        int g = has ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        size_t seen = 0;
        while (!g && seen < CLEAR_BATCH) {
            seen++;
            if (k.mv_size == AGE_KEY_LEN) memcpy(pos, k.mv_data, AGE_KEY_LEN);
            has = true;
            const uint8_t *a = k.mv_data;
            bool orphan = false;
            if (k.mv_size != AGE_KEY_LEN) {
                orphan = true;
            } else if (a[8] == (uint8_t)t) {
                MDB_val rk = {KEY_LEN, (void *)(a + 9)}, rv;
                rec_hdr h;
                int r = mdb_get(txn, l->db[t], &rk, &rv);
                if (r && r != MDB_NOTFOUND) {
                    g = r;
                    break;
                }
                orphan = r == MDB_NOTFOUND ||
                         (!hdr_parse(&rv, t, a + 9, &h) && h.created_ms != (int64_t)get_be64(a));
            }
            if (orphan) {
                if ((g = mdb_cursor_del(cur, 0))) break;
                k = (MDB_val){AGE_KEY_LEN, pos}; /* the entry after the deleted one */
                g = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
                continue;
            }
            g = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
        mdb_cursor_close(cur);
        if (g == MDB_NOTFOUND)
            done = true;
        else if (g) {
            mdb_txn_abort(txn);
            return g;
        }
        if ((rc = commit(l, txn))) return rc;
    }
    return 0;
}

/* Removes every record of type t tagged model, CLEAR_BATCH per transaction. */
static int clear_model(l2_lmdb *l, rc_type t, uint64_t model, uint64_t *removed) {
    uint8_t prefix[8];
    put_be64(prefix, model);
    for (;;) {
        MDB_txn *txn;
        MDB_cursor *cur;
        int rc = mdb_txn_begin(l->env, NULL, 0, &txn);
        if (rc) return rc;
        if ((rc = mdb_cursor_open(txn, l->db[t], &cur))) {
            mdb_txn_abort(txn);
            return rc;
        }
        uint8_t seek[KEY_LEN] = {0};
        memcpy(seek, prefix, 8);
        MDB_val k = {KEY_LEN, seek}, v;
        int64_t delta[RC_NTYPES] = {0};
        size_t n = 0;
        int g = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        while (!g && n < CLEAR_BATCH && k.mv_size == KEY_LEN && !memcmp(k.mv_data, prefix, 8)) {
            uint8_t key[KEY_LEN];
            memcpy(key, k.mv_data, KEY_LEN);
            rec_hdr h;
            bool hdr_ok = !hdr_parse(&v, t, key, &h);
            delta[t] -= (int64_t)(KEY_LEN + v.mv_size);
            if ((g = mdb_cursor_del(cur, 0))) break;
            n++;
            if (hdr_ok) {
                uint8_t ak[AGE_KEY_LEN];
                make_age_key(ak, h.created_ms, t, key);
                MDB_val a = {AGE_KEY_LEN, ak};
                g = mdb_del(txn, l->age, &a, NULL);
                if (g && g != MDB_NOTFOUND) break;
            }
            k = (MDB_val){KEY_LEN, seek}; /* the next one of the model */
            g = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        }
        mdb_cursor_close(cur);
        if (g && g != MDB_NOTFOUND) {
            mdb_txn_abort(txn);
            return g;
        }
        if ((rc = bytes_apply(l, txn, delta))) {
            mdb_txn_abort(txn);
            return rc;
        }
        if ((rc = commit(l, txn))) return rc;
        *removed += n;
        if (n < CLEAR_BATCH) return 0;
    }
}

static kn_status lm_clear(rc_l2 *b, bool all, rc_type t, uint64_t model, uint64_t *removed, kn_err *err) {
    l2_lmdb *l = (l2_lmdb *)b;
    if (l->ro) return kn_fail(err, KN_EUNSUPPORTED, "cache L2 %s: opened read-only; cannot clear", l->dir);
    uint64_t n = 0;
    int rc = 0;
    if (model) {
        for (int i = 0; i < RC_NTYPES && !rc; i++)
            if (all || i == (int)t) rc = clear_model(l, (rc_type)i, model, &n);
    } else {
        MDB_txn *txn;
        if (!(rc = mdb_txn_begin(l->env, NULL, 0, &txn))) {
            for (int i = 0; i < RC_NTYPES && !rc; i++) {
                if (!all && i != (int)t) continue;
                MDB_stat ms;
                char name[32];
                meta_name(name, sizeof name, "bytes", (rc_type)i);
                if (!(rc = mdb_stat(txn, l->db[i], &ms))) n += ms.ms_entries;
                if (!rc) rc = mdb_drop(txn, l->db[i], 0);
                if (!rc) rc = meta_put_u64(l, txn, name, 0);
            }
            if (!rc && all) rc = mdb_drop(txn, l->age, 0);
            if (!rc)
                rc = commit(l, txn);
            else
                mdb_txn_abort(txn);
        }
        if (!rc && !all) rc = clear_orphans(l, t);
    }
    if (removed) *removed = n;
    return rc ? mdb_fail(err, rc, "clear", l) : KN_OK;
}

/* ---- stats and close ---------------------------------------------------------------- */

static void lm_stats(rc_l2 *b, rc_type t, rc_stats *s) {
    l2_lmdb *l = (l2_lmdb *)b;
    uint64_t c[C_N];
    pthread_mutex_lock(&l->ctr_mu);
    for (int i = 0; i < C_N; i++)
        c[i] = l->persisted[t][i] + atomic_load_explicit(&l->pending[t][i], memory_order_relaxed);
    pthread_mutex_unlock(&l->ctr_mu);
    s->hits = c[C_HITS];
    s->misses = c[C_MISSES];
    s->evictions = c[C_EVICTIONS];
    s->expirations = c[C_EXPIRATIONS];
    s->corrupt = c[C_CORRUPT];
    MDB_txn *txn;
    if (mdb_txn_begin(l->env, NULL, MDB_RDONLY, &txn)) return;
    MDB_stat ms;
    char name[32];
    if (!mdb_stat(txn, l->db[t], &ms)) s->entries = ms.ms_entries;
    meta_name(name, sizeof name, "bytes", t);
    meta_get_u64(l, txn, name, &s->bytes);
    mdb_txn_abort(txn);
}

static void lm_close(rc_l2 *b) {
    l2_lmdb *l = (l2_lmdb *)b;
    if (l->env) {
        if (!l->ro && pending_any(l)) { /* the last counter deltas */
            MDB_txn *txn;
            int rc = mdb_txn_begin(l->env, NULL, 0, &txn);
            if (!rc) rc = commit(l, txn);
            if (rc) KN_WARN("cache L2 %s: counters not saved: %s", l->dir, mdb_strerror(rc));
        }
        mdb_env_close(l->env);
    }
    pthread_mutex_destroy(&l->ctr_mu);
    pthread_mutex_destroy(&l->scan_mu);
    pthread_mutex_destroy(&l->full_mu);
    free(l->dir);
    free(l);
}

static const rc_l2_ops LMDB_OPS = {
    .name = "lmdb",
    .get = lm_get,
    .put_batch = lm_put_batch,
    .clear = lm_clear,
    .maintain = lm_maintain,
    .stats = lm_stats,
    .close = lm_close,
};

/* ---- open --------------------------------------------------------------------------- */

/* True when dir holds nothing but (maybe) an LMDB lock file. */
static bool dir_is_empty(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return false;
    struct dirent *e;
    bool empty = true;
    while (empty && (e = readdir(d)))
        empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, "lock.mdb");
    closedir(d);
    return empty;
}

/* Opens (or, when new and writable, creates) the four databases and loads
 * the persisted counters. */
static kn_status open_dbs(l2_lmdb *l, kn_err *err) {
    MDB_txn *txn;
    int rc = mdb_txn_begin(l->env, NULL, l->ro ? MDB_RDONLY : 0, &txn);
    if (rc) return mdb_fail(err, rc, "transaction", l);
    kn_status st = KN_OK;
    rc = mdb_dbi_open(txn, "meta", 0, &l->meta);
    if (rc == MDB_NOTFOUND && !l->ro) { /* a new store (or one whose creation never committed) */
        MDB_dbi main;
        MDB_stat ms;
        if ((rc = mdb_dbi_open(txn, NULL, 0, &main)) || (rc = mdb_stat(txn, main, &ms))) goto lmdb_fail;
        if (ms.ms_entries) goto not_kiln;
        MDB_val k = {6, "format"}, v = {strlen(FORMAT), FORMAT};
        if ((rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &l->meta)) || (rc = mdb_put(txn, l->meta, &k, &v, 0)))
            goto lmdb_fail;
    } else if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE) {
        goto not_kiln;
    } else if (rc) {
        goto lmdb_fail;
    } else {
        MDB_val k = {6, "format"}, v;
        rc = mdb_get(txn, l->meta, &k, &v);
        if (rc == MDB_NOTFOUND ||
            (!rc && (v.mv_size != strlen(FORMAT) || memcmp(v.mv_data, FORMAT, v.mv_size))))
            goto not_kiln;
        if (rc) goto lmdb_fail;
    }
    unsigned cf = l->ro ? 0 : MDB_CREATE;
    for (int t = 0; t < RC_NTYPES && !rc; t++)
        rc = mdb_dbi_open(txn, rc_type_name((rc_type)t), cf, &l->db[t]);
    if (!rc) rc = mdb_dbi_open(txn, "age", cf, &l->age);
    if (rc == MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        return kn_fail(err, KN_EFORMAT, "cache L2 %s: a kiln cache missing one of its databases", l->dir);
    }
    if (rc) goto lmdb_fail;
    for (int t = 0; t < RC_NTYPES && !rc; t++)
        for (int c = 0; c < C_N && !rc; c++) {
            char name[32];
            meta_name(name, sizeof name, CTR_NAMES[c], (rc_type)t);
            rc = meta_get_u64(l, txn, name, &l->persisted[t][c]);
        }
    if (rc) goto lmdb_fail;
    /* committing (even read-only) keeps the database handles */
    if ((rc = mdb_txn_commit(txn))) return mdb_fail(err, rc, "opening the databases", l);
    return KN_OK;
not_kiln:
    mdb_txn_abort(txn);
    return kn_fail(err, KN_EFORMAT,
                   "cache L2 %s: an LMDB store that is not a kiln cache (no \"format\" = \"%s\")", l->dir,
                   FORMAT);
lmdb_fail:
    mdb_txn_abort(txn);
    st = mdb_fail(err, rc, "opening the databases", l);
    return st;
}

kn_status rc_l2_open_lmdb(const char *dir, const rc_l2_opts *o, rc_l2 **out, kn_err *err) {
    KN_ASSERT(dir && o && out);
    *out = NULL;
    if (!*dir) return kn_fail(err, KN_EINVAL, "cache L2: empty directory name");
    l2_lmdb *l = calloc(1, sizeof *l);
    if (!l || !(l->dir = strdup(dir))) {
        free(l);
        return kn_fail(err, KN_ENOMEM, "cache L2: out of memory");
    }
    l->base.ops = &LMDB_OPS;
    l->ro = o->read_only;
    l->max_bytes = o->max_bytes ? o->max_bytes : 10 * GIB;
    memcpy(l->met, o->metrics, sizeof l->met);
    pthread_mutex_init(&l->ctr_mu, NULL);
    pthread_mutex_init(&l->scan_mu, NULL);
    pthread_mutex_init(&l->full_mu, NULL);
    kn_status st;
    char data[4200];
    if (snprintf(data, sizeof data, "%s/data.mdb", dir) >= (int)sizeof data) {
        st = kn_fail(err, KN_EINVAL, "cache L2: directory name too long");
        goto fail;
    }
    struct stat sb;
    if (stat(dir, &sb)) {
        if (errno != ENOENT || l->ro) {
            st = errno == ENOENT ? kn_fail(err, KN_ENOTFOUND, "no kiln cache at %s (no such directory)", dir)
                                 : kn_fail(err, KN_EIO, "cache dir %s: %s", dir, strerror(errno));
            goto fail;
        }
        if ((st = kn_mkdirs(dir, 0700, err))) {
            kn_err_prefix(err, "cache dir %s", dir);
            goto fail;
        }
    } else if (!S_ISDIR(sb.st_mode)) {
        st = kn_fail(err, KN_EINVAL, "cache dir %s: not a directory", dir);
        goto fail;
    }
    if (stat(data, &sb)) {
        if (errno != ENOENT) {
            st = kn_fail(err, KN_EIO, "cache dir %s: %s: %s", dir, data, strerror(errno));
            goto fail;
        }
        if (l->ro) {
            st = kn_fail(err, KN_ENOTFOUND, "no kiln cache at %s (no data.mdb)", dir);
            goto fail;
        }
        if (!dir_is_empty(dir)) {
            st =
                kn_fail(err, KN_EINVAL,
                        "cache dir %s holds other files and no kiln cache; a new cache is created only in an "
                        "empty or new directory",
                        dir);
            goto fail;
        }
    }
    int rc = mdb_env_create(&l->env);
    if (rc) {
        l->env = NULL;
        st = mdb_fail(err, rc, "mdb_env_create", l);
        goto fail;
    }
    mdb_env_set_maxreaders(l->env, 1024);
    mdb_env_set_maxdbs(l->env, 8);
    if (!l->ro) {
        uint64_t map = l->max_bytes / 2 * 3 + 64 * MIB;
        if (map < l->max_bytes || map > (uint64_t)SIZE_MAX) map = (uint64_t)SIZE_MAX / 2;
        if ((rc = mdb_env_set_mapsize(l->env, (size_t)map))) {
            st = mdb_fail(err, rc, "map size", l);
            goto fail;
        }
    }
    rc = mdb_env_open(l->env, dir, MDB_NOTLS | (l->ro ? MDB_RDONLY : 0), 0600);
    if (rc) {
        st = rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH
                 ? kn_fail(err, KN_EFORMAT, "cache L2 %s: data.mdb is not a kiln cache (%s)", dir,
                           mdb_strerror(rc))
                 : mdb_fail(err, rc, "open", l);
        goto fail;
    }
    if (!l->ro) {
        int dead = 0;
        mdb_reader_check(l->env, &dead); /* readers left by a killed process */
        if (dead) KN_INFO("cache L2 %s: cleared %d stale readers", dir, dead);
    }
    if ((st = open_dbs(l, err))) goto fail;
    *out = &l->base;
    return KN_OK;
fail:
    if (l->env) mdb_env_close(l->env);
    l->env = NULL;
    lm_close(&l->base);
    return st;
}
