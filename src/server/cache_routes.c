/*
 * cache_routes.c — GET /cache/stats and POST /cache/clear over the
 * response and embedding cache, and the Cache-Control opt-out of a
 * request. What the cache keys and stores is the generation session's
 * (kiln/engine.h, src/engine/record.h).
 */
#include "server_internal.h"

#include <stdlib.h>
#include <string.h>

bool srv_cache_opt_out(struct MHD_Connection *c) {
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Cache-Control");
    return h && (strcasestr(h, "no-cache") || strcasestr(h, "no-store"));
}

/* ---- /cache/stats and /cache/clear ------------------------------------------------- */

static json_t *stats_json(const rc_stats *st, bool l2) {
    uint64_t looked = st->hits + st->misses;
    json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:f, s:I, s:I}", "entries", (json_int_t)st->entries, "bytes",
                          (json_int_t)st->bytes, "hits", (json_int_t)st->hits, "misses", (json_int_t)st->misses,
                          "hit_rate", looked ? (double)st->hits / (double)looked : 0.0, "evictions",
                          (json_int_t)st->evictions, "expirations", (json_int_t)st->expirations);
    if (l2) {
        json_object_set_new(o, "corrupt", json_integer((json_int_t)st->corrupt));
        json_object_set_new(o, "dropped", json_integer((json_int_t)st->dropped));
    }
    return o;
}

enum MHD_Result srv_h_cache_stats(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    (void)cx;
    json_t *out = json_object();
    for (int tier = 0; tier < 2; tier++) {
        json_t *t = json_object();
        for (int ty = 0; ty < RC_NTYPES; ty++) {
            rc_stats st;
            rc_stats_get(s->cache, tier ? RC_TIER_L2 : RC_TIER_L1, (rc_type)ty, &st);
            json_object_set_new(t, rc_type_name((rc_type)ty), stats_json(&st, tier == 1));
        }
        json_object_set_new(out, tier ? "l2" : "l1", t);
    }
    json_object_set_new(out, "enabled", json_pack("{s:b, s:b}", "response", rc_enabled(s->cache, RC_RESPONSE),
                                                  "embedding", rc_enabled(s->cache, RC_EMBEDDING)));
    json_object_set_new(out, "policy", json_string(s->cfg->cache_policy ? s->cfg->cache_policy : "lru"));
    json_object_set_new(out, "l1_entry_overhead_bytes", json_integer((json_int_t)rc_l1_entry_cost(0)));
    return srv_send_json(c, 200, out);
}

enum MHD_Result srv_h_cache_clear(srv_server *s, struct MHD_Connection *c, conn_ctx *cx) {
    srv_error e;
    json_t *root = NULL;
    bool all = true, l1 = true, l2 = true;
    rc_type type = RC_RESPONSE;
    uint64_t tag = 0;
    const char *model = NULL;
    if (cx->body.n) {
        if (!(root = srv_parse_json(cx->body.p, cx->body.n, s->lim.json_depth, &e)))
            return srv_send_error(c, cx, &e);
        if (!json_is_object(root)) {
            srv_err(&e, 400, NULL, "invalid_type", "the body must be a JSON object");
            goto fail;
        }
        json_t *t = json_object_get(root, "type"), *m = json_object_get(root, "model"),
               *ti = json_object_get(root, "tier");
        if (t && !json_is_null(t)) {
            const char *ts = json_string_value(t);
            if (!ts || (strcmp(ts, "all") && !rc_type_parse(ts, &type))) {
                srv_err(&e, 400, "type", "invalid_value", "'type' must be \"response\", \"embedding\" or \"all\"");
                goto fail;
            }
            all = !strcmp(ts, "all");
        }
        if (ti && !json_is_null(ti)) {
            const char *ts = json_string_value(ti);
            if (!ts || (strcmp(ts, "all") && strcmp(ts, "l1") && strcmp(ts, "l2"))) {
                srv_err(&e, 400, "tier", "invalid_value", "'tier' must be \"l1\", \"l2\" or \"all\"");
                goto fail;
            }
            l1 = strcmp(ts, "l2") != 0;
            l2 = strcmp(ts, "l1") != 0;
        }
        if (m && !json_is_null(m)) {
            if (!(model = json_string_value(m))) {
                srv_err(&e, 400, "model", "invalid_type", "'model' must be a string");
                goto fail;
            }
            rt_entry_info info;
            kn_err err = {0};
            if (rt_lookup(s->reg, model, &info, &err) != KN_OK) {
                srv_err(&e, 404, "model", "model_not_found", "%s", err.msg);
                goto fail;
            }
            tag = rc_model_tag(info.id);
        }
    }
    uint64_t n = rc_clear(s->cache, all, type, tag, l1, l2);
    KN_INFO("cache: cleared %llu entries (type %s, model %s, tier %s)", (unsigned long long)n,
            all ? "all" : rc_type_name(type), model ? model : "all", l1 && l2 ? "all" : l1 ? "l1" : "l2");
    json_decref(root);
    return srv_send_json(c, 200, json_pack("{s:I}", "cleared", (json_int_t)n));
fail:
    json_decref(root);
    return srv_send_error(c, cx, &e);
}
