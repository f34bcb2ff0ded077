/*
 * vocab.c — a vocabulary's token trie, and token masks from a state.
 *
 * The trie holds every text token's bytes; node i's children are the
 * consecutive nodes [first, first + n_child), sorted by byte, and the tokens
 * whose bytes end at node i are sorted_ids[tok_lo .. tok_hi). It is built
 * breadth-first from the tokens sorted by bytes, once per vocabulary.
 *
 * gram_mask walks the trie depth-first with the state's stacks: a byte that
 * completes a code point steps the stacks (one new level, popped on the way
 * back); a byte inside a sequence only checks that some stack could take a
 * character starting so; an empty step prunes the whole subtree. So every
 * token sharing a prefix shares its work, and tokens the grammar cannot
 * start are never looked at. EOG tokens are allowed iff gram_can_end;
 * control tokens never.
 *
 * The subtree skip: each node with enough tokens below it knows the bytes
 * that occur below it (an ASCII bitmap and whether any byte >= 0x80 does),
 * whether every path below it is valid UTF-8 from a character boundary at
 * the node, and where its subtree's tokens end (a subtree's tokens are
 * contiguous in byte order). A stack set that steps to itself on each of
 * those bytes (as inside a JSON string, where every character but '"', '\'
 * and controls loops back) accepts the whole subtree, which is then marked
 * as one range without walking it: inside a string only the paths to
 * tokens holding a quote, a backslash or a control character are walked.
 */
#include "match.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

typedef struct trie_node {
    uint32_t first;  /* first child */
    uint32_t tok_lo; /* tokens ending here: sorted_ids[tok_lo .. tok_hi) */
    uint32_t tok_hi;
    uint32_t sub_end; /* the subtree's tokens: sorted_ids[tok_lo .. sub_end) */
    uint32_t sum;     /* its summary: sums[sum - 1] (0: none, a small subtree) */
    uint16_t n_child; /* <= 256 */
    uint8_t byte;     /* the edge from the parent */
} trie_node;

/* What occurs below a node (not its own edge). */
typedef struct trie_sum {
    uint64_t bytes[2]; /* ASCII bytes, bit b % 64 of bytes[b / 64] */
    uint8_t non_ascii; /* some byte >= 0x80 */
    uint8_t clean;     /* the node is at a character boundary and every path below is valid UTF-8 */
} trie_sum;

/* Subtrees with fewer tokens are walked. */
#define SKIP_MIN_TOKENS 2u

struct gram_vocab {
    uint32_t n;    /* tokens */
    uint8_t *kind; /* [n] gram_tok_kind */
    uint64_t *off; /* [n + 1] each token's bytes in data */
    uint8_t *data; /* [off[n]] */
    uint32_t *eog; /* [n_eog] */
    uint32_t n_eog;
    trie_node *nodes; /* [n_nodes]; node 0 is the root */
    uint32_t n_nodes;
    uint32_t *sorted_ids; /* [n_text] text tokens by bytes */
    trie_sum *sums;       /* [n_sums] */
    uint32_t n_sums;
    uint32_t max_len; /* longest text token */
};

typedef struct tok_key {
    const uint8_t *p;
    uint32_t len;
    uint32_t id;
} tok_key;

static int key_cmp(const void *a, const void *b) {
    const tok_key *x = a, *y = b;
    uint32_t m = x->len < y->len ? x->len : y->len;
    int c = m ? memcmp(x->p, y->p, m) : 0;
    if (c) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

void gram_vocab_destroy(gram_vocab *v) {
    if (!v) return;
    free(v->kind);
    free(v->off);
    free(v->data);
    free(v->eog);
    free(v->nodes);
    free(v->sorted_ids);
    free(v->sums);
    free(v);
}

size_t gram_vocab_size(const gram_vocab *v) {
    return v->n;
}

/* Fills sub_end and the summaries (see the top comment). Children come
 * after their parent in node order, so one pass forward decodes UTF-8 from
 * the root and one pass backward gathers the subtrees. */
static bool summarize(gram_vocab *v) {
    uint32_t n = v->n_nodes;
    gram_u8 *u = malloc((size_t)n * sizeof *u);
    uint8_t *ok = malloc(n);     /* the path to the node is a valid UTF-8 prefix */
    uint8_t *all_ok = malloc(n); /* ... and every path below it */
    trie_sum *tmp = calloc(n, sizeof *tmp);
    bool good = u && ok && all_ok && tmp;
    if (good) {
        u[0] = (gram_u8){0};
        ok[0] = 1;
        for (uint32_t i = 0; i < n; i++)
            for (uint32_t c = v->nodes[i].first; c < v->nodes[i].first + v->nodes[i].n_child; c++) {
                u[c] = u[i];
                ok[c] = ok[i] && gram_u8_feed(&u[c], v->nodes[c].byte) != GRAM_U8_BAD;
            }
        uint32_t n_sums = 0;
        for (uint32_t i = n; i-- > 0;) {
            trie_node *nd = &v->nodes[i];
            all_ok[i] = ok[i];
            nd->sub_end = nd->tok_hi;
            for (uint32_t c = nd->first; c < nd->first + nd->n_child; c++) {
                uint8_t b = v->nodes[c].byte;
                if (b < 128)
                    tmp[i].bytes[b >> 6] |= 1ull << (b & 63);
                else
                    tmp[i].non_ascii = 1;
                tmp[i].bytes[0] |= tmp[c].bytes[0];
                tmp[i].bytes[1] |= tmp[c].bytes[1];
                tmp[i].non_ascii |= tmp[c].non_ascii;
                all_ok[i] = all_ok[i] && all_ok[c];
                nd->sub_end = v->nodes[c].sub_end;
            }
            tmp[i].clean = all_ok[i] && u[i].need == 0;
            if (nd->n_child && nd->sub_end - nd->tok_lo >= SKIP_MIN_TOKENS && tmp[i].clean) n_sums++;
        }
        v->sums = malloc(((size_t)n_sums + 1) * sizeof *v->sums);
        good = v->sums != NULL;
        for (uint32_t i = 0; good && i < n; i++) {
            trie_node *nd = &v->nodes[i];
            nd->sum = 0;
            if (nd->n_child && nd->sub_end - nd->tok_lo >= SKIP_MIN_TOKENS && tmp[i].clean) {
                v->sums[v->n_sums] = tmp[i];
                nd->sum = ++v->n_sums;
            }
        }
    }
    free(u);
    free(ok);
    free(all_ok);
    free(tmp);
    return good;
}

kn_status gram_vocab_create(const gram_token *toks, size_t n, gram_vocab **out, kn_err *err) {
    *out = NULL;
    if (n > GRAM_MAX_VOCAB)
        return kn_fail(err, KN_ERANGE, "grammar: vocabulary of %zu tokens is over the limit of %u", n,
                       GRAM_MAX_VOCAB);
    uint64_t total = 0;
    uint32_t n_text = 0, n_eog = 0;
    for (size_t i = 0; i < n; i++) {
        if (toks[i].kind > GRAM_TOK_CONTROL)
            return kn_fail(err, KN_EINVAL, "grammar: token %zu has an unknown kind %u", i, toks[i].kind);
        if (toks[i].kind == GRAM_TOK_EOG) n_eog++;
        if (toks[i].kind != GRAM_TOK_TEXT) continue;
        if (toks[i].len > GRAM_MAX_TOKEN_BYTES)
            return kn_fail(err, KN_ERANGE, "grammar: token %zu is %u bytes, over the limit of %u", i,
                           toks[i].len, GRAM_MAX_TOKEN_BYTES);
        if (toks[i].len && !toks[i].bytes)
            return kn_fail(err, KN_EINVAL, "grammar: token %zu has no bytes", i);
        total += toks[i].len;
        n_text++;
    }
    if (total >= UINT32_MAX - 1) return kn_fail(err, KN_ERANGE, "grammar: vocabulary bytes over 4 GiB");
    gram_vocab *v = calloc(1, sizeof *v);
    tok_key *keys = NULL;
    uint32_t *lo = NULL, *hi = NULL, *depth = NULL;
    if (!v) return kn_fail(err, KN_ENOMEM, "grammar: out of memory");
    v->n = (uint32_t)n;
    v->kind = malloc(n + 1);
    v->off = malloc((n + 1) * sizeof *v->off);
    v->data = malloc(total + 1);
    v->eog = malloc(((size_t)n_eog + 1) * sizeof *v->eog);
    v->sorted_ids = malloc(((size_t)n_text + 1) * sizeof *v->sorted_ids);
    keys = malloc(((size_t)n_text + 1) * sizeof *keys);
    size_t max_nodes = (size_t)total + 1;
    v->nodes = malloc(max_nodes * sizeof *v->nodes);
    lo = malloc(max_nodes * sizeof *lo);
    hi = malloc(max_nodes * sizeof *hi);
    depth = malloc(max_nodes * sizeof *depth);
    if (!v->kind || !v->off || !v->data || !v->eog || !v->sorted_ids || !keys || !v->nodes || !lo || !hi ||
        !depth)
        goto nomem;
    uint64_t o = 0;
    uint32_t k = 0;
    for (size_t i = 0; i < n; i++) {
        v->kind[i] = toks[i].kind;
        v->off[i] = o;
        if (toks[i].kind == GRAM_TOK_EOG) v->eog[v->n_eog++] = (uint32_t)i;
        if (toks[i].kind != GRAM_TOK_TEXT) continue;
        if (toks[i].len) memcpy(v->data + o, toks[i].bytes, toks[i].len);
        keys[k++] = (tok_key){v->data + o, toks[i].len, (uint32_t)i};
        o += toks[i].len;
        if (toks[i].len > v->max_len) v->max_len = toks[i].len;
    }
    v->off[n] = o;
    qsort(keys, n_text, sizeof *keys, key_cmp);
    for (uint32_t i = 0; i < n_text; i++)
        v->sorted_ids[i] = keys[i].id;

    /* breadth-first: node i covers keys[lo[i] .. hi[i]) sharing depth[i] bytes */
    v->n_nodes = 1;
    lo[0] = 0;
    hi[0] = n_text;
    depth[0] = 0;
    v->nodes[0] = (trie_node){0};
    for (uint32_t i = 0; i < v->n_nodes; i++) {
        uint32_t a = lo[i], b = hi[i], d = depth[i];
        while (a < b && keys[a].len == d)
            a++; /* the tokens that end here come first */
        v->nodes[i].tok_lo = lo[i];
        v->nodes[i].tok_hi = a;
        v->nodes[i].first = v->n_nodes;
        while (a < b) {
            uint8_t byte = keys[a].p[d];
            uint32_t e = a + 1;
            while (e < b && keys[e].p[d] == byte)
                e++;
            KN_ASSERT(v->n_nodes < max_nodes);
            uint32_t c = v->n_nodes++;
            v->nodes[c] = (trie_node){.byte = byte};
            lo[c] = a;
            hi[c] = e;
            depth[c] = d + 1;
            v->nodes[i].n_child++;
            a = e;
        }
    }
    free(keys);
    free(lo);
    free(hi);
    free(depth);
    if (!summarize(v)) {
        gram_vocab_destroy(v);
        return kn_fail(err, KN_ENOMEM, "grammar: out of memory");
    }
    *out = v;
    return KN_OK;
nomem:
    free(keys);
    free(lo);
    free(hi);
    free(depth);
    gram_vocab_destroy(v);
    return kn_fail(err, KN_ENOMEM, "grammar: out of memory");
}

/* mask[id] = 1 for the tokens sorted_ids[lo .. hi) (locals: the byte
 * stores could alias the bounds) */
static void mark_range(const gram_vocab *v, uint32_t lo, uint32_t hi, uint8_t *mask) {
    const uint32_t *ids = v->sorted_ids;
    for (uint32_t i = lo; i < hi; i++)
        mask[ids[i]] = 1;
}

static void mark(const gram_vocab *v, const trie_node *nd, uint8_t *mask) {
    mark_range(v, nd->tok_lo, nd->tok_hi, mask);
}

/* ---- the transition cache ------------------------------------------------------- */

enum { NO_SET = UINT32_MAX, BAD_SET = UINT32_MAX - 1 };

static size_t cache_bytes(const gram_state *s) {
    return s->cd_cap * sizeof *s->cd + s->cs_cap * sizeof *s->cs + s->sets_cap * sizeof *s->sets +
           s->set_ht_cap * sizeof *s->set_ht + s->memo_cap * sizeof *s->memo + s->asc_cap * sizeof *s->asc;
}

static void cache_clear(gram_state *s) {
    s->cd_n = s->cs_n = s->sets_n = s->memo_n = s->asc_n = 0;
    if (s->set_ht) memset(s->set_ht, 0, s->set_ht_cap * sizeof *s->set_ht);
    if (s->memo) memset(s->memo, 0, s->memo_cap * sizeof *s->memo);
}

static uint64_t level_hash(const gram_state *s, size_t lvl, size_t *lo, size_t *hi) {
    *lo = s->lv[lvl].ls;
    *hi = lvl + 1 < s->lv_n ? s->lv[lvl + 1].ls : s->ls_n;
    /* the level's elements are contiguous; how they split into stacks is
     * left to the equality check */
    size_t d0 = s->lv[lvl].ld, d1 = lvl + 1 < s->lv_n ? s->lv[lvl + 1].ld : s->ld_n;
    return XXH3_64bits_withSeed(s->ld + d0, (d1 - d0) * sizeof *s->ld, *hi - *lo);
}

static bool set_eq_level(const gram_state *s, const gram_cset *c, size_t lo, size_t hi) {
    if (c->n != hi - lo) return false;
    for (size_t i = 0; i < c->n; i++) {
        gram_sref a = s->cs[c->cs + i], b = s->ls[lo + i];
        if (a.len != b.len || memcmp(s->cd + a.off, s->ld + b.off, (size_t)a.len * sizeof *s->cd))
            return false;
    }
    return true;
}

/* The id of the set equal to level lvl, interned if new; NO_SET on a bound. */
static uint32_t intern_level(gram_state *s, size_t lvl) {
    size_t lo, hi;
    uint64_t h = level_hash(s, lvl, &lo, &hi);
    if (s->sets_n * 2 >= s->set_ht_cap) { /* grow and rehash */
        size_t nc = s->set_ht_cap ? s->set_ht_cap * 2 : 1024;
        if (nc * sizeof *s->set_ht > GRAM_MAX_STATE_BYTES) return NO_SET;
        uint32_t *nt = calloc(nc, sizeof *nt);
        if (!nt) return NO_SET;
        for (size_t i = 0; i < s->sets_n; i++) {
            size_t j = (size_t)s->sets[i].h & (nc - 1);
            while (nt[j])
                j = (j + 1) & (nc - 1);
            nt[j] = (uint32_t)i + 1;
        }
        free(s->set_ht);
        s->set_ht = nt;
        s->set_ht_cap = nc;
    }
    size_t j = (size_t)h & (s->set_ht_cap - 1);
    for (; s->set_ht[j]; j = (j + 1) & (s->set_ht_cap - 1)) {
        const gram_cset *c = &s->sets[s->set_ht[j] - 1];
        if (c->h == h && set_eq_level(s, c, lo, hi)) return s->set_ht[j] - 1;
    }
    size_t total = 0;
    for (size_t i = lo; i < hi; i++)
        total += s->ls[i].len;
    if (s->sets_n >= BAD_SET - 1 ||
        !gram_grow(s, (void **)&s->cd, &s->cd_cap, s->cd_n, total, sizeof *s->cd, "mask cache") ||
        !gram_grow(s, (void **)&s->cs, &s->cs_cap, s->cs_n, hi - lo, sizeof *s->cs, "mask cache") ||
        !gram_grow(s, (void **)&s->sets, &s->sets_cap, s->sets_n, 1, sizeof *s->sets, "mask cache"))
        return NO_SET;
    s->sets[s->sets_n] = (gram_cset){.cs = s->cs_n, .n = (uint32_t)(hi - lo), .h = h, .asc = 0};
    for (size_t i = lo; i < hi; i++) {
        gram_sref r = s->ls[i];
        memcpy(s->cd + s->cd_n, s->ld + r.off, (size_t)r.len * sizeof *s->cd);
        s->cs[s->cs_n++] = (gram_sref){.off = s->cd_n, .len = r.len};
        s->cd_n += r.len;
    }
    s->set_ht[j] = (uint32_t)s->sets_n + 1;
    return (uint32_t)s->sets_n++;
}

static size_t memo_slot(const gram_state *s, uint32_t set, uint32_t cp) {
    uint64_t key = ((uint64_t)set << 32) | cp;
    return (size_t)XXH3_64bits(&key, sizeof key) & (s->memo_cap - 1);
}

/* The set that `set` steps to on cp: an id, BAD_SET when no stack takes
 * cp, NO_SET on a bound (the status says which). */
static uint32_t step_set_slow(gram_state *s, uint32_t set, uint32_t cp);

static bool set_covers(const gram_elem *e, uint32_t lo, uint32_t hi);

/* Whether every non-ASCII code point steps set the same way (each stack's
 * top holds all of them or none). */
static bool set_na_uniform(const gram_state *s, uint32_t set) {
    const gram_cset c = s->sets[set];
    for (size_t i = 0; i < c.n; i++) {
        gram_sref r = s->cs[c.cs + i];
        if (!r.len) continue;
        const gram_elem *e = &s->g->elems[s->cd[r.off + r.len - 1]];
        if (!set_covers(e, 0x80, 0x10FFFF) && gram_match_set_range(e, 0x80, 0x10FFFF)) return false;
    }
    return true;
}

static uint32_t step_set(gram_state *s, uint32_t set, uint32_t cp) {
    if (cp >= 128) {
        uint32_t na = s->sets[set].na_to;
        if (na == 0) {
            if (!set_na_uniform(s, set)) {
                na = 1;
            } else {
                uint32_t to = step_set_slow(s, set, cp); /* may move s->sets */
                if (to == NO_SET) return NO_SET;
                na = to == BAD_SET ? 2 : to + 3;
            }
            s->sets[set].na_to = na;
        }
        if (na >= 2) return na == 2 ? BAD_SET : na - 3;
        return step_set_slow(s, set, cp);
    }
    gram_cset *c = &s->sets[set];
    if (!c->asc) {
        if (!gram_grow(s, (void **)&s->asc, &s->asc_cap, s->asc_n, 128, sizeof *s->asc, "mask cache")) {
            if (s->st == KN_OK) kn_fail(&s->err, s->st = KN_ERANGE, "grammar: the mask cache is full");
            return NO_SET;
        }
        memset(s->asc + s->asc_n, 0, 128 * sizeof *s->asc);
        c->asc = (uint32_t)s->asc_n + 1;
        s->asc_n += 128;
    }
    uint32_t *t = &s->asc[c->asc - 1 + cp];
    if (*t) return *t == 1 ? BAD_SET : *t - 2;
    uint32_t to = step_set_slow(s, set, cp); /* may move s->sets and s->asc */
    if (to == NO_SET) return NO_SET;
    s->asc[s->sets[set].asc - 1 + cp] = to == BAD_SET ? 1 : to + 2;
    return to;
}

static uint32_t step_set_slow(gram_state *s, uint32_t set, uint32_t cp) {
    if (cp >= 128 && s->memo_cap) {
        for (size_t j = memo_slot(s, set, cp);; j = (j + 1) & (s->memo_cap - 1)) {
            const gram_memo *m = &s->memo[j];
            if (!m->set) break;
            if (m->set == set + 1 && m->cp == cp) return m->to ? m->to - 1 : BAD_SET;
        }
    }
    const gram_cset c = s->sets[set];
    size_t top = gram_level_count(s);
    if (!gram_level_push(s, s->cd, s->cs + c.cs, c.n)) return NO_SET;
    int r = gram_level_step(s, top, cp);
    uint32_t to = r < 0 ? NO_SET : r == 0 ? BAD_SET : intern_level(s, top + 1);
    while (gram_level_count(s) > top)
        gram_level_pop(s);
    if (to == NO_SET) {
        if (s->st == KN_OK) kn_fail(&s->err, s->st = KN_ERANGE, "grammar: the mask cache is full");
        return NO_SET;
    }
    if (cp < 128) return to;                  /* the caller keeps it in the dense table */
    if ((s->memo_n + 1) * 2 >= s->memo_cap) { /* grow and rehash */
        size_t nc = s->memo_cap ? s->memo_cap * 2 : 4096;
        gram_memo *nm = nc * sizeof *nm > GRAM_MAX_STATE_BYTES ? NULL : calloc(nc, sizeof *nm);
        if (!nm) return to; /* just not memoized */
        gram_memo *old = s->memo;
        size_t oc = s->memo_cap;
        s->memo = nm;
        s->memo_cap = nc;
        for (size_t i = 0; i < oc; i++) {
            if (!old[i].set) continue;
            size_t j = memo_slot(s, old[i].set - 1, old[i].cp);
            while (nm[j].set)
                j = (j + 1) & (nc - 1);
            nm[j] = old[i];
        }
        free(old);
    }
    size_t j = memo_slot(s, set, cp);
    while (s->memo[j].set)
        j = (j + 1) & (s->memo_cap - 1);
    s->memo[j] = (gram_memo){.set = set + 1, .cp = cp, .to = to == BAD_SET ? 0 : to + 1};
    s->memo_n++;
    return to;
}

/* Whether the set at e holds every code point of [lo, hi] (a single range
 * of a positive set must cover it: conservative). */
static bool set_covers(const gram_elem *e, uint32_t lo, uint32_t hi) {
    if (e->type == GE_ANY) return true;
    bool neg = e->type == GE_CHAR_NOT;
    do {
        uint32_t a = e->value, b = e[1].type == GE_RNG_UPPER ? e[1].value : a;
        if (neg && a <= hi && lo <= b) return false;
        if (!neg && a <= lo && hi <= b) return true;
        e += e[1].type == GE_RNG_UPPER ? 2 : 1;
    } while (e->type == GE_CHAR_ALT);
    return neg;
}

/* Fills the set's loop bytes (see gram_cset); false on a bound. */
static bool set_loops(gram_state *s, uint32_t set) {
    uint64_t loop[2] = {0, 0};
    for (uint32_t b = 0; b < 128; b++) {
        uint32_t to = step_set(s, set, b);
        if (to == NO_SET) return false;
        if (to == set) loop[b >> 6] |= 1ull << (b & 63);
    }
    /* every non-ASCII code point steps it to itself */
    uint8_t na = 0;
    if (set_na_uniform(s, set)) {
        uint32_t to = step_set(s, set, 0xE9);
        if (to == NO_SET) return false;
        na = to == set;
    }
    gram_cset *cs = &s->sets[set];
    cs->loop[0] = loop[0];
    cs->loop[1] = loop[1];
    cs->loop_na = na;
    cs->loop_known = 1;
    return true;
}

static bool set_partial_ok(const gram_state *s, uint32_t set, const gram_u8 *u) {
    uint32_t lo, hi;
    gram_u8_range(u, &lo, &hi);
    if (hi > 0x10FFFF) hi = 0x10FFFF;
    const gram_cset c = s->sets[set];
    for (size_t i = 0; i < c.n; i++) {
        gram_sref r = s->cs[c.cs + i];
        if (r.len && gram_match_set_range(&s->g->elems[s->cd[r.off + r.len - 1]], lo, hi)) return true;
    }
    return false;
}

/* The interned set of the state (level 0), flushing an oversized cache. */
static uint32_t root_set(gram_state *s) {
    if (cache_bytes(s) > GRAM_CACHE_BYTES) cache_clear(s);
    uint32_t id = intern_level(s, 0);
    if (id == NO_SET && s->st == KN_OK)
        kn_fail(&s->err, s->st = KN_ERANGE, "grammar: the mask cache is full");
    return id;
}

/* ---- masks ------------------------------------------------------------------------ */

kn_status gram_mask(gram_state *s, const gram_vocab *v, uint8_t *mask, kn_err *err) {
    memset(mask, 0, v->n);
    if (s->st != KN_OK) return gram_state_status(s, err);
    KN_ASSERT(gram_level_count(s) == 1);
    if (gram_can_end(s))
        for (uint32_t i = 0; i < v->n_eog; i++)
            mask[v->eog[i]] = 1;
    size_t need = (size_t)v->max_len + 1;
    if (s->frames_cap < need) {
        gram_frame *nf = realloc(s->frames, need * sizeof *nf);
        if (!nf) return kn_fail(err, KN_ENOMEM, "grammar: out of memory");
        s->frames = nf;
        s->frames_cap = need;
    }
    uint32_t root = root_set(s);
    if (root == NO_SET) return gram_state_status(s, err);
    bool skip = s->u8.need == 0; /* the summaries assume a character boundary at the root */
    gram_frame *fr = s->frames;
    size_t sp = 0;
    mark(v, &v->nodes[0], mask);
    fr[sp++] = (gram_frame){.node = 0, .child = 0, .set = root, .u8 = s->u8};
    while (sp) {
        gram_frame *f = &fr[sp - 1];
        const trie_node *nd = &v->nodes[f->node];
        if (f->child == nd->n_child) {
            sp--;
            continue;
        }
        uint32_t c = nd->first + f->child++;
        const trie_node *cn = &v->nodes[c];
        gram_u8 u = f->u8;
        int r = gram_u8_feed(&u, cn->byte);
        if (r == GRAM_U8_BAD) continue;
        uint32_t set = f->set;
        if (r == GRAM_U8_DONE) {
            set = step_set(s, set, u.cp);
            if (set == NO_SET) {
                memset(mask, 0, v->n);
                return gram_state_status(s, err);
            }
            if (set == BAD_SET) continue;
        } else if (!set_partial_ok(s, set, &u)) {
            continue;
        }
        if (skip && cn->sum && r == GRAM_U8_DONE) {
            if (!s->sets[set].loop_known && !set_loops(s, set)) {
                memset(mask, 0, v->n);
                return gram_state_status(s, err);
            }
            const trie_sum *sm = &v->sums[cn->sum - 1];
            const gram_cset *cs = &s->sets[set];
            if (!(sm->bytes[0] & ~cs->loop[0]) && !(sm->bytes[1] & ~cs->loop[1]) &&
                (!sm->non_ascii || cs->loop_na)) {
                mark_range(v, cn->tok_lo, cn->sub_end, mask);
                continue;
            }
        }
        mark(v, cn, mask);
        if (cn->n_child) fr[sp++] = (gram_frame){.node = c, .child = 0, .set = set, .u8 = u};
    }
    KN_ASSERT(gram_level_count(s) == 1);
    return KN_OK;
}

bool gram_token_ok(gram_state *s, const gram_vocab *v, uint32_t id) {
    if (id >= v->n || s->st != KN_OK) return false;
    if (v->kind[id] == GRAM_TOK_EOG) return gram_can_end(s);
    if (v->kind[id] != GRAM_TOK_TEXT) return false;
    uint32_t set = root_set(s);
    gram_u8 u = s->u8;
    const uint8_t *p = v->data + v->off[id];
    size_t n = (size_t)(v->off[id + 1] - v->off[id]);
    bool ok = set != NO_SET;
    for (size_t i = 0; ok && i < n; i++) {
        int r = gram_u8_feed(&u, p[i]);
        if (r == GRAM_U8_BAD)
            ok = false;
        else if (r == GRAM_U8_DONE)
            ok = (set = step_set(s, set, u.cp)) < BAD_SET;
    }
    if (ok && u.need) ok = set_partial_ok(s, set, &u);
    if (!ok && s->st != KN_OK) { /* a bound hit while only looking: the state itself is intact */
        s->st = KN_OK;
        s->err = (kn_err){0};
    }
    return ok;
}

bool gram_accept_token(gram_state *s, const gram_vocab *v, uint32_t id) {
    if (id >= v->n || s->st != KN_OK) return false;
    if (v->kind[id] == GRAM_TOK_EOG) return gram_can_end(s);
    if (v->kind[id] != GRAM_TOK_TEXT) return false;
    return gram_accept_bytes(s, v->data + v->off[id], (size_t)(v->off[id + 1] - v->off[id]));
}
