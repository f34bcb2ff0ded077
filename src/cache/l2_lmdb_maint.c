/*
 * l2_lmdb_maint.c — the LMDB backend's upkeep (see l2_lmdb.h): removing
 * expired records in bounded batches (a scan that resumes where the last
 * one stopped), evicting the oldest records through the "age" index while
 * the store is over its size limit or its map is full, and clear (all, by
 * type, by model), each in transactions of a bounded number of records.
 *
 * Owns no state of its own: it works on the store's struct, under its
 * scan_mu for the expiry scan's position.
 */
#include "l2_lmdb.h"

#include <errno.h>
#include <stdlib.h>

/* Begins a write transaction with a cursor on db; on failure nothing is left
 * open. */
static int write_cursor(l2_lmdb *l, MDB_dbi db, MDB_txn **txn, MDB_cursor **cur) {
    int rc = mdb_txn_begin(l->env, NULL, 0, txn);
    if (rc) return rc;
    if ((rc = mdb_cursor_open(*txn, db, cur))) mdb_txn_abort(*txn);
    return rc;
}

/* ---- eviction of the oldest ------------------------------------------------------ */

/* One transaction: removes up to max records, oldest first (orphan age
 * entries are removed on the way without counting). *records counts the
 * records removed, *freed their bytes, *walked the age entries removed. */
static int evict_oldest_txn(l2_lmdb *l, size_t max, uint64_t want_free, uint64_t *records,
                            uint64_t *freed_out, size_t *walked) {
    MDB_txn *txn;
    MDB_cursor *cur;
    int rc = write_cursor(l, l->age, &txn, &cur);
    if (rc) return rc;
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
        int64_t created = (int64_t)rec_get_be64(a);
        if ((rc = mdb_cursor_del(cur, 0))) break;
        w++;
        MDB_val k = {REC_KEY_LEN, (void *)key}, v;
        rc_rec_hdr h;
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
        delta[t] -= (int64_t)(REC_KEY_LEN + vs);
        freed += REC_KEY_LEN + vs;
        n++;
        rc_lm_count(l, t, C_EVICTIONS);
    }
    if (rc == MDB_NOTFOUND) rc = 0; /* the age index is empty */
    mdb_cursor_close(cur);
    if (!rc) rc = rc_lm_bytes_apply(l, txn, delta);
    if (!rc)
        rc = rc_lm_commit(l, txn);
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
int rc_lm_evict_for_space(l2_lmdb *l, uint64_t want_free, uint64_t *removed) {
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
    return rc_lm_commit(l, txn);
}

/* ---- maintenance ------------------------------------------------------------------- */

typedef struct victim {
    rc_type t;
    uint8_t key[REC_KEY_LEN];
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
    uint8_t pos[REC_KEY_LEN];
    memcpy(pos, l->scan_key, REC_KEY_LEN);
    while (!rc && nv < batch && examined < limit && switches < RC_NTYPES) {
        MDB_cursor *cur;
        if ((rc = mdb_cursor_open(txn, l->db[type], &cur))) break;
        MDB_val k = {REC_KEY_LEN, pos}, v;
        int g = has ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        if (!g && has && k.mv_size == REC_KEY_LEN && !memcmp(k.mv_data, pos, REC_KEY_LEN))
            g = mdb_cursor_get(cur, &k, &v, MDB_NEXT); /* pos itself was examined already */
        while (!g && nv < batch && examined < limit) {
            examined++;
            if (k.mv_size == REC_KEY_LEN) {
                memcpy(pos, k.mv_data, REC_KEY_LEN);
                has = true;
                rc_rec_hdr h;
                const char *why = hdr_parse(&v, (rc_type)type, pos, &h);
                if (why || h.expiry_ms <= now_ms) {
                    vs[nv].t = (rc_type)type;
                    memcpy(vs[nv].key, pos, REC_KEY_LEN);
                    vs[nv].corrupt = why != NULL;
                    if (why) {
                        char hex[2 * REC_KEY_LEN + 2];
                        rc_rec_key_hex(pos, hex);
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
        MDB_val k = {REC_KEY_LEN, vs[i].key}, v;
        rc_rec_hdr h;
        if ((rc = mdb_get(txn, l->db[vs[i].t], &k, &v))) {
            if (rc == MDB_NOTFOUND) rc = 0;
            continue;
        }
        bool hdr_ok = !hdr_parse(&v, vs[i].t, vs[i].key, &h);
        int64_t freed = 0;
        rc = rc_lm_del_record(l, txn, vs[i].t, vs[i].key, v.mv_size, hdr_ok ? &h : NULL, &freed);
        delta[vs[i].t] -= freed;
    }
    if (!rc) rc = rc_lm_bytes_apply(l, txn, delta);
    if (!rc) {
        for (size_t i = 0; i < nv; i++) {
            if (vs[i].corrupt) {
                rc_lm_count(l, vs[i].t, C_CORRUPT);
            } else {
                rc_lm_count(l, vs[i].t, C_EXPIRATIONS);
            }
        }
        rc = rc_lm_commit(l, txn);
    } else {
        mdb_txn_abort(txn);
    }
    if (!rc) {
        l->scan_type = type;
        l->scan_has_key = has;
        memcpy(l->scan_key, pos, REC_KEY_LEN);
        *removed += nv;
    }
    pthread_mutex_unlock(&l->scan_mu);
    free(vs);
    return rc;
}

kn_status rc_lm_maintain(rc_l2 *b, int64_t now_ms, size_t batch, uint64_t *removed, kn_err *err) {
    l2_lmdb *l = (l2_lmdb *)b;
    if (l->ro) return kn_fail(err, KN_EUNSUPPORTED, "cache L2 %s: opened read-only; cannot maintain", l->dir);
    if (batch > MAINTAIN_BATCH_MAX) batch = MAINTAIN_BATCH_MAX;
    if (removed) *removed = 0;
    if (rc_lm_full_paused(l, now_ms, 0)) return KN_OK; /* the disk is full: no write transactions now */
    uint64_t n = 0;
    int rc = expire_scan(l, now_ms, batch, &n);
    while (!rc) { /* size: the oldest go while over the limit */
        MDB_txn *txn;
        uint64_t total;
        if ((rc = mdb_txn_begin(l->env, NULL, MDB_RDONLY, &txn))) break;
        rc = rc_lm_bytes_total(l, txn, &total);
        mdb_txn_abort(txn);
        if (rc || total <= l->max_bytes) break;
        size_t walked = 0;
        uint64_t freed = 0;
        rc = evict_oldest_txn(l, batch, total - l->max_bytes, &n, &freed, &walked);
        if (!walked) break;
    }
    if (!rc && rc_lm_pending_any(l)) { /* flush the counters */
        MDB_txn *txn;
        if (!(rc = mdb_txn_begin(l->env, NULL, 0, &txn))) rc = rc_lm_commit(l, txn);
    }
    if (removed) *removed = n;
    if (rc && rc_lm_is_disk_full(l, rc, 0)) return rc_lm_full_begin(l, now_ms, 0, err);
    return rc ? rc_lm_fail(err, rc, "maintenance", l) : KN_OK;
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
        int rc = write_cursor(l, l->age, &txn, &cur);
        if (rc) return rc;
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
                MDB_val rk = {REC_KEY_LEN, (void *)(a + 9)}, rv;
                rc_rec_hdr h;
                int r = mdb_get(txn, l->db[t], &rk, &rv);
                if (r && r != MDB_NOTFOUND) {
                    g = r;
                    break;
                }
                orphan = r == MDB_NOTFOUND ||
                         (!hdr_parse(&rv, t, a + 9, &h) && h.created_ms != (int64_t)rec_get_be64(a));
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
        if ((rc = rc_lm_commit(l, txn))) return rc;
    }
    return 0;
}

/* Removes every record of type t tagged model, CLEAR_BATCH per transaction. */
static int clear_model(l2_lmdb *l, rc_type t, uint64_t model, uint64_t *removed) {
    uint8_t prefix[8];
    rec_put_be64(prefix, model);
    for (;;) {
        MDB_txn *txn;
        MDB_cursor *cur;
        int rc = write_cursor(l, l->db[t], &txn, &cur);
        if (rc) return rc;
        uint8_t seek[REC_KEY_LEN] = {0};
        memcpy(seek, prefix, 8);
        MDB_val k = {REC_KEY_LEN, seek}, v;
        int64_t delta[RC_NTYPES] = {0};
        size_t n = 0;
        int g = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        while (!g && n < CLEAR_BATCH && k.mv_size == REC_KEY_LEN && !memcmp(k.mv_data, prefix, 8)) {
            uint8_t key[REC_KEY_LEN];
            memcpy(key, k.mv_data, REC_KEY_LEN);
            rc_rec_hdr h;
            bool hdr_ok = !hdr_parse(&v, t, key, &h);
            delta[t] -= (int64_t)(REC_KEY_LEN + v.mv_size);
            if ((g = mdb_cursor_del(cur, 0))) break;
            n++;
            if (hdr_ok) {
                uint8_t ak[AGE_KEY_LEN];
                make_age_key(ak, h.created_ms, t, key);
                MDB_val a = {AGE_KEY_LEN, ak};
                g = mdb_del(txn, l->age, &a, NULL);
                if (g && g != MDB_NOTFOUND) break;
            }
            k = (MDB_val){REC_KEY_LEN, seek}; /* the next one of the model */
            g = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        }
        mdb_cursor_close(cur);
        if (g && g != MDB_NOTFOUND) {
            mdb_txn_abort(txn);
            return g;
        }
        if ((rc = rc_lm_bytes_apply(l, txn, delta))) {
            mdb_txn_abort(txn);
            return rc;
        }
        if ((rc = rc_lm_commit(l, txn))) return rc;
        *removed += n;
        if (n < CLEAR_BATCH) return 0;
    }
}

kn_status rc_lm_clear(rc_l2 *b, bool all, rc_type t, uint64_t model, uint64_t *removed, kn_err *err) {
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
                if (!rc) rc = rc_lm_meta_put(l, txn, name, 0);
            }
            if (!rc && all) rc = mdb_drop(txn, l->age, 0);
            if (!rc)
                rc = rc_lm_commit(l, txn);
            else
                mdb_txn_abort(txn);
        }
        if (!rc && !all) rc = clear_orphans(l, t);
    }
    if (removed) *removed = n;
    return rc ? rc_lm_fail(err, rc, "clear", l) : KN_OK;
}
