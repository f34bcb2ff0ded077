/*
 * match.c — the incremental matcher: a set of parse stacks (see
 * grammar/internal.h) advanced one code point at a time.
 *
 * Taking a code point maps every stack whose top set matches it to the
 * stack with that set consumed, then expands rule references on top until
 * every stack's top is a character set again (or the stack is empty). The
 * expansion is a work list over distinct stacks: a stack seen before in the
 * same step is dropped, so shared sub-derivations are explored once, and
 * left recursion (rejected by the compiler) is what would make it endless.
 *
 * Memory: the stack sets are kept as "levels", a LIFO of sets in three
 * growable arrays (stack elements, stack refs, level starts). Level 0 is the
 * state; gram_accept_* build level 1.. and commit it to level 0; the mask
 * walk (vocab.c) pushes one level per code point down the trie and pops on
 * the way back. Buffers grow to their high-water mark and are then reused:
 * after warm-up no call allocates. Each buffer is capped by the GRAM_MAX_*
 * bounds; hitting one sets the state's sticky status to KN_ERANGE.
 */
#include "match.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

bool gram_match_set_range(const gram_elem *e, uint32_t lo, uint32_t hi) {
    if (e->type == GE_ANY) return true;
    if (e->type == GE_CHAR) {
        do {
            uint32_t a = e->value, b = e[1].type == GE_RNG_UPPER ? e[1].value : a;
            if (a <= hi && lo <= b) return true;
            e += e[1].type == GE_RNG_UPPER ? 2 : 1;
        } while (e->type == GE_CHAR_ALT);
        return false;
    }
    /* negated: some code point of [lo, hi] is outside every range */
    for (uint32_t cur = lo;;) {
        bool moved = false;
        const gram_elem *f = e;
        do {
            uint32_t a = f->value, b = f[1].type == GE_RNG_UPPER ? f[1].value : a;
            if (a <= cur && cur <= b) {
                if (b >= hi) return false;
                cur = b + 1;
                moved = true;
            }
            f += f[1].type == GE_RNG_UPPER ? 2 : 1;
        } while (f->type == GE_CHAR_ALT);
        if (!moved) return true;
    }
}

/* ---- buffers ---------------------------------------------------------------------- */

/* Makes room for `need` more items of `size` bytes in *p (length n, capacity
 * *cap); false (and the state's status set) past GRAM_MAX_STATE_BYTES. */
bool gram_grow(gram_state *s, void **p, size_t *cap, size_t n, size_t need, size_t size, const char *what) {
    if (n + need <= *cap && *p) return true; /* allocated even for 0, so offsets from it are defined */
    size_t nc = *cap ? *cap : 64;
    while (nc < n + need)
        nc *= 2;
    if (nc * size > GRAM_MAX_STATE_BYTES) {
        if (s->st == KN_OK)
            kn_fail(&s->err, s->st = KN_ERANGE, "grammar: the %s outgrew %u MiB", what,
                    GRAM_MAX_STATE_BYTES >> 20);
        return false;
    }
    void *np = realloc(*p, nc * size);
    if (!np) {
        if (s->st == KN_OK) kn_fail(&s->err, s->st = KN_ENOMEM, "grammar: out of memory");
        return false;
    }
    *p = np;
    *cap = nc;
    return true;
}

static bool bound(gram_state *s, const char *fmt, unsigned limit) {
    if (s->st == KN_OK) kn_fail(&s->err, s->st = KN_ERANGE, fmt, limit);
    return false;
}

/* ---- one step's work: distinct stacks, a work list, the finished ones ---------- */

static void work_begin(gram_state *s) {
    s->wd_n = s->ws_n = s->todo_n = s->fin_n = 0;
    if (++s->gen == 0) { /* the generation wrapped: really clear the table */
        memset(s->ht, 0, s->ht_cap * sizeof *s->ht);
        s->gen = 1;
    }
}

/* Adds the stack just written at wd[off .. wd_n) unless seen in this step. */
static bool work_add(gram_state *s, size_t off) {
    uint32_t len = (uint32_t)(s->wd_n - off);
    if (len > GRAM_MAX_DEPTH)
        return bound(s, "grammar: a parse stack is deeper than %u (input nested too deep)", GRAM_MAX_DEPTH);
    uint64_t h = XXH3_64bits(s->wd + off, (size_t)len * sizeof *s->wd);
    size_t mask = s->ht_cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        gram_slot *sl = &s->ht[i];
        if (sl->gen != s->gen) {
            if (s->ws_n >= GRAM_MAX_WORK)
                return bound(s, "grammar: more than %u parse stacks explored for one character",
                             GRAM_MAX_WORK);
            if (!gram_grow(s, (void **)&s->ws, &s->ws_cap, s->ws_n, 1, sizeof *s->ws, "stack work list") ||
                !gram_grow(s, (void **)&s->todo, &s->todo_cap, s->todo_n, 1, sizeof *s->todo,
                           "stack work list"))
                return false;
            *sl = (gram_slot){.h = h, .idx = (uint32_t)s->ws_n, .gen = s->gen};
            s->ws[s->ws_n] = (gram_sref){.off = off, .len = len};
            s->todo[s->todo_n++] = (uint32_t)s->ws_n++;
            return true;
        }
        if (sl->h == h) {
            const gram_sref *o = &s->ws[sl->idx];
            if (o->len == len && memcmp(s->wd + o->off, s->wd + off, (size_t)len * sizeof *s->wd) == 0) {
                s->wd_n = off; /* seen: drop the copy */
                return true;
            }
        }
    }
}

/* Expands the work list until every stack's top is a set; the distinct
 * final stacks are appended to fin[]. */
static bool work_close(gram_state *s) {
    const gram *g = s->g;
    while (s->todo_n) {
        uint32_t idx = s->todo[--s->todo_n];
        gram_sref sr = s->ws[idx];
        if (sr.len == 0 || gram_is_set(&g->elems[s->wd[sr.off + sr.len - 1]])) {
            if (s->fin_n >= GRAM_MAX_STACKS)
                return bound(s, "grammar: more than %u parse stacks alive (the grammar is too ambiguous)",
                             GRAM_MAX_STACKS);
            if (!gram_grow(s, (void **)&s->fin, &s->fin_cap, s->fin_n, 1, sizeof *s->fin, "stack list"))
                return false;
            s->fin[s->fin_n++] = idx;
            continue;
        }
        uint32_t top = s->wd[sr.off + sr.len - 1];
        const gram_elem *ref = &g->elems[top];
        KN_ASSERT(ref->type == GE_REF);
        uint32_t cont = gram_is_end(ref + 1) ? UINT32_MAX : top + 1;
        for (uint32_t a = g->alt_lo[ref->value]; a < g->alt_lo[ref->value + 1]; a++) {
            uint32_t start = g->alts[a];
            if (!gram_grow(s, (void **)&s->wd, &s->wd_cap, s->wd_n, (size_t)sr.len + 2, sizeof *s->wd,
                           "parse stacks"))
                return false;
            size_t off = s->wd_n;
            memcpy(s->wd + off, s->wd + sr.off, (size_t)(sr.len - 1) * sizeof *s->wd);
            s->wd_n += sr.len - 1;
            if (cont != UINT32_MAX) s->wd[s->wd_n++] = cont;
            if (!gram_is_end(&g->elems[start])) s->wd[s->wd_n++] = start;
            if (!work_add(s, off)) return false;
        }
    }
    return true;
}

/* ---- levels ---------------------------------------------------------------------------- */

size_t gram_level_count(const gram_state *s) {
    return s->lv_n;
}

/* Appends the step's final stacks as a new level. */
static bool level_push_fin(gram_state *s) {
    size_t total = 0;
    for (size_t i = 0; i < s->fin_n; i++)
        total += s->ws[s->fin[i]].len;
    if (!gram_grow(s, (void **)&s->ld, &s->ld_cap, s->ld_n, total, sizeof *s->ld, "parse stacks") ||
        !gram_grow(s, (void **)&s->ls, &s->ls_cap, s->ls_n, s->fin_n, sizeof *s->ls, "parse stacks") ||
        !gram_grow(s, (void **)&s->lv, &s->lv_cap, s->lv_n, 1, sizeof *s->lv, "levels"))
        return false;
    s->lv[s->lv_n++] = (gram_level){.ls = s->ls_n, .ld = s->ld_n};
    for (size_t i = 0; i < s->fin_n; i++) {
        gram_sref w = s->ws[s->fin[i]];
        memcpy(s->ld + s->ld_n, s->wd + w.off, (size_t)w.len * sizeof *s->ld);
        s->ls[s->ls_n++] = (gram_sref){.off = s->ld_n, .len = w.len};
        s->ld_n += w.len;
    }
    return true;
}

bool gram_level_push(gram_state *s, const uint32_t *d, const gram_sref *stacks, size_t n) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += stacks[i].len;
    if (!gram_grow(s, (void **)&s->ld, &s->ld_cap, s->ld_n, total, sizeof *s->ld, "parse stacks") ||
        !gram_grow(s, (void **)&s->ls, &s->ls_cap, s->ls_n, n, sizeof *s->ls, "parse stacks") ||
        !gram_grow(s, (void **)&s->lv, &s->lv_cap, s->lv_n, 1, sizeof *s->lv, "levels"))
        return false;
    s->lv[s->lv_n++] = (gram_level){.ls = s->ls_n, .ld = s->ld_n};
    for (size_t i = 0; i < n; i++) {
        memcpy(s->ld + s->ld_n, d + stacks[i].off, (size_t)stacks[i].len * sizeof *s->ld);
        s->ls[s->ls_n++] = (gram_sref){.off = s->ld_n, .len = stacks[i].len};
        s->ld_n += stacks[i].len;
    }
    return true;
}

void gram_level_pop(gram_state *s) {
    KN_ASSERT(s->lv_n > 1);
    gram_level l = s->lv[--s->lv_n];
    s->ls_n = l.ls;
    s->ld_n = l.ld;
}

/* Moves the top level down to index k, dropping the levels in between. */
void gram_level_move(gram_state *s, size_t k) {
    KN_ASSERT(k < s->lv_n);
    if (k == s->lv_n - 1) return;
    gram_level top = s->lv[s->lv_n - 1], dst = s->lv[k];
    size_t n_ls = s->ls_n - top.ls, n_ld = s->ld_n - top.ld;
    memmove(s->ld + dst.ld, s->ld + top.ld, n_ld * sizeof *s->ld);
    for (size_t i = 0; i < n_ls; i++) {
        gram_sref r = s->ls[top.ls + i];
        r.off = r.off - top.ld + dst.ld;
        s->ls[dst.ls + i] = r;
    }
    s->ls_n = dst.ls + n_ls;
    s->ld_n = dst.ld + n_ld;
    s->lv_n = k + 1;
}

int gram_level_step(gram_state *s, size_t lvl, uint32_t cp) {
    if (s->st != KN_OK) return -1;
    const gram *g = s->g;
    gram_level l = s->lv[lvl];
    size_t end = lvl + 1 < s->lv_n ? s->lv[lvl + 1].ls : s->ls_n;
    work_begin(s);
    for (size_t i = l.ls; i < end; i++) {
        gram_sref sr = s->ls[i];
        if (sr.len == 0) continue;
        uint32_t top = s->ld[sr.off + sr.len - 1];
        const gram_elem *next;
        if (!gram_match_set(&g->elems[top], cp, &next)) continue;
        if (!gram_grow(s, (void **)&s->wd, &s->wd_cap, s->wd_n, sr.len, sizeof *s->wd, "parse stacks"))
            return -1;
        size_t off = s->wd_n;
        memcpy(s->wd + off, s->ld + sr.off, (size_t)(sr.len - 1) * sizeof *s->wd);
        s->wd_n += sr.len - 1;
        if (!gram_is_end(next)) s->wd[s->wd_n++] = (uint32_t)(next - g->elems);
        if (!work_add(s, off)) return -1;
    }
    if (!work_close(s)) return -1;
    if (s->fin_n == 0) return 0;
    return level_push_fin(s) ? 1 : -1;
}

bool gram_level_partial_ok(const gram_state *s, size_t lvl, const gram_u8 *u) {
    uint32_t lo, hi;
    gram_u8_range(u, &lo, &hi);
    if (hi > 0x10FFFF) hi = 0x10FFFF;
    size_t end = lvl + 1 < s->lv_n ? s->lv[lvl + 1].ls : s->ls_n;
    for (size_t i = s->lv[lvl].ls; i < end; i++) {
        gram_sref sr = s->ls[i];
        if (sr.len && gram_match_set_range(&s->g->elems[s->ld[sr.off + sr.len - 1]], lo, hi)) return true;
    }
    return false;
}

/* ---- the state -------------------------------------------------------------------------- */

static bool state_init(gram_state *s) {
    const gram *g = s->g;
    s->lv_n = s->ls_n = s->ld_n = 0;
    s->u8 = (gram_u8){0};
    work_begin(s);
    for (uint32_t a = g->alt_lo[g->root]; a < g->alt_lo[g->root + 1]; a++) {
        uint32_t start = g->alts[a];
        if (!gram_grow(s, (void **)&s->wd, &s->wd_cap, s->wd_n, 1, sizeof *s->wd, "parse stacks"))
            return false;
        size_t off = s->wd_n;
        if (!gram_is_end(&g->elems[start])) s->wd[s->wd_n++] = start;
        if (!work_add(s, off)) return false;
    }
    return work_close(s) && level_push_fin(s);
}

kn_status gram_state_create(const gram *g, gram_state **out, kn_err *err) {
    *out = NULL;
    gram_state *s = calloc(1, sizeof *s);
    if (!s) return kn_fail(err, KN_ENOMEM, "grammar: out of memory");
    s->g = g;
    s->ht_cap = 1;
    while (s->ht_cap < 2u * GRAM_MAX_WORK)
        s->ht_cap *= 2;
    s->ht = calloc(s->ht_cap, sizeof *s->ht);
    if (!s->ht) {
        gram_state_destroy(s);
        return kn_fail(err, KN_ENOMEM, "grammar: out of memory");
    }
    if (!state_init(s)) {
        kn_status st = gram_state_status(s, err);
        gram_state_destroy(s);
        return st;
    }
    *out = s;
    return KN_OK;
}

void gram_state_destroy(gram_state *s) {
    if (!s) return;
    free(s->ld);
    free(s->ls);
    free(s->lv);
    free(s->wd);
    free(s->ws);
    free(s->todo);
    free(s->fin);
    free(s->ht);
    free(s->frames);
    free(s->cd);
    free(s->cs);
    free(s->sets);
    free(s->set_ht);
    free(s->memo);
    free(s->asc);
    free(s);
}

kn_status gram_state_copy(gram_state *dst, const gram_state *src, kn_err *err) {
    KN_ASSERT(dst->g == src->g);
    size_t n_ls = src->lv_n > 1 ? src->lv[1].ls : src->ls_n;
    size_t n_ld = src->lv_n > 1 ? src->lv[1].ld : src->ld_n;
    dst->st = KN_OK;
    if (!gram_grow(dst, (void **)&dst->ld, &dst->ld_cap, 0, n_ld, sizeof *dst->ld, "parse stacks") ||
        !gram_grow(dst, (void **)&dst->ls, &dst->ls_cap, 0, n_ls, sizeof *dst->ls, "parse stacks") ||
        !gram_grow(dst, (void **)&dst->lv, &dst->lv_cap, 0, 1, sizeof *dst->lv, "levels")) {
        kn_status st = gram_state_status(dst, err);
        gram_state_reset(dst);
        return st;
    }
    memcpy(dst->ld, src->ld, n_ld * sizeof *dst->ld);
    memcpy(dst->ls, src->ls, n_ls * sizeof *dst->ls);
    dst->lv[0] = (gram_level){0, 0};
    dst->lv_n = 1;
    dst->ls_n = n_ls;
    dst->ld_n = n_ld;
    dst->u8 = src->u8;
    dst->st = src->st;
    dst->err = src->err;
    return KN_OK;
}

kn_status gram_state_clone(const gram_state *src, gram_state **out, kn_err *err) {
    kn_status st = gram_state_create(src->g, out, err);
    if (st != KN_OK) return st;
    if ((st = gram_state_copy(*out, src, err)) != KN_OK) {
        gram_state_destroy(*out);
        *out = NULL;
    }
    return st;
}

void gram_state_reset(gram_state *s) {
    s->st = KN_OK;
    s->err = (kn_err){0};
    state_init(s); /* a failure here leaves the status set */
}

kn_status gram_state_status(const gram_state *s, kn_err *err) {
    if (s->st != KN_OK && err) *err = s->err;
    return s->st;
}

size_t gram_state_stacks(const gram_state *s) {
    return s->lv_n ? (s->lv_n > 1 ? s->lv[1].ls : s->ls_n) : 0;
}

bool gram_can_end(const gram_state *s) {
    if (s->st != KN_OK || s->u8.need || s->lv_n == 0) return false;
    size_t end = s->lv_n > 1 ? s->lv[1].ls : s->ls_n;
    for (size_t i = 0; i < end; i++)
        if (s->ls[i].len == 0) return true;
    return false;
}

bool gram_accept_cp(gram_state *s, uint32_t cp) {
    if (s->st != KN_OK || s->u8.need || !gram_cp_valid(cp)) return false;
    KN_ASSERT(s->lv_n == 1);
    if (gram_level_step(s, 0, cp) <= 0) return false;
    gram_level_move(s, 0);
    return true;
}

int gram_level_feed(gram_state *s, size_t lvl, const uint8_t *p, size_t n, gram_u8 *u) {
    size_t cur = lvl;
    for (size_t i = 0; i < n; i++) {
        int r = gram_u8_feed(u, p[i]);
        if (r == GRAM_U8_BAD) return -1;
        if (r == GRAM_U8_MORE) continue;
        if (gram_level_step(s, cur, u->cp) <= 0) return -1;
        if (cur > lvl) gram_level_move(s, lvl + 1); /* keep at most one working level */
        cur = lvl + 1;
    }
    if (u->need && !gram_level_partial_ok(s, cur, u)) return -1;
    return (int)(cur - lvl);
}

bool gram_accept_bytes(gram_state *s, const void *bytes, size_t n) {
    if (s->st != KN_OK) return false;
    KN_ASSERT(s->lv_n == 1);
    gram_u8 u = s->u8;
    int r = gram_level_feed(s, 0, bytes, n, &u);
    if (r < 0) {
        while (s->lv_n > 1)
            gram_level_pop(s);
        return false;
    }
    if (r > 0) gram_level_move(s, 0);
    s->u8 = u;
    return true;
}
