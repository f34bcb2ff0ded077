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
 */
#include "match.h"

#include <stdlib.h>
#include <string.h>

typedef struct trie_node {
    uint32_t first;  /* first child */
    uint32_t tok_lo; /* tokens ending here: sorted_ids[tok_lo .. tok_hi) */
    uint32_t tok_hi;
    uint16_t n_child; /* <= 256 */
    uint8_t byte;     /* the edge from the parent */
} trie_node;

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
    uint32_t max_len;     /* longest text token */
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
    free(v);
}

size_t gram_vocab_size(const gram_vocab *v) {
    return v->n;
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

static void mark(const gram_vocab *v, const trie_node *nd, uint8_t *mask) {
    for (uint32_t i = nd->tok_lo; i < nd->tok_hi; i++)
        mask[v->sorted_ids[i]] = 1;
}

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
    gram_frame *fr = s->frames;
    size_t sp = 0;
    mark(v, &v->nodes[0], mask);
    fr[sp++] = (gram_frame){.node = 0, .child = 0, .lvl = 0, .own = false, .u8 = s->u8};
    while (sp) {
        gram_frame *f = &fr[sp - 1];
        const trie_node *nd = &v->nodes[f->node];
        if (f->child == nd->n_child) {
            if (f->own) gram_level_pop(s);
            sp--;
            continue;
        }
        uint32_t c = nd->first + f->child++;
        const trie_node *cn = &v->nodes[c];
        gram_u8 u = f->u8;
        int r = gram_u8_feed(&u, cn->byte);
        if (r == GRAM_U8_BAD) continue;
        uint32_t lvl = f->lvl;
        bool own = false;
        if (r == GRAM_U8_DONE) {
            int st = gram_level_step(s, lvl, u.cp);
            if (st < 0) {
                while (gram_level_count(s) > 1)
                    gram_level_pop(s);
                memset(mask, 0, v->n);
                return gram_state_status(s, err);
            }
            if (st == 0) continue;
            lvl = (uint32_t)gram_level_count(s) - 1;
            own = true;
        } else if (!gram_level_partial_ok(s, lvl, &u)) {
            continue;
        }
        mark(v, cn, mask);
        if (cn->n_child) {
            fr[sp++] = (gram_frame){.node = c, .child = 0, .lvl = lvl, .own = own, .u8 = u};
        } else if (own) {
            gram_level_pop(s);
        }
    }
    KN_ASSERT(gram_level_count(s) == 1);
    return KN_OK;
}

bool gram_token_ok(gram_state *s, const gram_vocab *v, uint32_t id) {
    if (id >= v->n || s->st != KN_OK) return false;
    if (v->kind[id] == GRAM_TOK_EOG) return gram_can_end(s);
    if (v->kind[id] != GRAM_TOK_TEXT) return false;
    gram_u8 u = s->u8;
    int r = gram_level_feed(s, 0, v->data + v->off[id], (size_t)(v->off[id + 1] - v->off[id]), &u);
    while (gram_level_count(s) > 1)
        gram_level_pop(s);
    if (r < 0 && s->st != KN_OK) { /* a bound hit while only looking: the state itself is intact */
        s->st = KN_OK;
        s->err = (kn_err){0};
    }
    return r >= 0;
}

bool gram_accept_token(gram_state *s, const gram_vocab *v, uint32_t id) {
    if (id >= v->n || s->st != KN_OK) return false;
    if (v->kind[id] == GRAM_TOK_EOG) return gram_can_end(s);
    if (v->kind[id] != GRAM_TOK_TEXT) return false;
    return gram_accept_bytes(s, v->data + v->off[id], (size_t)(v->off[id + 1] - v->off[id]));
}
