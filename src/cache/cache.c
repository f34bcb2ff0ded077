/*
 * cache.c — the front of the response and embedding cache (see kiln/cache.h):
 * reads fall through L1 -> L2, a hit in L2 is promoted to L1 with its
 * expiry, and stores go to L1 at once and to L2 through a writer thread.
 *
 * The writer owns the queue of pending L2 writes (bounded; a full queue
 * drops the write and counts it) and, every maintain_interval_s, sweeps
 * expired L1 entries and runs one round of L2 maintenance. It writes in
 * batches, one LMDB transaction per batch, so request threads never wait
 * for the disk on a store.
 */
#include "cache_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WRITE_BATCH 64
#define SWEEP_MAX 4096
#define MAINTAIN_BATCH 512

typedef struct pending {
    rc_l2_item it;
    void *copy; /* it.val, owned */
} pending;

struct rc_cache {
    rc_opts o;
    char *dir;
    rc_l1 *l1[RC_NTYPES];
    rc_l2 *l2;
    /* the writer */
    pthread_t writer;
    bool writer_on;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    pending *q; /* ring */
    size_t q_cap, q_head, q_n;
    uint64_t enqueued, written; /* written: items taken from the queue and put (or failed) */
    uint64_t dropped[RC_NTYPES];
    bool stop;
    /* gauges */
    met_series *g_entries[2][RC_NTYPES], *g_bytes[2][RC_NTYPES];
};

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void drain_locked(rc_cache *c) {
    /* called with mu held; releases it around the disk write */
    pending batch[WRITE_BATCH];
    size_t n = 0;
    while (c->q_n && n < WRITE_BATCH) {
        batch[n++] = c->q[c->q_head];
        c->q_head = (c->q_head + 1) % c->q_cap;
        c->q_n--;
    }
    if (!n) return;
    pthread_mutex_unlock(&c->mu);
    rc_l2_item items[WRITE_BATCH];
    for (size_t i = 0; i < n; i++) items[i] = batch[i].it;
    kn_err err = {0};
    if (rc_l2_put_batch(c->l2, items, n, now_ms(), &err) != KN_OK)
        KN_WARN("cache: %zu writes to the disk cache failed: %s", n, err.msg);
    for (size_t i = 0; i < n; i++) free(batch[i].copy);
    pthread_mutex_lock(&c->mu);
    c->written += n;
    pthread_cond_broadcast(&c->cv_done);
}

static void maintain(rc_cache *c) {
    int64_t now = now_ms();
    for (int t = 0; t < RC_NTYPES; t++)
        if (c->l1[t]) rc_l1_sweep(c->l1[t], now, SWEEP_MAX);
    if (c->l2) {
        kn_err err = {0};
        if (rc_l2_maintain(c->l2, now, MAINTAIN_BATCH, NULL, &err) != KN_OK)
            KN_WARN("cache: disk cache maintenance failed: %s", err.msg);
    }
}

static void *writer_main(void *arg) {
    rc_cache *c = arg;
    double interval = c->o.maintain_interval_s > 0 ? c->o.maintain_interval_s : 10.0;
    double next = kn_now_s() + interval;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        if (c->q_n) {
            drain_locked(c);
            continue;
        }
        if (c->stop) break;
        double now = kn_now_s();
        if (now >= next) {
            pthread_mutex_unlock(&c->mu);
            maintain(c);
            pthread_mutex_lock(&c->mu);
            next = kn_now_s() + interval;
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double wait = next - now;
        ts.tv_sec += (time_t)wait;
        ts.tv_nsec += (long)((wait - (double)(time_t)wait) * 1e9);
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&c->cv_work, &c->mu, &ts);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

kn_status rc_cache_create(const rc_opts *o, rc_cache **out, kn_err *err) {
    *out = NULL;
    rc_cache *c = calloc(1, sizeof *c);
    if (!c) return kn_fail(err, KN_ENOMEM, "out of memory");
    c->o = *o;
    c->o.dir = NULL;
    kn_status st = KN_OK;
    static const char *const tiers[2] = {"l1", "l2"};
    met_family *fh = NULL, *fm = NULL, *fe = NULL, *fx = NULL, *ge = NULL, *gb = NULL;
    if (o->metrics) {
        const char *ln[2] = {"tier", "type"};
        fh = met_counter(o->metrics, "kiln_cache_hits_total", "Response and embedding cache hits.", 2, ln);
        fm = met_counter(o->metrics, "kiln_cache_misses_total", "Response and embedding cache misses.", 2, ln);
        fe = met_counter(o->metrics, "kiln_cache_evictions_total",
                         "Cache entries evicted for room (L1: by the policy; L2: oldest over the size limit).", 2, ln);
        fx = met_counter(o->metrics, "kiln_cache_expirations_total", "Cache entries removed past their TTL.", 2, ln);
        ge = met_gauge(o->metrics, "kiln_cache_entries", "Entries in the cache.", 2, ln);
        gb = met_gauge(o->metrics, "kiln_cache_bytes", "Bytes the cache's entries take (L1: with bookkeeping).", 2,
                       ln);
    }
    rc_tier_metrics tm[2][RC_NTYPES];
    for (int tier = 0; tier < 2; tier++)
        for (int t = 0; t < RC_NTYPES; t++) {
            const char *lv[2] = {tiers[tier], rc_type_name((rc_type)t)};
            tm[tier][t] = (rc_tier_metrics){.hits = fh ? met_get(fh, lv) : NULL,
                                            .misses = fm ? met_get(fm, lv) : NULL,
                                            .evictions = fe ? met_get(fe, lv) : NULL,
                                            .expirations = fx ? met_get(fx, lv) : NULL};
            c->g_entries[tier][t] = ge ? met_get(ge, lv) : NULL;
            c->g_bytes[tier][t] = gb ? met_get(gb, lv) : NULL;
        }
    for (int t = 0; t < RC_NTYPES; t++) {
        if (!o->enabled[t] || !o->l1_bytes) continue;
        rc_l1_opts lo = {.budget_bytes = o->l1_bytes, .policy = o->policy, .compress = o->compress,
                         .seed = 0x6b696c6e00000000ull + (uint64_t)t, .metrics = tm[0][t]};
        if ((st = rc_l1_create(&lo, &c->l1[t], err)) != KN_OK) goto fail;
    }
    if (o->dir && o->l2_bytes && (o->enabled[RC_RESPONSE] || o->enabled[RC_EMBEDDING])) {
        rc_l2_opts l2o = {.max_bytes = o->l2_bytes};
        for (int t = 0; t < RC_NTYPES; t++) l2o.metrics[t] = tm[1][t];
        kn_err l2err = {0};
        if (rc_l2_open(RC_L2_DEFAULT, o->dir, &l2o, &c->l2, &l2err) != KN_OK) {
            /* the memory tier still works: serve without the disk rather than not at all */
            KN_WARN("cache: no disk cache (%s); answers are cached in memory only", l2err.msg);
            c->l2 = NULL;
        } else if (!(c->dir = strdup(o->dir))) {
            st = kn_fail(err, KN_ENOMEM, "out of memory");
            goto fail;
        }
        c->o.dir = c->dir;
    }
    c->q_cap = o->queue_max ? o->queue_max : 4096;
    if (!(c->q = calloc(c->q_cap, sizeof *c->q))) {
        st = kn_fail(err, KN_ENOMEM, "out of memory");
        goto fail;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv_work, NULL);
    pthread_cond_init(&c->cv_done, NULL);
    if (c->l1[0] || c->l1[1] || c->l2) {
        if (pthread_create(&c->writer, NULL, writer_main, c)) {
            pthread_cond_destroy(&c->cv_work);
            pthread_cond_destroy(&c->cv_done);
            pthread_mutex_destroy(&c->mu);
            st = kn_fail(err, KN_ENOMEM, "cannot start the cache writer thread");
            goto fail;
        }
        c->writer_on = true;
    } else {
        c->writer_on = false;
    }
    *out = c;
    return KN_OK;
fail:
    for (int t = 0; t < RC_NTYPES; t++) rc_l1_destroy(c->l1[t]);
    rc_l2_close(c->l2);
    free(c->q);
    free(c->dir);
    free(c);
    return st;
}

void rc_cache_destroy(rc_cache *c) {
    if (!c) return;
    if (c->writer_on) {
        pthread_mutex_lock(&c->mu);
        c->stop = true;
        pthread_cond_signal(&c->cv_work);
        pthread_mutex_unlock(&c->mu);
        pthread_join(c->writer, NULL);
    }
    for (size_t i = 0; i < c->q_n; i++) free(c->q[(c->q_head + i) % c->q_cap].copy);
    pthread_cond_destroy(&c->cv_work);
    pthread_cond_destroy(&c->cv_done);
    pthread_mutex_destroy(&c->mu);
    for (int t = 0; t < RC_NTYPES; t++) rc_l1_destroy(c->l1[t]);
    rc_l2_close(c->l2);
    free(c->q);
    free(c->dir);
    free(c);
}

bool rc_enabled(const rc_cache *c, rc_type t) {
    return c && (unsigned)t < RC_NTYPES && c->o.enabled[t] && (c->l1[t] || c->l2);
}

rc_tier rc_lookup(rc_cache *c, rc_type t, uint64_t model, rc_key k, void **val, size_t *len) {
    *val = NULL;
    *len = 0;
    if (!rc_enabled(c, t)) return RC_TIER_NONE;
    int64_t now = now_ms();
    if (c->l1[t] && rc_l1_get(c->l1[t], k, now, val, len, NULL)) return RC_TIER_L1;
    if (!c->l2) return RC_TIER_NONE;
    int64_t expiry = 0;
    kn_err err = {0};
    kn_status st = rc_l2_get(c->l2, t, model, k, now, val, len, &expiry, &err);
    if (st == KN_OK) {
        if (c->l1[t]) rc_l1_put(c->l1[t], k, model, *val, *len, expiry, now);
        return RC_TIER_L2;
    }
    if (st != KN_ENOTFOUND) KN_WARN("cache: reading the disk cache failed: %s", err.msg);
    return RC_TIER_NONE;
}

void rc_store(rc_cache *c, rc_type t, uint64_t model, rc_key k, const void *val, size_t len) {
    if (!rc_enabled(c, t)) return;
    int64_t now = now_ms();
    int64_t expiry = now + (int64_t)(c->o.ttl_s[t] * 1000.0);
    if (expiry <= now) return;
    if (c->l1[t]) rc_l1_put(c->l1[t], k, model, val, len, expiry, now);
    if (!c->l2) return;
    void *copy = malloc(len ? len : 1);
    if (!copy) return;
    memcpy(copy, val, len);
    pthread_mutex_lock(&c->mu);
    if (c->q_n == c->q_cap) {
        c->dropped[t]++;
        pthread_mutex_unlock(&c->mu);
        free(copy);
        return;
    }
    c->q[(c->q_head + c->q_n) % c->q_cap] = (pending){
        .it = {.type = t, .model = model, .key = k, .val = copy, .len = len, .expiry_ms = expiry}, .copy = copy};
    c->q_n++;
    c->enqueued++;
    pthread_cond_signal(&c->cv_work);
    pthread_mutex_unlock(&c->mu);
}

void rc_flush(rc_cache *c) {
    if (!c || !c->writer_on) return;
    pthread_mutex_lock(&c->mu);
    uint64_t target = c->enqueued;
    pthread_cond_signal(&c->cv_work);
    while (c->written < target && !c->stop) pthread_cond_wait(&c->cv_done, &c->mu);
    pthread_mutex_unlock(&c->mu);
}

uint64_t rc_clear(rc_cache *c, bool all, rc_type t, uint64_t model, bool l1, bool l2) {
    if (!c) return 0;
    rc_flush(c);
    uint64_t n = 0;
    for (int i = 0; l1 && i < RC_NTYPES; i++) {
        if (!all && i != (int)t) continue;
        if (c->l1[i]) n += rc_l1_clear(c->l1[i], model);
    }
    if (l2 && c->l2) {
        uint64_t removed = 0;
        kn_err err = {0};
        if (rc_l2_clear(c->l2, all, t, model, &removed, &err) != KN_OK)
            KN_WARN("cache: clearing the disk cache failed: %s", err.msg);
        n += removed;
    }
    return n;
}

void rc_stats_get(rc_cache *c, rc_tier tier, rc_type t, rc_stats *s) {
    memset(s, 0, sizeof *s);
    if (!c || (unsigned)t >= RC_NTYPES) return;
    if (tier == RC_TIER_L1 && c->l1[t]) rc_l1_stats(c->l1[t], s);
    if (tier == RC_TIER_L2 && c->l2) {
        rc_l2_stats(c->l2, t, s);
        pthread_mutex_lock(&c->mu);
        s->dropped = c->dropped[t];
        pthread_mutex_unlock(&c->mu);
    }
}

void rc_metrics_refresh(rc_cache *c) {
    if (!c) return;
    for (int tier = 0; tier < 2; tier++)
        for (int t = 0; t < RC_NTYPES; t++) {
            rc_stats s;
            rc_stats_get(c, tier ? RC_TIER_L2 : RC_TIER_L1, (rc_type)t, &s);
            met_set(c->g_entries[tier][t], (double)s.entries);
            met_set(c->g_bytes[tier][t], (double)s.bytes);
        }
}
