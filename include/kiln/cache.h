/*
 * kiln/cache.h — the response and embedding cache (prefix rc_), as the server and
 * the CLI see it: the front (rc_cache), which reads L1 (memory) -> L2 (disk)
 * -> miss and writes through to L2 off the request path, and two offline
 * calls on the disk store for `kiln cache stats|clear`.
 *
 * What a value is, and how its key is made, is the caller's business (the
 * server canonicalizes requests into rc_key, a 128-bit XXH3 hash, and tags
 * each entry with a 64-bit hash of its model's name so that a clear can
 * target one model). The cache stores opaque bytes with an absolute expiry
 * in wall-clock milliseconds; a promotion from L2 to L1 keeps that expiry.
 * An expired entry is never returned.
 *
 * Owns:
 *  - rc_cache: both tiers for both types, a writer thread with a bounded
 *    queue of pending L2 writes (full: the write is dropped and counted),
 *    and the periodic L1 sweep and L2 maintenance it runs.
 *  - L1, one per entry type: a hash table with a byte budget, one of four
 *    O(1) eviction policies (rc_policy), TTL, zstd for values over 1 KiB.
 *  - L2: one store shared by both types behind a backend table; the LMDB
 *    backend keeps it in a directory (data.mdb, lock.mdb), each value
 *    zstd-compressed with a checksum, the oldest evicted above a size limit.
 * The tiers themselves, the backend table and the on-disk format are
 * private to src/cache (cache_internal.h, l2_record.h, l2_lmdb.h).
 *
 * Stats: L1 counters count this process's events. L2 counters are the
 * store's lifetime totals (persisted with it), so `kiln cache stats` shows
 * them offline too.
 *
 * Threads: every function may be called from any thread, except
 * rc_cache_destroy.
 */
#ifndef KILN_CACHE_H
#define KILN_CACHE_H

#include "kiln/core.h"
#include "kiln/metrics.h"

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

/* L1 eviction policies. */
typedef enum rc_policy { RC_LRU = 0, RC_LFU, RC_FIFO, RC_RANDOM } rc_policy;
const char *rc_policy_name(rc_policy p); /* "lru", "lfu", "fifo", "random" */
bool rc_policy_parse(const char *s, rc_policy *out);

/* What an L1 entry whose value is stored in stored_len bytes costs against
 * the memory budget: stored_len plus the entry's bookkeeping (GET
 * /cache/stats reports rc_l1_entry_cost(0) as the per-entry overhead). */
size_t rc_l1_entry_cost(size_t stored_len);

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

/* ---- offline: the disk store without a server (`kiln cache`) ------------- */

/* The stats of each type (s[t] for t < RC_NTYPES: entries, bytes and the
 * store's lifetime hits, misses, evictions, expirations and corrupt
 * records) of the disk store in dir. The store is opened read-only: nothing
 * is created or changed. No store there: KN_ENOTFOUND; a directory or file
 * that is not a kiln cache: KN_EFORMAT or KN_EINVAL; the message names dir. */
kn_status rc_disk_stats(const char *dir, rc_stats s[RC_NTYPES], kn_err *err);

/* Removes the entries of type t (every type when all) of model (0: every
 * model) from the disk store in dir, which must exist (KN_ENOTFOUND
 * otherwise: nothing is created). Safe while a server uses the store (its
 * writers are serialized with ours). *removed (may be NULL) gets the number
 * of entries removed. */
kn_status rc_disk_clear(const char *dir, bool all, rc_type t, uint64_t model, uint64_t *removed, kn_err *err);

#endif
