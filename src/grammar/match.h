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
    uint32_t lvl;         /* level holding the stacks at this node */
    bool own;             /* this frame pushed that level */
    gram_u8 u8;           /* pending UTF-8 at this node */
} gram_frame;

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

    /* the mask walk's frames (vocab.c) */
    gram_frame *frames;
    size_t frames_cap;
};

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
