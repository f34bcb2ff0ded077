/*
 * l1.c — the cache's memory tier (rc_l1, see cache_internal.h): a chained
 * hash table with incremental rehashing, four O(1) eviction policies, a byte
 * budget, TTL, and zstd for large values.
 *
 * Layout:
 *  - One allocation per entry: the l1_ent header followed by the stored
 *    bytes (the zstd frame when stored_len < raw_len, else the raw value).
 *  - Hash table: power-of-two bucket arrays of singly linked chains, the
 *    bucket taken from key.lo (keys are XXH3-128 already). When the load
 *    passes 1 a table twice the size is allocated; below 1/4 (and above
 *    L1_MIN_BUCKETS) one half the size. While both exist, every get, put and
 *    delete first moves at most L1_REHASH_ENTRIES entries (visiting at most
 *    L1_REHASH_EMPTY empty buckets) from the old table to the new one;
 *    lookups check the old bucket (when not yet migrated) and the new one.
 *    New entries go to the new table. So no operation rehashes more than a
 *    few entries.
 *  - Policies (c->policy):
 *    lru    one doubly linked list, most recent at the head; a hit or a
 *           replacement moves the entry to the head; the tail is evicted.
 *    fifo   the same list in insertion order; hits do not move entries.
 *           Replacing a key's value counts as a new insertion (the entry
 *           goes to the head, the newest), since the value is new.
 *    lfu    the O(1) LFU: frequency nodes in an ascending doubly linked
 *           list, each with a doubly linked list of its entries (most recent
 *           at the head). A hit moves the entry to the freq+1 node (created
 *           next to it when absent; a node left empty is removed). New
 *           entries start at 1. A replacement is a use of the key: the new
 *           value keeps the key's frequency, plus one. The victim is the tail
 *           (least recent) of the lowest node. Freed nodes are kept on a
 *           short free list so that a hit rarely allocates.
 *    random a dense array of entry pointers (each entry knows its index) in
 *           chunks of L1_RCHUNK, so that growing never copies the array;
 *           the victim is a uniform index from a splitmix64 generator
 *           seeded by opts.seed, removed by swapping in the last entry.
 *  - Eviction happens after the new entry is linked, skipping it ("protect"),
 *    which gives the same victims as evicting first (and, for LFU, avoids
 *    evicting the newcomer that sits alone at frequency 1).
 *
 * Invariants (under c->mu): bytes == sum of rc_l1_entry_cost(stored_len)
 * over the entries and bytes <= budget after every public call; entries ==
 * the number of entries in the tables == the entries of the policy
 * structure; no entry with expiry_ms <= now is returned by get.
 *
 * Locking: one mutex per rc_l1. Compression (put) happens before taking it,
 * decompression (get) after releasing it, on a copy of the stored bytes.
 * They reuse zstd contexts from a small pool (a context costs about 20 us
 * to set up, five times a small value's (de)compression); the pool has its
 * own mutex, held only to take or return a pointer. The idle contexts (up to
 * L1_ZPOOL of each kind, ~100 KB each) are outside the byte budget.
 * rc_l1_sweep and rc_l1_clear work in batches of L1_BATCH entries and
 * release the lock between batches. A sweep call examines about max entries
 * (whole buckets) and at most 4*max+64 buckets, so it may remove fewer than
 * max even when more have expired; its cursor walks the main table only, so
 * while a migration runs it first helps it along (a bounded number of
 * steps) and returns early if it is still running. While a clear runs, no resize starts,
 * so its bucket cursor stays valid across batches.
 *
 * Work counters: get, put and delete are "ops"; their probes (chain entries
 * compared) and moves (list/chain/array links changed, entries rehashed,
 * frequency nodes created or removed) are added to the totals and to the
 * per-op maxima. A put that must evict k entries does O(k) work (one victim
 * is O(1)). Sweep and clear are bulk operations bounded by their batch and
 * are not counted.
 */
#include "cache_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#define L1_MIN_BUCKETS 16u
#define L1_REHASH_ENTRIES 4  /* entries moved per incremental rehash step */
#define L1_REHASH_EMPTY 16   /* empty old buckets skipped per step */
#define L1_BATCH 256         /* entries per locked batch of sweep/clear */
#define L1_RCHUNK_LOG 10
#define L1_RCHUNK ((size_t)1 << L1_RCHUNK_LOG) /* random: pointers per chunk */
#define L1_FREQ_FREE_MAX 64  /* lfu: freed frequency nodes kept for reuse */
#define L1_ZPOOL 8           /* idle zstd contexts kept, of each kind */

typedef struct l1_freq l1_freq;

typedef struct l1_ent {
    rc_key key;
    uint64_t model;
    int64_t expiry_ms;
    struct l1_ent *chain;      /* next in the hash bucket */
    struct l1_ent *prev, *next; /* lru/fifo list, or lfu's list within its node */
    union {
        l1_freq *node; /* lfu */
        size_t idx;    /* random: index in the dense array */
    } pol;
    uint32_t raw_len;    /* the value's length */
    uint32_t stored_len; /* < raw_len: a zstd frame; == raw_len: raw */
    unsigned char data[];
} l1_ent;

struct l1_freq {
    uint64_t freq;
    l1_freq *prev, *next;    /* ascending frequencies */
    l1_ent *head, *tail;     /* head: most recent */
};

/* What an entry costs beyond its stored bytes. An honest steady-state
 * estimate: the header, the allocator's chunk header and rounding (glibc:
 * 8 + up to 15), the bucket array's share (load 0.5 to 1 after a resize:
 * one to two pointers), and the policy's share (random: one array slot; lfu:
 * a frequency node is shared by the entries with that count). Transiently
 * (during a migration, or at a load near the 1/4 shrink threshold) the
 * bucket arrays take more. */
#define L1_ENTRY_OVERHEAD (sizeof(l1_ent) + 16 + 16 + 8)

struct rc_l1 {
    pthread_mutex_t mu;
    rc_l1_opts o;
    /* hash table: t0 (nb0 buckets); during a migration also t1 (nb1) and
     * ridx, the first t0 bucket not yet fully moved */
    l1_ent **t0, **t1;
    size_t nb0, nb1, ridx;
    int clearing; /* clears running: no resize may start */
    size_t sweep_cur;
    /* lru/fifo */
    l1_ent *head, *tail;
    /* lfu */
    l1_freq *fhead;
    l1_freq *ffree;
    int nffree;
    /* random */
    l1_ent ***rchunks;
    size_t nrchunks, rdir_cap, rn;
    uint64_t rng;
    /* counters */
    uint64_t entries, bytes, hits, misses, evictions, expirations;
    rc_l1_work work;
    uint64_t op_probes, op_moves;
    /* idle zstd contexts */
    pthread_mutex_t zmu;
    ZSTD_CCtx *cpool[L1_ZPOOL];
    ZSTD_DCtx *dpool[L1_ZPOOL];
    int ncpool, ndpool;
};

/* ---- zstd context pool --------------------------------------------------------- */

static ZSTD_CCtx *zc_take(rc_l1 *c) {
    ZSTD_CCtx *z = NULL;
    pthread_mutex_lock(&c->zmu);
    if (c->ncpool) z = c->cpool[--c->ncpool];
    pthread_mutex_unlock(&c->zmu);
    return z ? z : ZSTD_createCCtx();
}

static void zc_give(rc_l1 *c, ZSTD_CCtx *z) {
    pthread_mutex_lock(&c->zmu);
    if (c->ncpool < L1_ZPOOL) {
        c->cpool[c->ncpool++] = z;
        z = NULL;
    }
    pthread_mutex_unlock(&c->zmu);
    ZSTD_freeCCtx(z); /* accepts NULL */
}

static ZSTD_DCtx *zd_take(rc_l1 *c) {
    ZSTD_DCtx *z = NULL;
    pthread_mutex_lock(&c->zmu);
    if (c->ndpool) z = c->dpool[--c->ndpool];
    pthread_mutex_unlock(&c->zmu);
    return z ? z : ZSTD_createDCtx();
}

static void zd_give(rc_l1 *c, ZSTD_DCtx *z) {
    pthread_mutex_lock(&c->zmu);
    if (c->ndpool < L1_ZPOOL) {
        c->dpool[c->ndpool++] = z;
        z = NULL;
    }
    pthread_mutex_unlock(&c->zmu);
    ZSTD_freeDCtx(z);
}

size_t rc_l1_entry_cost(size_t stored_len) {
    return stored_len > SIZE_MAX - L1_ENTRY_OVERHEAD ? SIZE_MAX : stored_len + L1_ENTRY_OVERHEAD;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, n), n > 0 (rejection removes the modulo bias). */
static uint64_t rng_below(uint64_t *s, uint64_t n) {
    uint64_t lim = -n % n; /* 2^64 mod n */
    for (;;) {
        uint64_t r = splitmix64(s);
        if (r >= lim) return r % n;
    }
}

static bool key_eq(rc_key a, rc_key b) { return a.hi == b.hi && a.lo == b.lo; }

/* ---- hash table ------------------------------------------------------------ */

/* The link that points at k's entry (*pp is the entry), or NULL. */
static l1_ent **tab_find(rc_l1 *c, rc_key k) {
    if (c->t1) {
        size_t b0 = (size_t)k.lo & (c->nb0 - 1);
        if (b0 >= c->ridx)
            for (l1_ent **pp = &c->t0[b0]; *pp; pp = &(*pp)->chain) {
                c->op_probes++;
                if (key_eq((*pp)->key, k)) return pp;
            }
        for (l1_ent **pp = &c->t1[(size_t)k.lo & (c->nb1 - 1)]; *pp; pp = &(*pp)->chain) {
            c->op_probes++;
            if (key_eq((*pp)->key, k)) return pp;
        }
        return NULL;
    }
    for (l1_ent **pp = &c->t0[(size_t)k.lo & (c->nb0 - 1)]; *pp; pp = &(*pp)->chain) {
        c->op_probes++;
        if (key_eq((*pp)->key, k)) return pp;
    }
    return NULL;
}

static void tab_insert(rc_l1 *c, l1_ent *e) {
    l1_ent **b = c->t1 ? &c->t1[(size_t)e->key.lo & (c->nb1 - 1)] : &c->t0[(size_t)e->key.lo & (c->nb0 - 1)];
    e->chain = *b;
    *b = e;
    c->op_moves++;
}

static void tab_finish_migration(rc_l1 *c) {
    bool grew = c->nb1 > c->nb0;
    free(c->t0);
    c->t0 = c->t1;
    c->t1 = NULL;
    c->sweep_cur = grew ? c->sweep_cur * 2 : c->sweep_cur / 2; /* the same relative position */
    c->nb0 = c->nb1;
    c->nb1 = 0;
    c->ridx = 0;
}

/* One bounded step of the migration t0 -> t1. */
static void tab_rehash_step(rc_l1 *c) {
    if (!c->t1) return;
    int moved = 0, empty = 0;
    while (c->ridx < c->nb0 && moved < L1_REHASH_ENTRIES && empty < L1_REHASH_EMPTY) {
        l1_ent *e = c->t0[c->ridx];
        if (!e) {
            c->ridx++;
            empty++;
            continue;
        }
        c->t0[c->ridx] = e->chain;
        l1_ent **b = &c->t1[(size_t)e->key.lo & (c->nb1 - 1)];
        e->chain = *b;
        *b = e;
        c->op_moves++;
        moved++;
        if (!c->t0[c->ridx]) c->ridx++;
    }
    if (c->ridx >= c->nb0) tab_finish_migration(c);
}

/* Starts a grow or shrink when the load calls for one (never during a
 * migration or a clear). An allocation failure just postpones it. */
static void tab_maybe_resize(rc_l1 *c) {
    if (c->t1 || c->clearing) return;
    size_t nb;
    if (c->entries > c->nb0 && c->nb0 <= SIZE_MAX / 2 / sizeof(l1_ent *))
        nb = c->nb0 * 2;
    else if (c->nb0 > L1_MIN_BUCKETS && c->entries < c->nb0 / 4)
        nb = c->nb0 / 2;
    else
        return;
    l1_ent **t = calloc(nb, sizeof *t);
    if (!t) return;
    c->t1 = t;
    c->nb1 = nb;
    c->ridx = 0;
}

/* ---- policies ---------------------------------------------------------------- */

static void list_unlink(l1_ent **head, l1_ent **tail, l1_ent *e) {
    if (e->prev) e->prev->next = e->next;
    else *head = e->next;
    if (e->next) e->next->prev = e->prev;
    else *tail = e->prev;
    e->prev = e->next = NULL;
}

static void list_push_head(l1_ent **head, l1_ent **tail, l1_ent *e) {
    e->prev = NULL;
    e->next = *head;
    if (*head) (*head)->prev = e;
    else *tail = e;
    *head = e;
}

static l1_freq *freq_node_new(rc_l1 *c, uint64_t freq) {
    l1_freq *n = c->ffree;
    if (n) {
        c->ffree = n->next;
        c->nffree--;
    } else if (!(n = malloc(sizeof *n))) {
        return NULL;
    }
    *n = (l1_freq){.freq = freq};
    c->op_moves++;
    return n;
}

/* Inserts node n after `after` (NULL: at the front). */
static void freq_link_after(rc_l1 *c, l1_freq *after, l1_freq *n) {
    n->prev = after;
    n->next = after ? after->next : c->fhead;
    if (n->next) n->next->prev = n;
    if (after) after->next = n;
    else c->fhead = n;
}

static void freq_node_remove(rc_l1 *c, l1_freq *n) {
    if (n->prev) n->prev->next = n->next;
    else c->fhead = n->next;
    if (n->next) n->next->prev = n->prev;
    c->op_moves++;
    if (c->nffree < L1_FREQ_FREE_MAX) {
        n->next = c->ffree;
        c->ffree = n;
        c->nffree++;
    } else {
        free(n);
    }
}

static l1_ent **rand_slot(rc_l1 *c, size_t i) { return &c->rchunks[i >> L1_RCHUNK_LOG][i & (L1_RCHUNK - 1)]; }

/* Makes room for index c->rn in the random array. */
static bool rand_reserve(rc_l1 *c) {
    size_t ch = c->rn >> L1_RCHUNK_LOG;
    if (ch < c->nrchunks) return true;
    if (ch >= c->rdir_cap) {
        size_t cap = c->rdir_cap ? c->rdir_cap * 2 : 16;
        l1_ent ***d = realloc(c->rchunks, cap * sizeof *d); /* the directory: one pointer per chunk */
        if (!d) return false;
        c->rchunks = d;
        c->rdir_cap = cap;
    }
    l1_ent **p = malloc(L1_RCHUNK * sizeof *p);
    if (!p) return false;
    c->rchunks[c->nrchunks++] = p;
    return true;
}

/* Links a new entry into the policy structure; false when out of memory
 * (nothing changed). */
static bool pol_insert(rc_l1 *c, l1_ent *e) {
    switch (c->o.policy) {
    case RC_LRU:
    case RC_FIFO:
        list_push_head(&c->head, &c->tail, e);
        break;
    case RC_LFU: {
        l1_freq *n = c->fhead;
        if (!n || n->freq != 1) {
            if (!(n = freq_node_new(c, 1))) return false;
            freq_link_after(c, NULL, n);
        }
        e->pol.node = n;
        list_push_head(&n->head, &n->tail, e);
        break;
    }
    case RC_RANDOM:
        if (!rand_reserve(c)) return false;
        e->pol.idx = c->rn;
        *rand_slot(c, c->rn++) = e;
        break;
    }
    c->op_moves++;
    return true;
}

static void pol_remove(rc_l1 *c, l1_ent *e) {
    switch (c->o.policy) {
    case RC_LRU:
    case RC_FIFO:
        list_unlink(&c->head, &c->tail, e);
        break;
    case RC_LFU: {
        l1_freq *n = e->pol.node;
        list_unlink(&n->head, &n->tail, e);
        if (!n->head) freq_node_remove(c, n);
        break;
    }
    case RC_RANDOM: {
        l1_ent *last = *rand_slot(c, --c->rn);
        *rand_slot(c, e->pol.idx) = last;
        last->pol.idx = e->pol.idx;
        /* keep up to two chunks past the one in use, so that a count going
         * back and forth across a chunk boundary does not allocate each time */
        size_t keep = (c->rn >> L1_RCHUNK_LOG) + 2;
        if (c->nrchunks > keep) free(c->rchunks[--c->nrchunks]);
        break;
    }
    }
    c->op_moves++;
}

/* LFU: one more use of e. Out of memory for a new node: the count stays. */
static void lfu_bump(rc_l1 *c, l1_ent *e) {
    l1_freq *n = e->pol.node, *nx = n->next;
    if (n->freq == UINT64_MAX) return;
    if (!nx || nx->freq != n->freq + 1) {
        if (!(nx = freq_node_new(c, n->freq + 1))) return;
        freq_link_after(c, n, nx);
    }
    list_unlink(&n->head, &n->tail, e);
    list_push_head(&nx->head, &nx->tail, e);
    e->pol.node = nx;
    c->op_moves += 2;
    if (!n->head) freq_node_remove(c, n);
}

/* A hit. */
static void pol_touch(rc_l1 *c, l1_ent *e) {
    if (c->o.policy == RC_LRU) {
        if (c->head != e) {
            list_unlink(&c->head, &c->tail, e);
            list_push_head(&c->head, &c->tail, e);
            c->op_moves += 2;
        }
    } else if (c->o.policy == RC_LFU) {
        lfu_bump(c, e);
    }
}

/* nw takes old's place (same key), then the policy's replacement rule. */
static void pol_replace(rc_l1 *c, l1_ent *old, l1_ent *nw) {
    switch (c->o.policy) {
    case RC_LRU:
    case RC_FIFO:
    case RC_LFU: {
        l1_ent **head = &c->head, **tail = &c->tail;
        if (c->o.policy == RC_LFU) {
            nw->pol.node = old->pol.node;
            head = &nw->pol.node->head;
            tail = &nw->pol.node->tail;
        }
        nw->prev = old->prev;
        nw->next = old->next;
        if (nw->prev) nw->prev->next = nw;
        else *head = nw;
        if (nw->next) nw->next->prev = nw;
        else *tail = nw;
        c->op_moves++;
        if (c->o.policy == RC_LFU) {
            lfu_bump(c, nw);
        } else if (*head != nw) { /* lru: most recent; fifo: the newest insertion */
            list_unlink(head, tail, nw);
            list_push_head(head, tail, nw);
            c->op_moves += 2;
        }
        break;
    }
    case RC_RANDOM:
        nw->pol.idx = old->pol.idx;
        *rand_slot(c, nw->pol.idx) = nw;
        c->op_moves++;
        break;
    }
}

/* The entry the policy evicts next, never `protect` (NULL when there is no
 * other entry). */
static l1_ent *pol_victim(rc_l1 *c, l1_ent *protect) {
    l1_ent *v = NULL;
    switch (c->o.policy) {
    case RC_LRU:
    case RC_FIFO:
        v = c->tail;
        if (v == protect) v = v->prev;
        break;
    case RC_LFU:
        if (!c->fhead) return NULL;
        v = c->fhead->tail;
        if (v == protect) {
            v = v->prev;
            if (!v && c->fhead->next) v = c->fhead->next->tail;
        }
        break;
    case RC_RANDOM: {
        size_t n = c->rn;
        if (protect && n > 0) {
            /* move protect to the end and draw from the others */
            size_t last = n - 1, pi = protect->pol.idx;
            if (pi != last) {
                l1_ent *o = *rand_slot(c, last);
                *rand_slot(c, pi) = o;
                o->pol.idx = pi;
                *rand_slot(c, last) = protect;
                protect->pol.idx = last;
                c->op_moves++;
            }
            n--;
        }
        if (!n) return NULL;
        v = *rand_slot(c, (size_t)rng_below(&c->rng, n));
        break;
    }
    }
    return v;
}

/* ---- entries ------------------------------------------------------------------- */

/* Unlinks e (pp: its link, or NULL to find it) and frees it. */
static void ent_remove(rc_l1 *c, l1_ent *e, l1_ent **pp) {
    if (!pp) pp = tab_find(c, e->key);
    KN_ASSERT(pp && *pp == e);
    *pp = e->chain;
    c->op_moves++;
    pol_remove(c, e);
    c->entries--;
    c->bytes -= rc_l1_entry_cost(e->stored_len);
    free(e);
}

static void ent_evict(rc_l1 *c, l1_ent *e) {
    c->evictions++;
    met_inc(c->o.metrics.evictions);
    if (c->o.on_evict) c->o.on_evict(c->o.on_evict_arg, e->key);
    ent_remove(c, e, NULL);
}

static void ent_expire(rc_l1 *c, l1_ent *e, l1_ent **pp) {
    c->expirations++;
    met_inc(c->o.metrics.expirations);
    ent_remove(c, e, pp);
}

static void op_begin(rc_l1 *c) {
    c->op_probes = c->op_moves = 0;
    tab_rehash_step(c);
}

static void op_end(rc_l1 *c) {
    tab_maybe_resize(c);
    rc_l1_work *w = &c->work;
    w->ops++;
    w->probes += c->op_probes;
    w->moves += c->op_moves;
    if (c->op_probes > w->max_probes_op) w->max_probes_op = c->op_probes;
    if (c->op_moves > w->max_moves_op) w->max_moves_op = c->op_moves;
}

/* ---- public -------------------------------------------------------------------- */

kn_status rc_l1_create(const rc_l1_opts *o, rc_l1 **out, kn_err *err) {
    *out = NULL;
    if (!o || !o->budget_bytes) return kn_fail(err, KN_EINVAL, "cache L1: the byte budget must be positive");
    if ((unsigned)o->policy > RC_RANDOM)
        return kn_fail(err, KN_EINVAL, "cache L1: unknown eviction policy %d", (int)o->policy);
    rc_l1 *c = calloc(1, sizeof *c);
    if (!c) return kn_fail(err, KN_ENOMEM, "cache L1: out of memory");
    c->o = *o;
    c->rng = o->seed;
    c->nb0 = L1_MIN_BUCKETS;
    if (!(c->t0 = calloc(c->nb0, sizeof *c->t0))) goto fail;
    if (pthread_mutex_init(&c->mu, NULL)) goto fail;
    if (pthread_mutex_init(&c->zmu, NULL)) {
        pthread_mutex_destroy(&c->mu);
        goto fail;
    }
    *out = c;
    return KN_OK;
fail:
    free(c->t0);
    free(c);
    return kn_fail(err, KN_ENOMEM, "cache L1: out of memory");
}

static void free_chains(l1_ent **t, size_t nb) {
    for (size_t b = 0; t && b < nb; b++)
        for (l1_ent *e = t[b], *nx; e; e = nx) {
            nx = e->chain;
            free(e);
        }
}

void rc_l1_destroy(rc_l1 *c) {
    if (!c) return;
    free_chains(c->t0, c->nb0);
    free_chains(c->t1, c->nb1);
    free(c->t0);
    free(c->t1);
    for (l1_freq *n = c->fhead, *nx; n; n = nx) {
        nx = n->next;
        free(n);
    }
    for (l1_freq *n = c->ffree, *nx; n; n = nx) {
        nx = n->next;
        free(n);
    }
    for (size_t i = 0; i < c->nrchunks; i++) free(c->rchunks[i]);
    free(c->rchunks);
    for (int i = 0; i < c->ncpool; i++) ZSTD_freeCCtx(c->cpool[i]);
    for (int i = 0; i < c->ndpool; i++) ZSTD_freeDCtx(c->dpool[i]);
    pthread_mutex_destroy(&c->zmu);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

bool rc_l1_get(rc_l1 *c, rc_key k, int64_t now_ms, void **val, size_t *len, int64_t *expiry_ms) {
    *val = NULL;
    *len = 0;
    pthread_mutex_lock(&c->mu);
    op_begin(c);
    l1_ent **pp = tab_find(c, k);
    l1_ent *e = pp ? *pp : NULL;
    unsigned char *copy = NULL;
    uint32_t raw_len = 0, stored_len = 0;
    int64_t exp = 0;
    if (e && e->expiry_ms <= now_ms) {
        ent_expire(c, e, pp);
        e = NULL;
    }
    if (e) {
        raw_len = e->raw_len;
        stored_len = e->stored_len;
        exp = e->expiry_ms;
        copy = malloc(stored_len ? stored_len : 1);
        if (copy) {
            memcpy(copy, e->data, stored_len);
            pol_touch(c, e);
        }
    }
    if (copy) {
        c->hits++;
        met_inc(c->o.metrics.hits);
    } else {
        c->misses++;
        met_inc(c->o.metrics.misses);
    }
    op_end(c);
    pthread_mutex_unlock(&c->mu);
    if (!copy) return false;

    if (stored_len < raw_len) { /* a zstd frame; the output is bounded by the recorded raw length */
        unsigned char *raw = malloc(raw_len);
        ZSTD_DCtx *z = raw ? zd_take(c) : NULL;
        size_t r = z ? ZSTD_decompressDCtx(z, raw, raw_len, copy, stored_len) : 0;
        if (z) zd_give(c, z);
        free(copy);
        if (!raw || ZSTD_isError(r) || r != raw_len) {
            if (z)
                KN_ERROR("cache L1: a stored value failed to decompress (%s)",
                         ZSTD_isError(r) ? ZSTD_getErrorName(r) : "short output");
            free(raw);
            return false;
        }
        copy = raw;
    }
    *val = copy;
    *len = raw_len;
    if (expiry_ms) *expiry_ms = exp;
    return true;
}

/* A new entry holding val (compressed when that pays), or NULL. */
static l1_ent *ent_make(rc_l1 *c, const void *val, size_t len) {
    l1_ent *e = NULL;
    ZSTD_CCtx *z;
    if (c->o.compress && len > RC_COMPRESS_MIN && (z = zc_take(c))) {
        size_t bound = ZSTD_compressBound(len);
        if (bound <= SIZE_MAX - sizeof *e && (e = malloc(sizeof *e + bound))) {
            size_t n = ZSTD_compressCCtx(z, e->data, bound, val, len, 1); /* = ZSTD_compress at level 1 */
            zc_give(c, z);
            z = NULL;
            if (!ZSTD_isError(n) && n < len) {
                l1_ent *s = realloc(e, sizeof *e + n); /* shrink to the frame */
                if (s) e = s;
                e->stored_len = (uint32_t)n;
                e->raw_len = (uint32_t)len;
                return e;
            }
            free(e);
            e = NULL;
        }
        if (z) zc_give(c, z);
    }
    if (!(e = malloc(sizeof *e + len))) return NULL;
    if (len) memcpy(e->data, val, len);
    e->stored_len = e->raw_len = (uint32_t)len;
    return e;
}

bool rc_l1_put(rc_l1 *c, rc_key k, uint64_t model, const void *val, size_t len, int64_t expiry_ms, int64_t now_ms) {
    if (expiry_ms <= now_ms || len > UINT32_MAX || (len && !val)) return false;
    if (rc_l1_entry_cost(0) > c->o.budget_bytes) return false;
    if (!c->o.compress && rc_l1_entry_cost(len) > c->o.budget_bytes) return false; /* skip the copy */
    l1_ent *e = ent_make(c, val, len);
    if (!e) return false;
    size_t cost = rc_l1_entry_cost(e->stored_len);
    if (cost > c->o.budget_bytes) {
        free(e);
        return false;
    }
    e->key = k;
    e->model = model;
    e->expiry_ms = expiry_ms;
    e->chain = e->prev = e->next = NULL;

    pthread_mutex_lock(&c->mu);
    op_begin(c);
    l1_ent **pp = tab_find(c, k);
    if (pp) {
        l1_ent *old = *pp;
        e->chain = old->chain;
        *pp = e;
        c->op_moves++;
        pol_replace(c, old, e);
        c->bytes = c->bytes - rc_l1_entry_cost(old->stored_len) + cost;
        free(old);
    } else {
        if (!pol_insert(c, e)) {
            op_end(c);
            pthread_mutex_unlock(&c->mu);
            free(e);
            return false;
        }
        tab_insert(c, e);
        c->entries++;
        c->bytes += cost;
    }
    while (c->bytes > c->o.budget_bytes) {
        l1_ent *v = pol_victim(c, e);
        KN_ASSERT(v); /* e alone fits, so another entry exists while over budget */
        ent_evict(c, v);
    }
    op_end(c);
    pthread_mutex_unlock(&c->mu);
    return true;
}

bool rc_l1_del(rc_l1 *c, rc_key k) {
    pthread_mutex_lock(&c->mu);
    op_begin(c);
    l1_ent **pp = tab_find(c, k);
    if (pp) ent_remove(c, *pp, pp);
    op_end(c);
    pthread_mutex_unlock(&c->mu);
    return pp != NULL;
}

size_t rc_l1_sweep(rc_l1 *c, int64_t now_ms, size_t max) {
    size_t removed = 0, examined = 0, visited = 0;
    bool done = false;
    while (!done && removed < max && examined < max) {
        pthread_mutex_lock(&c->mu);
        /* the cursor walks t0 only: help a migration finish first (bounded
         * by the batch), and stop for this call if it is still running */
        for (size_t s = 0; c->t1 && s < L1_BATCH / L1_REHASH_ENTRIES; s++) tab_rehash_step(c);
        if (c->t1) {
            pthread_mutex_unlock(&c->mu);
            break;
        }
        size_t batch_end = examined + L1_BATCH;
        /* a call visits each bucket at most once and skips a bounded number
         * of empty ones */
        size_t visit_max = c->nb0 < 4 * max + 64 ? c->nb0 : 4 * max + 64;
        while (removed < max && examined < max && examined < batch_end) {
            if (visited >= visit_max) {
                done = true;
                break;
            }
            size_t b = c->sweep_cur & (c->nb0 - 1);
            l1_ent **pp = &c->t0[b];
            bool finished = true;
            while (*pp) {
                l1_ent *e = *pp;
                examined++;
                if (e->expiry_ms <= now_ms) {
                    ent_expire(c, e, pp);
                    if (++removed == max) {
                        finished = !*pp;
                        break;
                    }
                } else {
                    pp = &e->chain;
                }
            }
            if (!finished) break; /* resume this bucket next time */
            c->sweep_cur = (b + 1) & (c->nb0 - 1);
            visited++;
        }
        tab_maybe_resize(c);
        pthread_mutex_unlock(&c->mu);
    }
    return removed;
}

size_t rc_l1_clear(rc_l1 *c, uint64_t model) {
    size_t removed = 0;
    pthread_mutex_lock(&c->mu);
    c->clearing++;
    /* finish any migration so that the bucket cursor below is stable */
    while (c->t1) {
        for (size_t s = 0; c->t1 && s < L1_BATCH / L1_REHASH_ENTRIES; s++) tab_rehash_step(c);
        pthread_mutex_unlock(&c->mu);
        pthread_mutex_lock(&c->mu);
    }
    for (size_t b = 0; b < c->nb0;) {
        size_t examined = 0;
        for (; b < c->nb0 && examined < L1_BATCH; b++) {
            l1_ent **pp = &c->t0[b];
            while (*pp) {
                l1_ent *e = *pp;
                examined++;
                if (!model || e->model == model) {
                    ent_remove(c, e, pp);
                    removed++;
                } else {
                    pp = &e->chain;
                }
            }
            if (!c->t0[b]) examined++; /* empty buckets count a little too */
        }
        pthread_mutex_unlock(&c->mu);
        pthread_mutex_lock(&c->mu);
    }
    c->clearing--;
    tab_maybe_resize(c);
    pthread_mutex_unlock(&c->mu);
    return removed;
}

void rc_l1_stats(rc_l1 *c, rc_stats *s) {
    pthread_mutex_lock(&c->mu);
    *s = (rc_stats){.entries = c->entries,
                    .bytes = c->bytes,
                    .hits = c->hits,
                    .misses = c->misses,
                    .evictions = c->evictions,
                    .expirations = c->expirations};
    pthread_mutex_unlock(&c->mu);
}

void rc_l1_work_get(rc_l1 *c, rc_l1_work *w) {
    pthread_mutex_lock(&c->mu);
    *w = c->work;
    pthread_mutex_unlock(&c->mu);
}
