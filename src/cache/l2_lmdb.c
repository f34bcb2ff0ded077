/*
 * l2_lmdb.c — the LMDB backend of the cache's disk tier (the row "lmdb" of
 * the backend table, see cache_internal.h): opening and closing a store in
 * a directory, its stats, the counters and byte totals kept in "meta", the
 * disk-full pause, get and put. Expiry, eviction and clear are in
 * l2_lmdb_maint.c; the layout and the invariants in l2_lmdb.h; the record
 * format in l2_record.h.
 *
 * Owns (per store): the MDB_env of the directory and its four named
 * databases, the pending counter deltas (atomics) and the persisted
 * lifetime totals they are added to, the expiry scan's cursor position
 * (used by l2_lmdb_maint.c) and the disk-full pause.
 */
#include "l2_lmdb.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#define MIB (1ull << 20)
#define GIB (1ull << 30)
#define FULL_PAUSE_MIN_MS 1000  /* first pause of the writes after a disk-full failure */
#define FULL_PAUSE_MAX_MS 60000 /* the pause doubles up to this while retries fail */

static const char *const CTR_NAMES[C_N] = {"hits", "misses", "evictions", "expirations", "corrupt"};

/* ---- the disk-full pause, errors, counters ---------------------------------------- */

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
bool rc_lm_is_disk_full(const l2_lmdb *l, int rc, uint64_t need) {
    if (rc == ENOSPC || rc == EDQUOT) return true;
    return rc == EIO && free_bytes(l) < need + 256 * 1024;
}

/* True when writes are paused by a full disk at now_ms (counts n skipped). */
bool rc_lm_full_paused(l2_lmdb *l, int64_t now_ms, size_t n) {
    pthread_mutex_lock(&l->full_mu);
    bool paused = l->full_pause_ms && now_ms < l->full_until_ms;
    if (paused) l->full_skipped += n;
    pthread_mutex_unlock(&l->full_mu);
    return paused;
}

/* A write failed for lack of space: starts or lengthens the pause and
 * returns the error that names it. */
kn_status rc_lm_full_begin(l2_lmdb *l, int64_t now_ms, size_t n, kn_err *err) {
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

kn_status rc_lm_fail(kn_err *err, int rc, const char *what, const l2_lmdb *l) {
    return kn_fail(err, rc == ENOMEM ? KN_ENOMEM : KN_EIO, "cache L2 %s: %s: %s", l->dir, what,
                   mdb_strerror(rc));
}

void rc_lm_count(l2_lmdb *l, rc_type t, int c) {
    atomic_fetch_add_explicit(&l->pending[t][c], 1, memory_order_relaxed);
    const rc_tier_metrics *m = &l->met[t];
    met_series *s = c == C_HITS          ? m->hits
                    : c == C_MISSES      ? m->misses
                    : c == C_EVICTIONS   ? m->evictions
                    : c == C_EXPIRATIONS ? m->expirations
                                         : NULL;
    met_inc(s);
}

int rc_lm_meta_get(l2_lmdb *l, MDB_txn *txn, const char *name, uint64_t *out) {
    MDB_val k = {strlen(name), (void *)name}, v;
    int rc = mdb_get(txn, l->meta, &k, &v);
    *out = 0;
    if (rc == MDB_NOTFOUND) return 0;
    if (rc) return rc;
    if (v.mv_size == 8) *out = rec_get_le(v.mv_data, 8);
    return 0;
}

int rc_lm_meta_put(l2_lmdb *l, MDB_txn *txn, const char *name, uint64_t val) {
    uint8_t b[8];
    rec_put_le(b, val, 8);
    MDB_val k = {strlen(name), (void *)name}, v = {8, b};
    return mdb_put(txn, l->meta, &k, &v, 0);
}

/* Adds delta[t] to "bytes.<t>" (clamped at 0) for every type with a change. */
int rc_lm_bytes_apply(l2_lmdb *l, MDB_txn *txn, const int64_t delta[RC_NTYPES]) {
    for (int t = 0; t < RC_NTYPES; t++) {
        if (!delta[t]) continue;
        char name[32];
        uint64_t cur;
        meta_name(name, sizeof name, "bytes", (rc_type)t);
        int rc = rc_lm_meta_get(l, txn, name, &cur);
        if (rc) return rc;
        int64_t nv = (int64_t)cur + delta[t];
        if ((rc = rc_lm_meta_put(l, txn, name, nv < 0 ? 0 : (uint64_t)nv))) return rc;
    }
    return 0;
}

int rc_lm_bytes_total(l2_lmdb *l, MDB_txn *txn, uint64_t *total) {
    *total = 0;
    for (int t = 0; t < RC_NTYPES; t++) {
        char name[32];
        uint64_t v;
        meta_name(name, sizeof name, "bytes", (rc_type)t);
        int rc = rc_lm_meta_get(l, txn, name, &v);
        if (rc) return rc;
        *total += v;
    }
    return 0;
}

bool rc_lm_pending_any(l2_lmdb *l) {
    for (int t = 0; t < RC_NTYPES; t++)
        for (int c = 0; c < C_N; c++)
            if (atomic_load_explicit(&l->pending[t][c], memory_order_relaxed)) return true;
    return false;
}

/* Commits a write transaction, adding the pending counter deltas to "meta"
 * in it. Aborts txn on failure. */
int rc_lm_commit(l2_lmdb *l, MDB_txn *txn) {
    if (!rc_lm_pending_any(l)) return mdb_txn_commit(txn); /* nothing to add: no need to hold ctr_mu */
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
            if (!(rc = rc_lm_meta_get(l, txn, name, &cur))) {
                nv[t][c] = cur + snap[t][c];
                rc = rc_lm_meta_put(l, txn, name, nv[t][c]);
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

/* Deletes the record under key of type t (its value vsize bytes, header h
 * when it parsed) and its age entry; adds its size to *freed. */
int rc_lm_del_record(l2_lmdb *l, MDB_txn *txn, rc_type t, const uint8_t key[REC_KEY_LEN], size_t vsize,
                     const rc_rec_hdr *h, int64_t *freed) {
    MDB_val k = {REC_KEY_LEN, (void *)key};
    int rc = mdb_del(txn, l->db[t], &k, NULL);
    if (rc) return rc;
    *freed += (int64_t)(REC_KEY_LEN + vsize);
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
static void delete_bad(l2_lmdb *l, rc_type t, const uint8_t key[REC_KEY_LEN], int64_t now_ms,
                       rc_rec_state want) {
    MDB_txn *txn;
    int rc = mdb_txn_begin(l->env, NULL, 0, &txn);
    if (rc) {
        KN_WARN("cache L2 %s: cannot delete a bad record: %s", l->dir, mdb_strerror(rc));
        return;
    }
    MDB_val k = {REC_KEY_LEN, (void *)key}, v;
    rc_rec_hdr h;
    const char *why;
    int64_t delta[RC_NTYPES] = {0}, freed = 0;
    rc = mdb_get(txn, l->db[t], &k, &v);
    if (!rc) {
        rc_rec_state st = rc_rec_decode(v.mv_data, v.mv_size, t, key, now_ms, &h, NULL, NULL, &why);
        bool hdr_ok = !hdr_parse(&v, t, key, &h);
        if (st == want) rc = rc_lm_del_record(l, txn, t, key, v.mv_size, hdr_ok ? &h : NULL, &freed);
    } else if (rc == MDB_NOTFOUND) {
        rc = 0;
    }
    delta[t] = -freed;
    if (!rc) rc = rc_lm_bytes_apply(l, txn, delta);
    if (!rc)
        rc = rc_lm_commit(l, txn);
    else
        mdb_txn_abort(txn);
    if (rc) KN_WARN("cache L2 %s: cannot delete a bad record: %s", l->dir, mdb_strerror(rc));
}

static kn_status lm_get(rc_l2 *b, rc_type t, uint64_t model, rc_key k, int64_t now_ms, void **val,
                        size_t *len, int64_t *expiry_ms, kn_err *err) {
    l2_lmdb *l = (l2_lmdb *)b;
    *val = NULL;
    *len = 0;
    uint8_t key[REC_KEY_LEN];
    rc_rec_key(key, model, k);
    MDB_txn *txn;
    int rc = mdb_txn_begin(l->env, NULL, MDB_RDONLY, &txn);
    if (rc) return rc_lm_fail(err, rc, "read transaction", l);
    MDB_val kv = {REC_KEY_LEN, key}, v;
    rc = mdb_get(txn, l->db[t], &kv, &v);
    if (rc == MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        rc_lm_count(l, t, C_MISSES);
        return KN_ENOTFOUND;
    }
    if (rc) {
        mdb_txn_abort(txn);
        return rc_lm_fail(err, rc, "get", l);
    }
    rc_rec_hdr h;
    const char *why = NULL;
    rc_rec_state st = rc_rec_decode(v.mv_data, v.mv_size, t, key, now_ms, &h, val, len, &why);
    mdb_txn_abort(txn);
    switch (st) {
    case REC_OK:
        if (expiry_ms) *expiry_ms = h.expiry_ms;
        rc_lm_count(l, t, C_HITS);
        return KN_OK;
    case REC_NOMEM:
        return kn_fail(err, KN_ENOMEM, "cache L2: out of memory reading a %u-byte value", h.raw_len);
    case REC_EXPIRED:
        rc_lm_count(l, t, C_EXPIRATIONS);
        rc_lm_count(l, t, C_MISSES);
        break;
    case REC_CORRUPT: {
        char hex[2 * REC_KEY_LEN + 2];
        rc_rec_key_hex(key, hex);
        KN_WARN("cache L2 %s: corrupt %s record %s (%s)%s", l->dir, rc_type_name(t), hex, why,
                l->ro ? "" : ": deleted");
        rc_lm_count(l, t, C_CORRUPT);
        rc_lm_count(l, t, C_MISSES);
        break;
    }
    }
    if (!l->ro) delete_bad(l, t, key, now_ms, st);
    return KN_ENOTFOUND;
}

/* ---- put --------------------------------------------------------------------------- */

typedef struct prepared {
    rc_type t;
    uint8_t key[REC_KEY_LEN];
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
        MDB_val k = {REC_KEY_LEN, (void *)p[i].key}, old;
        rc = mdb_get(txn, l->db[p[i].t], &k, &old);
        if (!rc) {
            rc_rec_hdr h;
            delta[p[i].t] -= (int64_t)(REC_KEY_LEN + old.mv_size);
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
        delta[p[i].t] += (int64_t)(REC_KEY_LEN + p[i].rec_len);
    }
    if (!rc) rc = rc_lm_bytes_apply(l, txn, delta);
    if (!rc) return rc_lm_commit(l, txn);
    mdb_txn_abort(txn);
    return rc;
}

static kn_status lm_put_batch(rc_l2 *b, const rc_l2_item *items, size_t n, int64_t now_ms, kn_err *err) {
    l2_lmdb *l = (l2_lmdb *)b;
    if (l->ro) return kn_fail(err, KN_EUNSUPPORTED, "cache L2 %s: opened read-only; cannot write", l->dir);
    for (size_t i = 0; i < n; i++) {
        if ((unsigned)items[i].type >= RC_NTYPES)
            return kn_fail(err, KN_EINVAL, "cache L2: item %zu: bad entry type %d", i, (int)items[i].type);
        if (items[i].len > REC_RAW_MAX)
            return kn_fail(err, KN_ERANGE, "cache L2: item %zu: value of %zu bytes (at most %u)", i,
                           items[i].len, REC_RAW_MAX);
        if (items[i].len && !items[i].val) return kn_fail(err, KN_EINVAL, "cache L2: item %zu: no value", i);
    }
    if (rc_lm_full_paused(l, now_ms, n)) return KN_OK; /* the disk is full: skipped, counted */
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
        uint8_t *rec =
            rc_rec_encode(cctx, it->type, it->model, it->val, it->len, now_ms, it->expiry_ms, &p[i].rec_len);
        if (!rec) {
            st = kn_fail(err, KN_ENOMEM, "cache L2: out of memory compressing a %zu-byte value", it->len);
            goto out;
        }
        p[i].t = it->type;
        rc_rec_key(p[i].key, it->model, it->key);
        if (REC_KEY_LEN + p[i].rec_len > l->max_bytes) { /* could never stay: evicted at once */
            free(rec);
            continue;
        }
        p[i].rec = rec;
        total += REC_KEY_LEN + p[i].rec_len + AGE_KEY_LEN;
    }
    int rc = put_txn(l, p, n, now_ms);
    if (rc == MDB_MAP_FULL) {
        uint64_t evicted = 0, want = 2 * total;
        if (want < l->max_bytes / 64) want = l->max_bytes / 64;
        int erc = rc_lm_evict_for_space(l, want, &evicted);
        KN_INFO("cache L2 %s: map full: evicted %llu oldest records, retrying", l->dir,
                (unsigned long long)evicted);
        rc = erc ? erc : put_txn(l, p, n, now_ms);
    }
    if (rc && rc_lm_is_disk_full(l, rc, total))
        st = rc_lm_full_begin(l, now_ms, n, err);
    else if (rc)
        st = rc_lm_fail(err, rc, "write", l);
    else
        full_end(l);
out:
    for (size_t i = 0; p && i < n; i++)
        free(p[i].rec);
    free(p);
    ZSTD_freeCCtx(cctx);
    return st;
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
    rc_lm_meta_get(l, txn, name, &s->bytes);
    mdb_txn_abort(txn);
}

static void lm_close(rc_l2 *b) {
    l2_lmdb *l = (l2_lmdb *)b;
    if (l->env) {
        if (!l->ro && rc_lm_pending_any(l)) { /* the last counter deltas */
            MDB_txn *txn;
            int rc = mdb_txn_begin(l->env, NULL, 0, &txn);
            if (!rc) rc = rc_lm_commit(l, txn);
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

const rc_l2_ops rc_l2_lmdb_ops = {
    .name = "lmdb",
    .open = rc_l2_open_lmdb,
    .get = lm_get,
    .put_batch = lm_put_batch,
    .clear = rc_lm_clear,
    .maintain = rc_lm_maintain,
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
    if (rc) return rc_lm_fail(err, rc, "transaction", l);
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
            rc = rc_lm_meta_get(l, txn, name, &l->persisted[t][c]);
        }
    if (rc) goto lmdb_fail;
    /* committing (even read-only) keeps the database handles */
    if ((rc = mdb_txn_commit(txn))) return rc_lm_fail(err, rc, "opening the databases", l);
    return KN_OK;
not_kiln:
    mdb_txn_abort(txn);
    return kn_fail(err, KN_EFORMAT,
                   "cache L2 %s: an LMDB store that is not a kiln cache (no \"format\" = \"%s\")", l->dir,
                   FORMAT);
lmdb_fail:
    mdb_txn_abort(txn);
    st = rc_lm_fail(err, rc, "opening the databases", l);
    return st;
}

/* Checks dir before LMDB opens it: an existing directory, or (writable and
 * not must_exist) a new one created here. Without data.mdb, a read-only or
 * must_exist open is KN_ENOTFOUND, and a new store is created only in an
 * empty directory. */
static kn_status check_dir(const char *dir, bool ro, bool must_exist, kn_err *err) {
    char data[4200];
    if (snprintf(data, sizeof data, "%s/data.mdb", dir) >= (int)sizeof data)
        return kn_fail(err, KN_EINVAL, "cache L2: directory name too long");
    struct stat sb;
    if (stat(dir, &sb)) {
        if (errno == ENOENT && must_exist)
            return kn_fail(err, KN_ENOTFOUND, "no kiln cache at %s (no data.mdb)", dir);
        if (errno != ENOENT || ro)
            return errno == ENOENT
                       ? kn_fail(err, KN_ENOTFOUND, "no kiln cache at %s (no such directory)", dir)
                       : kn_fail(err, KN_EIO, "cache dir %s: %s", dir, strerror(errno));
        kn_status st = kn_mkdirs(dir, 0700, err);
        if (st) kn_err_prefix(err, "cache dir %s", dir);
        return st;
    }
    if (!S_ISDIR(sb.st_mode)) return kn_fail(err, KN_EINVAL, "cache dir %s: not a directory", dir);
    if (!stat(data, &sb)) return KN_OK;
    if (errno != ENOENT) return kn_fail(err, KN_EIO, "cache dir %s: %s: %s", dir, data, strerror(errno));
    if (ro || must_exist) return kn_fail(err, KN_ENOTFOUND, "no kiln cache at %s (no data.mdb)", dir);
    if (!dir_is_empty(dir))
        return kn_fail(err, KN_EINVAL,
                       "cache dir %s holds other files and no kiln cache; a new cache is created only in an "
                       "empty or new directory",
                       dir);
    return KN_OK;
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
    l->base.ops = &rc_l2_lmdb_ops;
    l->ro = o->read_only;
    l->max_bytes = o->max_bytes ? o->max_bytes : 10 * GIB;
    memcpy(l->met, o->metrics, sizeof l->met);
    pthread_mutex_init(&l->ctr_mu, NULL);
    pthread_mutex_init(&l->scan_mu, NULL);
    pthread_mutex_init(&l->full_mu, NULL);
    kn_status st = check_dir(dir, l->ro, o->must_exist, err);
    if (st) goto fail;
    int rc = mdb_env_create(&l->env);
    if (rc) {
        l->env = NULL;
        st = rc_lm_fail(err, rc, "mdb_env_create", l);
        goto fail;
    }
    mdb_env_set_maxreaders(l->env, 1024);
    mdb_env_set_maxdbs(l->env, 8);
    if (!l->ro) {
        uint64_t map = l->max_bytes / 2 * 3 + 64 * MIB;
        if (map < l->max_bytes || map > (uint64_t)SIZE_MAX) map = (uint64_t)SIZE_MAX / 2;
        if ((rc = mdb_env_set_mapsize(l->env, (size_t)map))) {
            st = rc_lm_fail(err, rc, "map size", l);
            goto fail;
        }
    }
    rc = mdb_env_open(l->env, dir, MDB_NOTLS | (l->ro ? MDB_RDONLY : 0), 0600);
    if (rc) {
        st = rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH
                 ? kn_fail(err, KN_EFORMAT, "cache L2 %s: data.mdb is not a kiln cache (%s)", dir,
                           mdb_strerror(rc))
                 : rc_lm_fail(err, rc, "open", l);
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
