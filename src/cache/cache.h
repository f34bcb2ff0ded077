/*
 * cache.h — the response and embedding cache (prefix rc_): an in-memory
 * tier (L1) with a byte budget, four eviction policies and TTL, an on-disk
 * tier (L2: LMDB, values zstd-compressed with a checksum), and the front
 * that reads L1 -> L2 -> miss and writes through to L2 off the request path.
 *
 * What a value is, and how its key is made, is the caller's business (the
 * server canonicalizes requests into rc_key, a 128-bit XXH3 hash, and tags
 * each entry with a 64-bit hash of its model's name so that a clear can
 * target one model). The cache stores opaque bytes with an absolute expiry
 * in wall-clock milliseconds; a promotion from L2 to L1 keeps that expiry.
 * An expired entry is never returned.
 *
 * Owns:
 *  - rc_l1: one per entry type. A hash table (chained, rehashed
 *    incrementally so that no single operation moves more than a few
 *    buckets), the policy's bookkeeping and the values (copies; values over
 *    1 KiB zstd-compressed when compression is on). Every get, put, delete
 *    and eviction is O(1): LRU and FIFO keep one doubly linked list, LFU
 *    frequency buckets (a list of lists), Random a dense array with swap
 *    removal. One mutex per rc_l1, held only for the table work (a
 *    (de)compression and the caller's model call happen outside it).
 *  - rc_l2: a backend behind a small vtable (get, put_batch, clear,
 *    maintain, stats, close), so that a Redis backend can be added later.
 *    The LMDB backend owns the environment in its directory.
 *  - rc_cache: both tiers for both types, a writer thread with a bounded
 *    queue of pending L2 writes (full: the write is dropped and counted),
 *    and the periodic L1 sweep and L2 maintenance it runs.
 *
 * L2 (LMDB) layout, in one environment in `dir` (data.mdb, lock.mdb):
 *  - named databases "response" and "embedding": key = model tag (8 bytes,
 *    big endian) || rc_key (16 bytes: hi then lo, big endian), value =
 *    rc_l2 record: a 48-byte header (integers little endian)
 *      magic "KLC1" (4) | version 1 (1) | type (1: rc_type) | flags (2)
 *      raw_len (4) | stored_len (4) | created_ms (8) | expiry_ms (8)
 *      model tag (8) | checksum (8): XXH3-64 over the header's first 40
 *      bytes and the stored payload
 *    followed by the payload: a zstd frame (level 3) of raw_len bytes, or,
 *    when flags bit 0 is set, the raw value (zstd did not shrink it;
 *    raw_len = stored_len). stored_len = value size - 48, raw_len <=
 *    256 MiB, the type and model tag match the database and key. A record
 *    whose magic, version, lengths, checksum or zstd frame do not check out
 *    is corrupt: it is deleted, logged with its key, counted, and reported
 *    as a miss.
 *  - "age": key = created_ms (8, big endian) || type (1) || the 24-byte
 *    key above, empty value: the oldest-first index for size eviction.
 *  - "meta": "bytes.response", "bytes.embedding" (u64 little endian, the sum
 *    of key + value bytes per type), and the lifetime counters
 *    "<counter>.<type>" for hits, misses, evictions, expirations, corrupt.
 *  Writes commit in LMDB transactions, so a crash or `kill -9` leaves each
 *  entry either whole or absent. Maintenance runs in batches of a bounded
 *  number of records per transaction: expired records (walking a cursor
 *  that resumes where the last batch stopped), then the oldest records
 *  while the bytes exceed the size limit.
 *
 * Stats: L1 counters count this process's events. L2 counters are the
 * store's lifetime totals (persisted in "meta"), so `kiln cache stats`
 * shows them offline too.
 *
 * Threads: every function of rc_l1, rc_l2 and rc_cache may be called from
 * any thread, except the _destroy/_close functions.
 */
#ifndef KILN_CACHE_H
#define KILN_CACHE_H

#include "../core/kn.h"
#include "../metrics/metrics.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum rc_type { RC_RESPONSE = 0, RC_EMBEDDING = 1, RC_NTYPES } rc_type;
const char *rc_type_name(rc_type t); /* "response", "embedding" */
bool rc_type_parse(const char *s, rc_type *out);

typedef struct rc_key {
    uint64_t hi, lo;
} rc_key;

/* The 128-bit key of bytes (XXH3-128), and the 64-bit model tag of a name
 * (XXH3-64; never 0, which means "every model" where a tag filters). */
rc_key rc_key_of(const void *p, size_t n);
uint64_t rc_model_tag(const char *name);

typedef struct rc_stats {
    uint64_t entries, bytes, hits, misses, evictions, expirations;
    uint64_t corrupt; /* L2: records found corrupt and deleted */
    uint64_t dropped; /* front: L2 writes dropped because the queue was full */
} rc_stats;

/* Prometheus series a tier increments as events happen (any may be NULL). */
typedef struct rc_tier_metrics {
    met_series *hits, *misses, *evictions, *expirations;
} rc_tier_metrics;

/* ---- L1: memory ---------------------------------------------------------- */

typedef enum rc_policy { RC_LRU = 0, RC_LFU, RC_FIFO, RC_RANDOM } rc_policy;
const char *rc_policy_name(rc_policy p); /* "lru", "lfu", "fifo", "random" */
bool rc_policy_parse(const char *s, rc_policy *out);

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

/* What an entry of a value of len bytes stored as stored_len bytes costs
 * against the budget: stored_len plus the entry's bookkeeping. */
size_t rc_l1_entry_cost(size_t stored_len);

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
bool rc_l1_put(rc_l1 *c, rc_key k, uint64_t model, const void *val, size_t len, int64_t expiry_ms, int64_t now_ms);

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

/* ---- L2: disk ------------------------------------------------------------ */

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
    uint64_t max_bytes;                    /* size limit (default 10 GiB); eviction oldest first above it */
    bool read_only;                        /* `kiln cache stats` */
    rc_tier_metrics metrics[RC_NTYPES];
} rc_l2_opts;

/* Opens (creating dir and the store when absent, unless read_only) the LMDB
 * backend. A directory that is not a kiln cache, or an unreadable one, is an
 * error naming the path. */
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
 * and the counters flushed to "meta". Returns how many records it removed
 * in *removed (may be NULL). */
kn_status rc_l2_maintain(rc_l2 *b, int64_t now_ms, size_t batch, uint64_t *removed, kn_err *err);
void rc_l2_stats(rc_l2 *b, rc_type t, rc_stats *s);

/* ---- the front ----------------------------------------------------------- */

typedef struct rc_opts {
    bool enabled[RC_NTYPES];
    uint64_t l1_bytes;          /* per type; 0: no L1 */
    rc_policy policy;
    bool compress;
    double ttl_s[RC_NTYPES];    /* response 3600, embedding 86400 by default */
    const char *dir;            /* L2 directory; NULL: no L2 */
    uint64_t l2_bytes;          /* L2 size limit */
    size_t queue_max;           /* pending L2 writes (0: 4096) */
    double maintain_interval_s; /* L1 sweep + L2 maintenance period (0: 10 s) */
    met_registry *metrics;      /* borrowed; NULL: none. Registers kiln_cache_* {tier,type} */
} rc_opts;

typedef struct rc_cache rc_cache;

/* A disk tier that cannot be opened (unwritable, not a kiln cache) is
 * logged and left out: the memory tier still serves. */
kn_status rc_cache_create(const rc_opts *o, rc_cache **out, kn_err *err);
/* Writes what is still queued, stops the writer, closes L2. Accepts NULL. */
void rc_cache_destroy(rc_cache *c);

typedef enum rc_tier { RC_TIER_NONE = 0, RC_TIER_L1, RC_TIER_L2 } rc_tier;

bool rc_enabled(const rc_cache *c, rc_type t); /* false for a NULL cache */

/* L1, then L2 (a hit there is promoted to L1 with its expiry). Returns the
 * tier that hit, or RC_TIER_NONE (a miss). *val is malloc'd (the caller
 * frees). */
rc_tier rc_lookup(rc_cache *c, rc_type t, uint64_t model, rc_key k, void **val, size_t *len);
/* Stores in L1 now and queues the write to L2 (the value is copied). The
 * expiry is now + the type's TTL. */
void rc_store(rc_cache *c, rc_type t, uint64_t model, rc_key k, const void *val, size_t len);
/* Clears type t (or every type when all) of model (0: all) in L1 (when l1)
 * and L2 (when l2); pending L2 writes are flushed first. Returns the
 * entries removed. */
uint64_t rc_clear(rc_cache *c, bool all, rc_type t, uint64_t model, bool l1, bool l2);
/* Stats of one tier and type (RC_TIER_L1 or RC_TIER_L2); zeros for a tier
 * that is off. */
void rc_stats_get(rc_cache *c, rc_tier tier, rc_type t, rc_stats *s);
/* Waits until the writer has written everything queued so far (tests,
 * shutdown, clear). */
void rc_flush(rc_cache *c);
/* Sets the kiln_cache_entries / kiln_cache_bytes gauges {tier,type} from
 * the stats (call before rendering /metrics). Accepts NULL. */
void rc_metrics_refresh(rc_cache *c);

#endif
