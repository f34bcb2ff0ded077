/*
 * kiln/kv.h — the paged KV cache: a pool of fixed-size blocks of KV rows, a
 * block table per sequence, and automatic prefix caching by block hash.
 *
 * Owns:
 *  - kv_cache: the block pool (K and V rows of every layer and kv head,
 *    block_size positions per block), the per-sequence block tables, the
 *    token ids each block holds, the hash index of full blocks and the LRU
 *    list of cached blocks nobody references.
 *
 * Layout: block b holds, for K and for V separately,
 *   [n_layer][n_head_kv][block_size][row_bytes]
 * so the rows of one (layer, head) within a block are contiguous. What a
 * row holds (F16, Q8_0...) is the model's business; kv only moves bytes.
 *
 * Prefix caching:
 *  - When a block of a sequence becomes full, it is registered under the
 *    hash of its tokens chained with the hash of the block before it and
 *    the cache's salt (the model instance). From then on it is read-only.
 *  - kv_seq_match gives an empty sequence the longest chain of registered
 *    blocks that prefixes its tokens: refcounted, shared, computed once.
 *  - A match compares the tokens and the parent block's identity
 *    (id and generation), not only the hash, so a hash collision can never
 *    splice one sequence's context into another's.
 *  - A block nobody references stays registered on an LRU list and is
 *    evicted (generation bumped) only when the pool needs room. Sequences
 *    release their blocks last-first, so a chain's tail is evicted before
 *    its head.
 *  - A sequence that writes into a shared or registered block (after a
 *    truncation into it) gets a private copy first (copy-on-write).
 *  - Two sequences that compute the same full block keep one copy: the
 *    later one switches to the registered block when it commits.
 *
 * Threading: a kv_cache is used by one thread at a time (the engine
 * thread); kv_stats_get may be called from others (it reads counters
 * atomically, without a lock).
 */
#ifndef KILN_KV_H
#define KILN_KV_H

#include "kiln/core.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KV_BLOCK_MIN 16
#define KV_BLOCK_MAX 256

typedef struct kv_geom {
    int n_layer, n_head_kv;
    size_t row_bytes; /* one position of one kv head */
    int row_type;     /* the owner's tag for the row format (kv does not read it) */
} kv_geom;

typedef struct kv_opts {
    int n_seq;        /* sequence slots */
    int n_ctx;        /* positions per sequence at most */
    int block_size;   /* positions per block: a power of two in [KV_BLOCK_MIN, KV_BLOCK_MAX] */
    int n_blocks;     /* pool size; 0: enough for every sequence full, plus one per sequence */
    bool prefix_cache; /* register full blocks for reuse */
    uint64_t salt;     /* the model instance's identity, mixed into every block hash */
    bool test_const_hash; /* test hook: every block hashes to the same value (forces collisions) */
} kv_opts;

typedef struct kv_cache kv_cache;

/* The automatic pool size: every sequence its full context plus one block
 * (for copy-on-write), and room for cached prefixes of up to cache_bytes,
 * but at most 8 times the sequences' own blocks. */
int64_t kv_pool_blocks(int n_seq, int n_ctx, int block_size, uint64_t block_bytes, uint64_t cache_bytes);

/* Validates and allocates the pool (the rows are not touched, so untouched
 * blocks cost no resident memory). */
kn_status kv_cache_create(const kv_geom *g, const kv_opts *o, kv_cache **out, kn_err *err);
void kv_cache_destroy(kv_cache *kv); /* accepts NULL */

int kv_n_seq(const kv_cache *kv);
int kv_n_ctx(const kv_cache *kv);
int kv_block_size(const kv_cache *kv);
int kv_n_blocks(const kv_cache *kv);
/* Blocks one full-context sequence needs. */
int kv_blocks_per_seq(const kv_cache *kv);
uint64_t kv_block_bytes(const kv_cache *kv); /* K and V of one block */
uint64_t kv_bytes(const kv_cache *kv);       /* the whole pool */
const kv_geom *kv_geometry(const kv_cache *kv);

typedef struct kv_stats {
    int blocks_total;
    int blocks_used;    /* referenced by at least one sequence */
    int blocks_cached;  /* registered, referenced by none, evictable */
    int blocks_free;
    int blocks_logical; /* sum of the sequences' table lengths (what private copies would take) */
    uint64_t evictions, cow_copies, dedups, collisions;
} kv_stats;
void kv_stats_get(const kv_cache *kv, kv_stats *st);

/* Blocks that can be handed out now (free plus evictable). */
int kv_available(const kv_cache *kv);

/* ---- sequences ---- */

/* Positions of the sequence whose KV has been computed. */
int kv_seq_len(const kv_cache *kv, int seq);
/* Forgets positions >= pos (0 clears the sequence) and releases the blocks
 * past them. */
void kv_seq_truncate(kv_cache *kv, int seq, int pos);
/* On a cleared sequence: attaches the longest chain of cached blocks that
 * prefixes tokens[0..n) and returns the positions now computed (a multiple
 * of the block size, at most n). The caller truncates if it needs to
 * recompute a tail (a prompt's last token, for its logits). */
int kv_seq_match(kv_cache *kv, int seq, const int32_t *tokens, int n);
/* Blocks that writing positions [pos0, end) of seq would take from the
 * pool (new blocks and copy-on-write), given its current table. */
int kv_seq_need(const kv_cache *kv, int seq, int pos0, int end);

/* ---- the forward pass's side ---- */

/* Before a batch: checks that each sequence's tokens come in consecutive
 * positions starting at most at its length (an earlier start truncates),
 * that positions fit n_ctx, and that the pool has the blocks; then copies
 * on write, allocates, and records the tokens. On error nothing changed,
 * except KN_EBUSY (the pool is short) which also leaves every table as it
 * was. */
kn_status kv_batch_begin(kv_cache *kv, int n, const int32_t *seq, const int32_t *pos, const int32_t *tok,
                         kn_err *err);
/* After the batch computed: the positions are valid; blocks that became
 * full are registered for prefix reuse. */
void kv_batch_end(kv_cache *kv, int n, const int32_t *seq, const int32_t *pos);

/* The row of (layer, head) at pos of seq, K (v false) or V. The rows from
 * pos to the end of its block are contiguous: *run (optional) gets how
 * many. pos must be below the sequence's reserved positions. */
uint8_t *kv_row(const kv_cache *kv, int seq, int layer, int head, int pos, bool v, int *run);

#endif
