/*
 * l2_lmdb.h — private to the LMDB backend of L2 (l2_lmdb.c: open, close,
 * stats, the counters, get and put; l2_lmdb_maint.c: expiry, eviction and
 * clear): the store's struct and the transaction helpers both files use.
 *
 * Layout, in one LMDB environment in the directory (data.mdb, lock.mdb):
 *  - named databases "response" and "embedding": key = the 24-byte record
 *    key, value = the record (both in l2_record.h).
 *  - "age": key = created_ms (8, big endian) || type (1) || the 24-byte key,
 *    empty value: the oldest-first index for size eviction.
 *  - "meta": "format" = FORMAT (what makes a directory a kiln cache),
 *    "bytes.response", "bytes.embedding" (u64 little endian, the sum of
 *    key + value bytes per type), and the lifetime counters
 *    "<counter>.<type>" for hits, misses, evictions, expirations, corrupt.
 *  Writes commit in LMDB transactions, so a crash or `kill -9` leaves each
 *  entry either whole or absent. Maintenance runs in batches of a bounded
 *  number of records per transaction: expired records (walking a cursor
 *  that resumes where the last batch stopped), then the oldest records
 *  while the bytes exceed the size limit.
 *
 * Invariants:
 *  - "bytes.<type>" in "meta" is the sum over that type's records of
 *    24 (key) + the value's size. Every transaction that adds or removes a
 *    record updates it in the same transaction (rc_lm_bytes_apply), so it is
 *    exact after a crash.
 *  - Every record has one "age" entry (created_ms || type || key). An age
 *    entry whose record is gone or was rewritten later (another created_ms)
 *    is an orphan: eviction and clear delete orphans as they meet them.
 *  - Counters: hits/misses/... = persisted (what "meta" held at our last
 *    write) + pending (events since, atomics). Each write transaction
 *    commits through rc_lm_commit, which adds the pending deltas to "meta"
 *    and, once committed, moves them to persisted under ctr_mu (held across
 *    the commit: write transactions are exclusive, so no other writer can
 *    add the same deltas twice).
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
#ifndef KILN_CACHE_L2_LMDB_H
#define KILN_CACHE_L2_LMDB_H

#include "l2_record.h"

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define AGE_KEY_LEN (8 + 1 + REC_KEY_LEN) /* created_ms || type || key */
#define CLEAR_BATCH 1000                  /* records per transaction in clear */
#define SCAN_FACTOR 64                    /* the expiry scan examines at most batch * this per call */
#define MAINTAIN_BATCH_MAX 100000         /* records per maintenance transaction, at most */
#define FORMAT "kiln-cache 1"

enum { C_HITS, C_MISSES, C_EVICTIONS, C_EXPIRATIONS, C_CORRUPT, C_N };

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
    uint8_t scan_key[REC_KEY_LEN];
    pthread_mutex_t full_mu; /* the disk-full pause (see the top comment) */
    int64_t full_until_ms;   /* writes are skipped before this (now_ms clock) */
    int64_t full_pause_ms;   /* the current pause; 0: the disk is not known to be full */
    uint64_t full_skipped;   /* writes skipped in the current episode */
    uint64_t full_failed;    /* failed write attempts in the current episode */
} l2_lmdb;

/* The record codec over an LMDB value. */
static inline const char *hdr_parse(const MDB_val *v, rc_type t, const uint8_t key[REC_KEY_LEN],
                                    rc_rec_hdr *h) {
    return rc_rec_parse(v->mv_data, v->mv_size, t, key, h);
}

static inline void make_age_key(uint8_t out[AGE_KEY_LEN], int64_t created, rc_type t,
                                const uint8_t key[REC_KEY_LEN]) {
    rec_put_be64(out, (uint64_t)created);
    out[8] = (uint8_t)t;
    memcpy(out + 9, key, REC_KEY_LEN);
}

static inline void meta_name(char *buf, size_t cap, const char *what, rc_type t) {
    snprintf(buf, cap, "%s.%s", what, rc_type_name(t));
}

/* ---- l2_lmdb.c ------------------------------------------------------------- */

/* An LMDB status rc as a kn_status and a message naming the store and what failed. */
kn_status rc_lm_fail(kn_err *err, int rc, const char *what, const l2_lmdb *l);

/* Counts one event c (C_*) of type t: pending for "meta", and the metric. */
void rc_lm_count(l2_lmdb *l, rc_type t, int c);

/* A u64 of "meta" (0 when absent) / written to "meta"; LMDB status. */
int rc_lm_meta_get(l2_lmdb *l, MDB_txn *txn, const char *name, uint64_t *out);
int rc_lm_meta_put(l2_lmdb *l, MDB_txn *txn, const char *name, uint64_t val);

/* Adds delta[t] to "bytes.<t>" (clamped at 0) for every type with a change. */
int rc_lm_bytes_apply(l2_lmdb *l, MDB_txn *txn, const int64_t delta[RC_NTYPES]);
/* The sum of "bytes.<t>" over the types. */
int rc_lm_bytes_total(l2_lmdb *l, MDB_txn *txn, uint64_t *total);

/* Whether any counter has events not yet in "meta". */
bool rc_lm_pending_any(l2_lmdb *l);
/* Commits a write transaction, adding the pending counter deltas to "meta"
 * in it. Aborts txn on failure. */
int rc_lm_commit(l2_lmdb *l, MDB_txn *txn);

/* Deletes the record under key of type t (its value vsize bytes, its
 * header h, or NULL when that did not parse) and its age entry; adds its
 * size to *freed. */
int rc_lm_del_record(l2_lmdb *l, MDB_txn *txn, rc_type t, const uint8_t key[REC_KEY_LEN], size_t vsize,
                     const rc_rec_hdr *h, int64_t *freed);

/* The disk-full pause (top comment): whether a failed write (LMDB status
 * rc, needing need bytes) failed for lack of space; whether writes are
 * paused at now_ms (counting n skipped); and, after a write failed for lack
 * of space, starting or lengthening the pause (returns the error naming it). */
bool rc_lm_is_disk_full(const l2_lmdb *l, int rc, uint64_t need);
bool rc_lm_full_paused(l2_lmdb *l, int64_t now_ms, size_t n);
kn_status rc_lm_full_begin(l2_lmdb *l, int64_t now_ms, size_t n, kn_err *err);

/* ---- l2_lmdb_maint.c --------------------------------------------------------- */

/* Frees at least want_free bytes (when there are records) for a write that
 * found the map full, oldest first; *removed counts the records. */
int rc_lm_evict_for_space(l2_lmdb *l, uint64_t want_free, uint64_t *removed);

/* The ops table's maintain and clear. */
kn_status rc_lm_maintain(rc_l2 *b, int64_t now_ms, size_t batch, uint64_t *removed, kn_err *err);
kn_status rc_lm_clear(rc_l2 *b, bool all, rc_type t, uint64_t model, uint64_t *removed, kn_err *err);

#endif
