/*
 * cache_internal.h — private to src/cache (and its unit tests): the two
 * tiers the front (cache.c) is built from, and the backend table of L2.
 * Nothing outside src/cache includes this; the server and the CLI use
 * cache.h.
 *
 * Owns:
 *  - rc_l1: one per entry type. A hash table (chained, rehashed
 *    incrementally so that no single operation moves more than a few
 *    buckets), the policy's bookkeeping and the values (copies; values over
 *    RC_COMPRESS_MIN bytes zstd-compressed when compression is on). Every
 *    get, put, delete and eviction is O(1): LRU and FIFO keep one doubly
 *    linked list, LFU frequency buckets (a list of lists), Random a dense
 *    array with swap removal. One mutex per rc_l1, held only for the table
 *    work (a (de)compression and the caller's model call happen outside
 *    it). Implemented in l1.c.
 *  - rc_l2: one open store of a backend. Every backend embeds struct rc_l2
 *    as its first member and fills in its ops; the rc_l2_* functions below
 *    check their arguments and dispatch through the ops (l2.c). The backends
 *    are the rows of one table in l2.c, looked up by name:
 *      lmdb   a directory (l2_lmdb.c, l2_lmdb_maint.c; layout in l2_lmdb.h,
 *             record format in l2_record.h)
 *    Adding a backend (Redis) is one file that defines its rc_l2_ops and
 *    one row in that table.
 *
 * Threads: every function of rc_l1 and rc_l2 may be called from any thread,
 * except rc_l1_destroy and rc_l2_close.
 */
#ifndef KILN_CACHE_INTERNAL_H
#define KILN_CACHE_INTERNAL_H

#include "kiln/cache.h"

/* Prometheus series a tier increments as events happen (any may be NULL). */
typedef struct rc_tier_metrics {
    met_series *hits, *misses, *evictions, *expirations;
} rc_tier_metrics;

/* ---- L1: memory ---------------------------------------------------------- */

#define RC_COMPRESS_MIN 1024 /* values longer than this are stored compressed */

typedef struct rc_l1_opts {
    uint64_t budget_bytes; /* the sum of entry costs (rc_l1_entry_cost) stays within it */
    rc_policy policy;
    bool compress;         /* zstd for values over RC_COMPRESS_MIN bytes (level 1) */
    uint64_t seed;         /* RC_RANDOM's generator */
    rc_tier_metrics metrics;
    /* Test hook, called under the lock for every entry an eviction removes
     * (not for deletes, replacements or expirations). May be NULL. */
    void (*on_evict)(void *arg, rc_key k);
    void *on_evict_arg;
} rc_l1_opts;

typedef struct rc_l1 rc_l1;

kn_status rc_l1_create(const rc_l1_opts *o, rc_l1 **out, kn_err *err);
void rc_l1_destroy(rc_l1 *c); /* accepts NULL */

/* (rc_l1_entry_cost, the cost of an entry against the budget, is in
 * cache.h: the server reports it.) */

/* On a live hit: *val = a malloc'd copy of the value (decompressed; the
 * caller frees), *len, *expiry_ms (may be NULL); counts a hit, updates the
 * policy (LRU: most recent; LFU: one more use; FIFO, Random: nothing) and
 * returns true. An expired entry is removed (an expiration) and, like an
 * absent key, counts a miss and returns false. */
bool rc_l1_get(rc_l1 *c, rc_key k, int64_t now_ms, void **val, size_t *len, int64_t *expiry_ms);

/* Stores a copy of val under k (replacing an entry with that key), tagged
 * with model, to expire at expiry_ms. Evicts by the policy until the entry
 * fits the budget. Returns false (and stores nothing) when the entry alone
 * exceeds the budget, when expiry_ms <= now_ms, or out of memory. */
bool rc_l1_put(rc_l1 *c, rc_key k, uint64_t model, const void *val, size_t len, int64_t expiry_ms,
               int64_t now_ms);

bool rc_l1_del(rc_l1 *c, rc_key k); /* true when it was there */

/* Removes up to max expired entries, resuming a cursor over the table where
 * the last call stopped; returns how many it removed (counted as
 * expirations). */
size_t rc_l1_sweep(rc_l1 *c, int64_t now_ms, size_t max);

/* Removes every entry (model 0) or every entry tagged model, a batch at a
 * time (the lock is released between batches); returns how many. */
size_t rc_l1_clear(rc_l1 *c, uint64_t model);

void rc_l1_stats(rc_l1 *c, rc_stats *s);

/* Work counters for the O(1) tests: probes = hash-chain entries compared,
 * moves = list/bucket/array links changed and entries rehashed. Totals
 * since creation, and the most any single operation did. */
typedef struct rc_l1_work {
    uint64_t ops, probes, moves;
    uint64_t max_probes_op, max_moves_op;
} rc_l1_work;
void rc_l1_work_get(rc_l1 *c, rc_l1_work *w);

/* ---- L2: the backend table ----------------------------------------------- */

typedef struct rc_l2 rc_l2;

typedef struct rc_l2_item {
    rc_type type;
    uint64_t model;
    rc_key key;
    const void *val; /* raw value (the backend compresses it) */
    size_t len;
    int64_t expiry_ms;
} rc_l2_item;

typedef struct rc_l2_opts {
    uint64_t max_bytes; /* size limit (default 10 GiB); eviction oldest first above it */
    bool read_only;     /* `kiln cache stats` */
    bool must_exist;    /* `kiln cache clear`: a missing store is an error, not created */
    rc_tier_metrics metrics[RC_NTYPES];
} rc_l2_opts;

/* A backend: its name in the table and its operations. rc_l2_open calls
 * open; the other members are called through the rc_l2_* functions below,
 * which have checked the type (< RC_NTYPES, or all for clear), zeroed
 * *removed and skipped empty batches, so that a backend need not. Each
 * member means what the rc_l2_* function of its name says. */
typedef struct rc_l2_ops {
    const char *name;
    kn_status (*open)(const char *where, const rc_l2_opts *o, rc_l2 **out, kn_err *err);
    kn_status (*get)(rc_l2 *b, rc_type t, uint64_t model, rc_key k, int64_t now_ms, void **val, size_t *len,
                     int64_t *expiry_ms, kn_err *err);
    kn_status (*put_batch)(rc_l2 *b, const rc_l2_item *items, size_t n, int64_t now_ms, kn_err *err);
    kn_status (*clear)(rc_l2 *b, bool all, rc_type t, uint64_t model, uint64_t *removed, kn_err *err);
    kn_status (*maintain)(rc_l2 *b, int64_t now_ms, size_t batch, uint64_t *removed, kn_err *err);
    void (*stats)(rc_l2 *b, rc_type t, rc_stats *s);
    void (*close)(rc_l2 *b);
} rc_l2_ops;

/* The head of every backend's store (its first member). */
struct rc_l2 {
    const rc_l2_ops *ops;
};

/* The rows of the backend table (l2.c). */
extern const rc_l2_ops rc_l2_lmdb_ops;

#define RC_L2_DEFAULT "lmdb" /* the backend of --cache-dir */

/* Opens the store at where (for lmdb, a directory) with the backend named
 * backend (NULL: RC_L2_DEFAULT). An unknown backend is KN_EINVAL naming it
 * and the known ones. Otherwise the backend's open below. */
kn_status rc_l2_open(const char *backend, const char *where, const rc_l2_opts *o, rc_l2 **out, kn_err *err);

/* The lmdb row's open: opens (creating dir and the store when absent,
 * unless read_only or must_exist) the LMDB store in dir. A missing store
 * with read_only or must_exist is KN_ENOTFOUND; a directory that is not a
 * kiln cache, or an unreadable one, is an error naming the path. */
kn_status rc_l2_open_lmdb(const char *dir, const rc_l2_opts *o, rc_l2 **out, kn_err *err);
void rc_l2_close(rc_l2 *b); /* accepts NULL */

/* KN_OK with *val (malloc'd, the caller frees), *len, *expiry_ms on a live
 * hit; KN_ENOTFOUND on a miss, an expired record (deleted, an expiration) or
 * a corrupt one (deleted, logged, counted); another status on an I/O error. */
kn_status rc_l2_get(rc_l2 *b, rc_type t, uint64_t model, rc_key k, int64_t now_ms, void **val, size_t *len,
                    int64_t *expiry_ms, kn_err *err);
/* Writes n items in one transaction (each replaces its key), created at
 * now_ms (the age eviction goes by). Items already expired (expiry_ms <=
 * now_ms) or bigger than the size limit are skipped. On a full map it
 * evicts the oldest records and retries once. Read-only: KN_EUNSUPPORTED
 * (also for clear and maintain). */
kn_status rc_l2_put_batch(rc_l2 *b, const rc_l2_item *items, size_t n, int64_t now_ms, kn_err *err);
/* Removes the records of type t (all types when all), of model (0: every
 * model), in batches of bounded transactions; *removed may be NULL. */
kn_status rc_l2_clear(rc_l2 *b, bool all, rc_type t, uint64_t model, uint64_t *removed, kn_err *err);
/* One round of maintenance: at most batch expired records removed, then
 * the oldest records removed (batch at a time) while over the size limit,
 * and the counters flushed to the store. Returns how many records it
 * removed in *removed (may be NULL). */
kn_status rc_l2_maintain(rc_l2 *b, int64_t now_ms, size_t batch, uint64_t *removed, kn_err *err);
void rc_l2_stats(rc_l2 *b, rc_type t, rc_stats *s);

#endif
