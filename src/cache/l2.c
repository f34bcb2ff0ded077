/*
 * l2.c — the cache's disk tier, whatever keeps it: the backend table,
 * rc_l2_open (a backend by name), the rc_l2_* functions that check their
 * arguments and dispatch through a store's ops (see cache_internal.h), and
 * the offline calls of cache.h that `kiln cache stats|clear` makes on the
 * default backend's store.
 *
 * Owns nothing beyond the calls: a store belongs to whoever opened it.
 */
#include "cache_internal.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* One row per backend; the first is the default. */
static const rc_l2_ops *const BACKENDS[] = {&rc_l2_lmdb_ops};
enum { N_BACKENDS = (int)(sizeof BACKENDS / sizeof BACKENDS[0]) };

kn_status rc_l2_open(const char *backend, const char *where, const rc_l2_opts *o, rc_l2 **out, kn_err *err) {
    KN_ASSERT(where && o && out);
    *out = NULL;
    if (!backend) backend = RC_L2_DEFAULT;
    for (int i = 0; i < N_BACKENDS; i++)
        if (!strcasecmp(backend, BACKENDS[i]->name)) return BACKENDS[i]->open(where, o, out, err);
    char known[128];
    size_t n = 0;
    known[0] = 0;
    for (int i = 0; i < N_BACKENDS && n < sizeof known; i++)
        n += (size_t)snprintf(known + n, sizeof known - n, "%s%s", i ? ", " : "", BACKENDS[i]->name);
    return kn_fail(err, KN_EINVAL, "cache L2: unknown backend '%.64s' (known: %s)", backend, known);
}

kn_status rc_l2_get(rc_l2 *b, rc_type t, uint64_t model, rc_key k, int64_t now_ms, void **val, size_t *len,
                    int64_t *expiry_ms, kn_err *err) {
    KN_ASSERT(b && val && len);
    if ((unsigned)t >= RC_NTYPES) return kn_fail(err, KN_EINVAL, "cache L2: bad entry type %d", (int)t);
    return b->ops->get(b, t, model, k, now_ms, val, len, expiry_ms, err);
}

kn_status rc_l2_put_batch(rc_l2 *b, const rc_l2_item *items, size_t n, int64_t now_ms, kn_err *err) {
    KN_ASSERT(b && (items || !n));
    return n ? b->ops->put_batch(b, items, n, now_ms, err) : KN_OK;
}

kn_status rc_l2_clear(rc_l2 *b, bool all, rc_type t, uint64_t model, uint64_t *removed, kn_err *err) {
    KN_ASSERT(b);
    if (removed) *removed = 0;
    if (!all && (unsigned)t >= RC_NTYPES)
        return kn_fail(err, KN_EINVAL, "cache L2: bad entry type %d", (int)t);
    return b->ops->clear(b, all, t, model, removed, err);
}

kn_status rc_l2_maintain(rc_l2 *b, int64_t now_ms, size_t batch, uint64_t *removed, kn_err *err) {
    KN_ASSERT(b);
    if (removed) *removed = 0;
    return b->ops->maintain(b, now_ms, batch ? batch : 1000, removed, err);
}

void rc_l2_stats(rc_l2 *b, rc_type t, rc_stats *s) {
    KN_ASSERT(b && s);
    memset(s, 0, sizeof *s);
    if ((unsigned)t < RC_NTYPES) b->ops->stats(b, t, s);
}

void rc_l2_close(rc_l2 *b) {
    if (b) b->ops->close(b);
}

/* ---- offline (cache.h) ----------------------------------------------------- */

kn_status rc_disk_stats(const char *dir, rc_stats s[RC_NTYPES], kn_err *err) {
    KN_ASSERT(dir && s);
    memset(s, 0, RC_NTYPES * sizeof *s);
    rc_l2_opts o = {.read_only = true};
    rc_l2 *b = NULL;
    kn_status st = rc_l2_open(NULL, dir, &o, &b, err);
    if (st) return st;
    for (int t = 0; t < RC_NTYPES; t++)
        rc_l2_stats(b, (rc_type)t, &s[t]);
    rc_l2_close(b);
    return KN_OK;
}

kn_status rc_disk_clear(const char *dir, bool all, rc_type t, uint64_t model, uint64_t *removed,
                        kn_err *err) {
    KN_ASSERT(dir);
    if (removed) *removed = 0;
    rc_l2_opts o = {.must_exist = true};
    rc_l2 *b = NULL;
    kn_status st = rc_l2_open(NULL, dir, &o, &b, err);
    if (st) return st;
    st = rc_l2_clear(b, all, t, model, removed, err);
    rc_l2_close(b);
    return st;
}
