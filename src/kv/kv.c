/*
 * kv.c — block pool, block tables and the prefix-cache index (see kiln/kv.h).
 */
#include "kiln/kv.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

typedef struct kv_block {
    uint64_t hash;       /* valid when registered */
    int32_t parent;      /* registered: the block before it in its chain (-1: first) */
    uint32_t parent_gen; /* ... and that block's generation then */
    uint32_t gen;        /* bumped each time the block is recycled */
    int32_t refs;        /* sequences whose tables hold it */
    int32_t hnext;       /* next block in its hash bucket */
    int32_t prev, next;  /* LRU list (registered, refs 0) or free stack (next only) */
    bool registered;
} kv_block;

typedef struct kv_seq {
    int32_t *table; /* [blocks_per_seq] */
    int n_blocks;   /* table entries (may run past len: reserved for a batch) */
    int len;        /* positions computed */
    int n_reg;      /* leading table entries known registered */
    int b_lo, b_hi; /* kv_batch_begin scratch: first and last position in the batch, b_lo < 0: absent */
} kv_seq;

struct kv_cache {
    kv_geom g;
    kv_opts o;
    int bs, bs_shift, per_seq;
    size_t stride; /* bytes of one block's K (or V) */
    uint8_t *k, *v;
    kv_block *blk;
    int32_t *tok; /* [n_blocks][bs] */
    kv_seq *seq;
    int32_t *tables;
    int32_t *bucket; /* [n_buckets] heads, -1 empty */
    uint64_t bucket_mask;
    int32_t free_top; /* free stack */
    int32_t lru_head, lru_tail;
    int n_free, n_lru;
    int n_logical; /* sum of the sequences' table lengths */
    /* read by kv_stats_get from other threads */
    atomic_int st_used, st_cached, st_free, st_logical;
    atomic_uint_fast64_t st_evict, st_cow, st_dedup, st_coll;
};

/* ---- lists ---- */

static void lru_unlink(kv_cache *kv, int32_t b) {
    kv_block *x = &kv->blk[b];
    if (x->prev >= 0) kv->blk[x->prev].next = x->next;
    else kv->lru_head = x->next;
    if (x->next >= 0) kv->blk[x->next].prev = x->prev;
    else kv->lru_tail = x->prev;
    x->prev = x->next = -1;
    kv->n_lru--;
}

static void lru_push_tail(kv_cache *kv, int32_t b) {
    kv_block *x = &kv->blk[b];
    x->next = -1;
    x->prev = kv->lru_tail;
    if (kv->lru_tail >= 0) kv->blk[kv->lru_tail].next = b;
    else kv->lru_head = b;
    kv->lru_tail = b;
    kv->n_lru++;
}

static void free_push(kv_cache *kv, int32_t b) {
    kv->blk[b].next = kv->free_top;
    kv->blk[b].prev = -1;
    kv->free_top = b;
    kv->n_free++;
}

static void publish(kv_cache *kv) {
    atomic_store_explicit(&kv->st_free, kv->n_free, memory_order_relaxed);
    atomic_store_explicit(&kv->st_cached, kv->n_lru, memory_order_relaxed);
    atomic_store_explicit(&kv->st_used, kv->o.n_blocks - kv->n_free - kv->n_lru, memory_order_relaxed);
    atomic_store_explicit(&kv->st_logical, kv->n_logical, memory_order_relaxed);
}

/* ---- hash index ---- */

static uint64_t block_hash(const kv_cache *kv, uint64_t parent_hash, const int32_t *toks) {
    if (kv->o.test_const_hash) return 0;
    return XXH3_64bits_withSeed(toks, (size_t)kv->bs * sizeof *toks, parent_hash ^ kv->o.salt);
}

static void index_remove(kv_cache *kv, int32_t b) {
    int32_t *pp = &kv->bucket[kv->blk[b].hash & kv->bucket_mask];
    while (*pp >= 0 && *pp != b) pp = &kv->blk[*pp].hnext;
    if (*pp == b) *pp = kv->blk[b].hnext;
    kv->blk[b].hnext = -1;
    kv->blk[b].registered = false;
}

/* The registered block holding toks after parent (-1: chain start), or -1. */
static int32_t index_find(kv_cache *kv, uint64_t h, int32_t parent, const int32_t *toks) {
    uint32_t pgen = parent >= 0 ? kv->blk[parent].gen : 0;
    for (int32_t b = kv->bucket[h & kv->bucket_mask]; b >= 0; b = kv->blk[b].hnext) {
        const kv_block *x = &kv->blk[b];
        if (x->hash != h) continue;
        if (x->parent == parent && x->parent_gen == pgen &&
            !memcmp(kv->tok + (size_t)b * kv->bs, toks, (size_t)kv->bs * sizeof *toks))
            return b;
        atomic_fetch_add_explicit(&kv->st_coll, 1, memory_order_relaxed); /* same hash, other content */
    }
    return -1;
}

/* ---- blocks ---- */

static int32_t block_alloc(kv_cache *kv) {
    int32_t b;
    if (kv->free_top >= 0) {
        b = kv->free_top;
        kv->free_top = kv->blk[b].next;
        kv->n_free--;
    } else if (kv->lru_head >= 0) {
        b = kv->lru_head;
        lru_unlink(kv, b);
        index_remove(kv, b);
        atomic_fetch_add_explicit(&kv->st_evict, 1, memory_order_relaxed);
    } else {
        return -1;
    }
    kv_block *x = &kv->blk[b];
    x->gen++;
    x->refs = 1;
    x->registered = false;
    x->prev = x->next = -1;
    return b;
}

static void block_ref(kv_cache *kv, int32_t b) {
    if (kv->blk[b].refs++ == 0) lru_unlink(kv, b); /* only registered blocks sit unreferenced */
}

static void block_unref(kv_cache *kv, int32_t b) {
    kv_block *x = &kv->blk[b];
    KN_ASSERT(x->refs > 0);
    if (--x->refs > 0) return;
    if (x->registered) lru_push_tail(kv, b);
    else free_push(kv, b);
}

/* ---- create ---- */

int64_t kv_pool_blocks(int n_seq, int n_ctx, int block_size, uint64_t block_bytes, uint64_t cache_bytes) {
    int64_t per_seq = ((int64_t)n_ctx + block_size - 1) / block_size;
    int64_t extra = block_bytes ? (int64_t)(cache_bytes / block_bytes) : 0;
    if (extra > 8 * (int64_t)n_seq * per_seq) extra = 8 * (int64_t)n_seq * per_seq;
    return (int64_t)n_seq * (per_seq + 1) + extra;
}

kn_status kv_cache_create(const kv_geom *g, const kv_opts *o, kv_cache **out, kn_err *err) {
    *out = NULL;
    if (g->n_layer < 1 || g->n_head_kv < 1 || g->row_bytes < 1 || g->row_bytes > (1u << 20))
        return kn_fail(err, KN_EINVAL, "bad KV geometry");
    if (o->n_seq < 1 || o->n_seq > 4096 || o->n_ctx < 1 || o->n_ctx > (1 << 24))
        return kn_fail(err, KN_EINVAL, "KV cache needs 1..4096 sequences and 1..2^24 positions");
    int bs = o->block_size;
    if (bs < KV_BLOCK_MIN || bs > KV_BLOCK_MAX || (bs & (bs - 1)))
        return kn_fail(err, KN_EINVAL, "KV block size %d: must be a power of two in [%d, %d]", bs, KV_BLOCK_MIN,
                       KV_BLOCK_MAX);
    int per_seq = (o->n_ctx + bs - 1) / bs;
    int64_t n_blocks = o->n_blocks > 0 ? o->n_blocks : (int64_t)o->n_seq * (per_seq + 1);
    if (n_blocks < per_seq + 1)
        return kn_fail(err, KN_EINVAL,
                       "a KV pool of %lld blocks cannot hold one full sequence (%d positions need %d blocks, plus one)",
                       (long long)n_blocks, o->n_ctx, per_seq);
    if (n_blocks > (1 << 28)) return kn_fail(err, KN_ERANGE, "KV pool of %lld blocks is too large", (long long)n_blocks);
    uint64_t stride = 0, total = 0;
    if (!kn_mul_u64((uint64_t)g->n_layer * (uint64_t)g->n_head_kv, (uint64_t)bs * g->row_bytes, &stride) ||
        !kn_mul_u64(stride, (uint64_t)n_blocks, &total) || total > (1ull << 40))
        return kn_fail(err, KN_ERANGE, "KV pool of %lld blocks is too large", (long long)n_blocks);
    kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv) return kn_fail(err, KN_ENOMEM, "out of memory");
    kv->g = *g;
    kv->o = *o;
    kv->o.n_blocks = (int)n_blocks;
    kv->bs = bs;
    while ((1 << kv->bs_shift) < bs) kv->bs_shift++;
    kv->per_seq = per_seq;
    kv->stride = (size_t)stride;
    size_t n_buckets = 1;
    while (n_buckets < (size_t)n_blocks * 2) n_buckets <<= 1;
    kv->bucket_mask = n_buckets - 1;
    kv->k = kn_alloc_aligned((size_t)total);
    kv->v = kn_alloc_aligned((size_t)total);
    kv->blk = calloc((size_t)n_blocks, sizeof *kv->blk);
    kv->tok = malloc((size_t)n_blocks * (size_t)bs * sizeof *kv->tok);
    kv->seq = calloc((size_t)o->n_seq, sizeof *kv->seq);
    kv->tables = malloc((size_t)o->n_seq * (size_t)per_seq * sizeof *kv->tables);
    kv->bucket = malloc(n_buckets * sizeof *kv->bucket);
    if (!kv->k || !kv->v || !kv->blk || !kv->tok || !kv->seq || !kv->tables || !kv->bucket) {
        kv_cache_destroy(kv);
        return kn_fail(err, KN_ENOMEM, "cannot allocate a KV pool of %.1f MiB", 2.0 * (double)total / 1048576.0);
    }
    for (size_t i = 0; i < n_buckets; i++) kv->bucket[i] = -1;
    kv->free_top = kv->lru_head = kv->lru_tail = -1;
    for (int32_t b = (int32_t)n_blocks - 1; b >= 0; b--) {
        kv->blk[b].hnext = -1;
        free_push(kv, b);
    }
    for (int s = 0; s < o->n_seq; s++) kv->seq[s].table = kv->tables + (size_t)s * per_seq;
    publish(kv);
    *out = kv;
    return KN_OK;
}

void kv_cache_destroy(kv_cache *kv) {
    if (!kv) return;
    kn_free_aligned(kv->k);
    kn_free_aligned(kv->v);
    free(kv->blk);
    free(kv->tok);
    free(kv->seq);
    free(kv->tables);
    free(kv->bucket);
    free(kv);
}

int kv_n_seq(const kv_cache *kv) { return kv->o.n_seq; }
int kv_n_ctx(const kv_cache *kv) { return kv->o.n_ctx; }
int kv_block_size(const kv_cache *kv) { return kv->bs; }
int kv_n_blocks(const kv_cache *kv) { return kv->o.n_blocks; }
int kv_blocks_per_seq(const kv_cache *kv) { return kv->per_seq; }
uint64_t kv_block_bytes(const kv_cache *kv) { return 2ull * kv->stride; }
uint64_t kv_bytes(const kv_cache *kv) { return 2ull * kv->stride * (uint64_t)kv->o.n_blocks; }
const kv_geom *kv_geometry(const kv_cache *kv) { return &kv->g; }
int kv_available(const kv_cache *kv) { return kv->n_free + kv->n_lru; }

void kv_stats_get(const kv_cache *kv, kv_stats *st) {
    kv_cache *m = (kv_cache *)kv; /* atomics only */
    st->blocks_total = kv->o.n_blocks;
    st->blocks_used = atomic_load_explicit(&m->st_used, memory_order_relaxed);
    st->blocks_cached = atomic_load_explicit(&m->st_cached, memory_order_relaxed);
    st->blocks_free = atomic_load_explicit(&m->st_free, memory_order_relaxed);
    st->blocks_logical = atomic_load_explicit(&m->st_logical, memory_order_relaxed);
    st->evictions = atomic_load_explicit(&m->st_evict, memory_order_relaxed);
    st->cow_copies = atomic_load_explicit(&m->st_cow, memory_order_relaxed);
    st->dedups = atomic_load_explicit(&m->st_dedup, memory_order_relaxed);
    st->collisions = atomic_load_explicit(&m->st_coll, memory_order_relaxed);
}

/* ---- sequences ---- */

int kv_seq_len(const kv_cache *kv, int seq) { return kv->seq[seq].len; }

static void seq_truncate(kv_cache *kv, int seq, int pos) {
    kv_seq *s = &kv->seq[seq];
    if (pos < 0) pos = 0;
    if (pos < s->len) s->len = pos;
    int keep = (s->len + kv->bs - 1) >> kv->bs_shift;
    /* last-first, so that a chain's tail reaches the LRU list before its head */
    while (s->n_blocks > keep) {
        block_unref(kv, s->table[--s->n_blocks]);
        kv->n_logical--;
    }
    int full = s->len >> kv->bs_shift;
    if (s->n_reg > full) {
        /* the partial block may still be registered: it stays read-only and
         * is copied before the next write */
        s->n_reg = full;
    }
}

void kv_seq_truncate(kv_cache *kv, int seq, int pos) {
    if (seq < 0 || seq >= kv->o.n_seq) return;
    seq_truncate(kv, seq, pos);
    publish(kv);
}

int kv_seq_match(kv_cache *kv, int seq, const int32_t *tokens, int n) {
    if (seq < 0 || seq >= kv->o.n_seq) return 0;
    seq_truncate(kv, seq, 0);
    kv_seq *s = &kv->seq[seq];
    if (!kv->o.prefix_cache) return 0;
    int nb = n >> kv->bs_shift;
    if (nb > kv->per_seq) nb = kv->per_seq;
    uint64_t h = 0;
    int32_t parent = -1;
    for (int i = 0; i < nb; i++) {
        const int32_t *t = tokens + (size_t)i * kv->bs;
        h = block_hash(kv, h, t);
        int32_t b = index_find(kv, h, parent, t);
        if (b < 0) break;
        block_ref(kv, b);
        s->table[s->n_blocks++] = b;
        kv->n_logical++;
        parent = b;
    }
    s->len = s->n_blocks * kv->bs;
    s->n_reg = s->n_blocks;
    publish(kv);
    return s->len;
}

/* Whether the block at table index i of s must be copied before a write. */
static bool needs_cow(const kv_cache *kv, const kv_seq *s, int i) {
    if (i >= s->n_blocks) return false;
    const kv_block *x = &kv->blk[s->table[i]];
    return x->refs > 1 || x->registered;
}

static int seq_need(const kv_cache *kv, const kv_seq *s, int pos0, int end) {
    int len = pos0 < s->len ? pos0 : s->len;
    int keep = (len + kv->bs - 1) >> kv->bs_shift, have = s->n_blocks < keep ? s->n_blocks : keep;
    int want = (end + kv->bs - 1) >> kv->bs_shift;
    int need = want > have ? want - have : 0;
    if ((len & (kv->bs - 1)) && needs_cow(kv, s, len >> kv->bs_shift)) need++;
    return need;
}

int kv_seq_need(const kv_cache *kv, int seq, int pos0, int end) {
    if (seq < 0 || seq >= kv->o.n_seq) return 0;
    return seq_need(kv, &kv->seq[seq], pos0, end);
}

/* ---- batches ---- */

kn_status kv_batch_begin(kv_cache *kv, int n, const int32_t *seq, const int32_t *pos, const int32_t *tok,
                         kn_err *err) {
    for (int s = 0; s < kv->o.n_seq; s++) kv->seq[s].b_lo = -1;
    for (int t = 0; t < n; t++) {
        if (seq[t] < 0 || seq[t] >= kv->o.n_seq)
            return kn_fail(err, KN_EINVAL, "sequence %d out of range [0, %d)", seq[t], kv->o.n_seq);
        if (pos[t] < 0 || pos[t] >= kv->o.n_ctx)
            return kn_fail(err, KN_ERANGE, "position %d is past the context size %d", pos[t], kv->o.n_ctx);
        kv_seq *s = &kv->seq[seq[t]];
        if (s->b_lo < 0) {
            if (pos[t] > s->len)
                return kn_fail(err, KN_EINVAL, "sequence %d: position %d skips positions (have %d)", seq[t], pos[t],
                               s->len);
            s->b_lo = s->b_hi = pos[t];
        } else {
            if (pos[t] != s->b_hi + 1)
                return kn_fail(err, KN_EINVAL, "sequence %d: position %d does not follow %d in the batch", seq[t],
                               pos[t], s->b_hi);
            s->b_hi = pos[t];
        }
    }
    int need = 0;
    for (int i = 0; i < kv->o.n_seq; i++)
        if (kv->seq[i].b_lo >= 0) need += seq_need(kv, &kv->seq[i], kv->seq[i].b_lo, kv->seq[i].b_hi + 1);
    /* truncation may release blocks, but conservatively count only what is free now */
    if (need > kv_available(kv))
        return kn_fail(err, KN_EBUSY, "the KV cache is full: the batch needs %d blocks, %d are free", need,
                       kv_available(kv));
    for (int i = 0; i < kv->o.n_seq; i++) {
        kv_seq *s = &kv->seq[i];
        if (s->b_lo < 0) continue;
        seq_truncate(kv, i, s->b_lo);
        int ci = s->len >> kv->bs_shift;
        if ((s->len & (kv->bs - 1)) && needs_cow(kv, s, ci)) {
            int32_t old = s->table[ci], nb = block_alloc(kv);
            KN_ASSERT(nb >= 0);
            memcpy(kv->k + (size_t)nb * kv->stride, kv->k + (size_t)old * kv->stride, kv->stride);
            memcpy(kv->v + (size_t)nb * kv->stride, kv->v + (size_t)old * kv->stride, kv->stride);
            memcpy(kv->tok + (size_t)nb * kv->bs, kv->tok + (size_t)old * kv->bs, (size_t)kv->bs * sizeof *kv->tok);
            block_unref(kv, old);
            s->table[ci] = nb;
            if (s->n_reg > ci) s->n_reg = ci;
            atomic_fetch_add_explicit(&kv->st_cow, 1, memory_order_relaxed);
        }
        int want = (s->b_hi + 1 + kv->bs - 1) >> kv->bs_shift;
        while (s->n_blocks < want) {
            int32_t nb = block_alloc(kv);
            KN_ASSERT(nb >= 0);
            s->table[s->n_blocks++] = nb;
            kv->n_logical++;
        }
    }
    for (int t = 0; t < n; t++) {
        const kv_seq *s = &kv->seq[seq[t]];
        kv->tok[(size_t)s->table[pos[t] >> kv->bs_shift] * kv->bs + (pos[t] & (kv->bs - 1))] = tok[t];
    }
    publish(kv);
    return KN_OK;
}

/* Registers the full blocks of s past n_reg, switching to an identical
 * registered block where one exists. */
static void seq_register(kv_cache *kv, kv_seq *s) {
    int full = s->len >> kv->bs_shift;
    for (int i = s->n_reg; i < full; i++) {
        int32_t b = s->table[i], parent = i > 0 ? s->table[i - 1] : -1;
        uint64_t ph = parent >= 0 ? kv->blk[parent].hash : 0;
        const int32_t *t = kv->tok + (size_t)b * kv->bs;
        uint64_t h = block_hash(kv, ph, t);
        if (kv->blk[b].registered) { /* a shared block from a match: already indexed */
            s->n_reg = i + 1;
            continue;
        }
        int32_t same = index_find(kv, h, parent, t);
        if (same >= 0) {
            block_ref(kv, same);
            block_unref(kv, b);
            s->table[i] = same;
            atomic_fetch_add_explicit(&kv->st_dedup, 1, memory_order_relaxed);
        } else {
            kv_block *x = &kv->blk[b];
            x->hash = h;
            x->parent = parent;
            x->parent_gen = parent >= 0 ? kv->blk[parent].gen : 0;
            x->registered = true;
            int32_t *head = &kv->bucket[h & kv->bucket_mask];
            x->hnext = *head;
            *head = b;
        }
        s->n_reg = i + 1;
    }
}

void kv_batch_end(kv_cache *kv, int n, const int32_t *seq, const int32_t *pos) {
    for (int t = 0; t < n; t++) {
        kv_seq *s = &kv->seq[seq[t]];
        if (pos[t] + 1 > s->len) s->len = pos[t] + 1;
    }
    if (kv->o.prefix_cache)
        for (int t = 0; t < n; t++) {
            kv_seq *s = &kv->seq[seq[t]];
            if (s->n_reg < (s->len >> kv->bs_shift)) seq_register(kv, s);
        }
    publish(kv);
}

uint8_t *kv_row(const kv_cache *kv, int seq, int layer, int head, int pos, bool v, int *run) {
    const kv_seq *s = &kv->seq[seq];
    int off = pos & (kv->bs - 1);
    size_t b = (size_t)s->table[pos >> kv->bs_shift];
    if (run) *run = kv->bs - off;
    size_t row = ((size_t)layer * (size_t)kv->g.n_head_kv + (size_t)head) * (size_t)kv->bs + (size_t)off;
    return (v ? kv->v : kv->k) + b * kv->stride + row * kv->g.row_bytes;
}
