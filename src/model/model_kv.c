/*
 * model_kv.c — the KV row formats a decoder keeps in the paged kv_cache
 * (F16 or Q8_0 rows of one kv head and position) and a plain cache for
 * tools (model.h, KV store).
 */
#include "kiln/model.h"

#include <strings.h>

bool model_kv_type_parse(const char *s, model_kv_type *out) {
    if (!strcasecmp(s, "f16"))
        *out = MODEL_KV_F16;
    else if (!strcasecmp(s, "q8_0"))
        *out = MODEL_KV_Q8_0;
    else
        return false;
    return true;
}

const char *model_kv_type_name(model_kv_type t) {
    return t == MODEL_KV_Q8_0 ? "q8_0" : "f16";
}

kn_status model_kv_geom(const model *m, model_kv_type type, kv_geom *g, kn_err *err) {
    if (type == MODEL_KV_Q8_0 && m->hp.head_dim % Q_QK8_0)
        return kn_fail(err, KN_EUNSUPPORTED,
                       "a Q8_0 KV cache needs a head dimension divisible by 32 (this model: %d)",
                       m->hp.head_dim);
    *g = (kv_geom){.n_layer = m->hp.n_layer,
                   .n_head_kv = m->hp.n_head_kv,
                   .row_bytes = type == MODEL_KV_Q8_0 ? tensor_kv8p_row_size(m->hp.head_dim)
                                                      : (size_t)m->hp.head_dim * 2,
                   .row_type = (int)type};
    return KN_OK;
}

kn_status model_kv_create(const model *m, int n_seq, int n_ctx, model_kv_type type, model_kv **out,
                          kn_err *err) {
    *out = NULL;
    kv_geom g;
    kn_status st = model_kv_geom(m, type, &g, err);
    if (st != KN_OK) return st;
    kv_opts o = {.n_seq = n_seq, .n_ctx = n_ctx, .block_size = 32};
    return kv_cache_create(&g, &o, out, err);
}
