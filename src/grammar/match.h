/*
 * grammar/match.h — the matcher state and its level operations, shared by
 * match.c (accepting input) and vocab.c (the mask walk over the trie).
 * See match.c for the layout.
 */
#ifndef KILN_GRAMMAR_MATCH_H
#define KILN_GRAMMAR_MATCH_H

#include "internal.h"

typedef struct gram_sref {
    size_t off;   /* first element in ld (or wd) */
    uint32_t len; /* elements, bottom first */
} gram_sref;

typedef struct gram_level {
    size_t ls; /* first stack ref of the level */
    size_t ld; /* first stack element of the level */
} gram_level;

typedef struct gram_slot {
    uint64_t h;
    uint32_t idx; /* into ws */
    uint32_t gen; /* valid when == the state's gen */
} gram_slot;

typedef struct gram_frame {
    uint32_t node, child; /* trie node and the next child to visit */
    uint32_t set;         /* interned stack set at this node */
    gram_u8 u8;           /* pending UTF-8 at this node */
} gram_frame;

typedef struct gram_cset {
    size_t cs;    /* first stack in cs[] */
    uint32_t n;   /* stacks */
    uint64_t h;   /* hash of the content */
    uint32_t asc; /* its ASCII transitions: asc[asc - 1 .. + 128) (0: none yet) */
    /* the bytes on which it steps to itself (vocab.c's subtree skip): loop[b / 64] bit b % 64 for ASCII b;
     * loop_na: every non-ASCII code point steps it to itself; loop_known: computed */
    uint64_t loop[2];
    uint8_t loop_known, loop_na;
    /* when each stack's top holds all non-ASCII code points or none, they all step it the same way:
     * na_to = that set + 3, 2 = none takes them, 1 = not uniform, 0 = unknown */
    uint32_t na_to;
} gram_cset;

typedef struct gram_memo {
    uint32_t set, cp; /* key: set id + 1 (0: empty slot), code point */
    uint32_t to;      /* the set it steps to + 1, or 0 when no stack takes cp */
} gram_memo;

struct gram_state {
    const gram *g; /* borrowed */
    kn_status st;  /* sticky bound error */
    kn_err err;
    gram_u8 u8; /* pending partial UTF-8 of the accepted input */

    /* levels (a LIFO of stack sets; level 0 is the state) */
    uint32_t *ld; /* [ld_n] stack elements */
    size_t ld_n, ld_cap;
    gram_sref *ls; /* [ls_n] stacks */
    size_t ls_n, ls_cap;
    gram_level *lv; /* [lv_n] */
    size_t lv_n, lv_cap;

    /* one step's work */
    uint32_t *wd; /* [wd_n] elements of the stacks seen in this step */
    size_t wd_n, wd_cap;
    gram_sref *ws; /* [ws_n] the distinct stacks seen */
    size_t ws_n, ws_cap;
    uint32_t *todo; /* [todo_n] indices into ws still to expand */
    size_t todo_n, todo_cap;
    uint32_t *fin; /* [fin_n] indices into ws whose top is a set */
    size_t fin_n, fin_cap;
    gram_slot *ht; /* [ht_cap] open addressing over ws, by generation */
    size_t ht_cap;
    uint32_t gen;

    /* the mask walk (vocab.c): frames, and a cache of interned stack sets
     * with their memoized transitions, kept across calls (the same sets
     * recur step after step, e.g. inside a JSON string) and flushed at the
     * start of a call once it outgrows GRAM_CACHE_BYTES */
    gram_frame *frames;
    size_t frames_cap;
    uint32_t *cd; /* [cd_n] stack elements of the interned sets */
    size_t cd_n, cd_cap;
    gram_sref *cs; /* [cs_n] their stacks */
    size_t cs_n, cs_cap;
    gram_cset *sets; /* [sets_n] */
    size_t sets_n, sets_cap;
    uint32_t *set_ht; /* [set_ht_cap] set id + 1, 0 = empty */
    size_t set_ht_cap;
    gram_memo *memo; /* [memo_cap] open addressing, for code points >= 128 */
    size_t memo_n, memo_cap;
    uint32_t *asc; /* [asc_n] dense ASCII transitions of sets: to + 2, 1 = none takes it, 0 = unknown */
    size_t asc_n, asc_cap;
};

/* The transition cache is flushed when its memory passes this. */
#define GRAM_CACHE_BYTES (32u << 20)

/* Grows *p to hold n + need items (false and the status set past
 * GRAM_MAX_STATE_BYTES); allocated even for need 0. */
bool gram_grow(gram_state *s, void **p, size_t *cap, size_t n, size_t need, size_t size, const char *what);
/* Pushes a copy of stacks (data in d) as a new top level. */
bool gram_level_push(gram_state *s, const uint32_t *d, const gram_sref *stacks, size_t n);

/* Steps level lvl by cp, pushing the result as a new top level: 1, or 0
 * when no stack takes cp (nothing pushed), or -1 on a bound (status set). */
int gram_level_step(gram_state *s, size_t lvl, uint32_t cp);
/* Whether some stack of level lvl can take a character that starts with
 * the pending sequence u. */
bool gram_level_partial_ok(const gram_state *s, size_t lvl, const gram_u8 *u);
/* Feeds bytes from level lvl (lvl must be the top): -1 rejected (levels
 * above lvl may remain: pop them), else the number of levels pushed (0 or
 * 1: the result is the top). u is updated. */
int gram_level_feed(gram_state *s, size_t lvl, const uint8_t *p, size_t n, gram_u8 *u);
void gram_level_pop(gram_state *s);
void gram_level_move(gram_state *s, size_t k);
size_t gram_level_count(const gram_state *s);

#endif
