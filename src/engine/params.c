/*
 * params.c — the speculative modes, and the response-cache key of a
 * generation derived from its parameters through one table (see kiln/engine.h).
 */
#include "kiln/engine.h"

#include <stdlib.h>
#include <string.h>

const char *eng_spec_name(eng_spec_mode m) {
    switch (m) {
    case ENG_SPEC_NGRAM: return "ngram";
    case ENG_SPEC_DRAFT: return "draft";
    default: return "none";
    }
}

bool eng_spec_parse(const char *s, eng_spec_mode *out) {
    if (!strcmp(s, "none") || !strcmp(s, "off")) *out = ENG_SPEC_NONE;
    else if (!strcmp(s, "ngram")) *out = ENG_SPEC_NGRAM;
    else if (!strcmp(s, "draft")) *out = ENG_SPEC_DRAFT;
    else return false;
    return true;
}

/* ---- the key ------------------------------------------------------------------ */

#define F(field) offsetof(eng_gen_params, field)

/* Every field of eng_gen_params and eng_sampler_params, in struct order. */
static const eng_key_field KEY_FIELDS[] = {
    {"sp.temp", F(sp.temp), ENG_KT_F32, ENG_KEY_ALWAYS, NULL},
    {"sp.top_k", F(sp.top_k), ENG_KT_I32, ENG_KEY_SAMPLED, NULL},
    {"sp.top_p", F(sp.top_p), ENG_KT_F32, ENG_KEY_SAMPLED, NULL},
    {"sp.min_p", F(sp.min_p), ENG_KT_F32, ENG_KEY_SAMPLED, NULL},
    {"sp.typical_p", F(sp.typical_p), ENG_KT_F32, ENG_KEY_SAMPLED, NULL},
    {"sp.repeat_penalty", F(sp.repeat_penalty), ENG_KT_F32, ENG_KEY_PENALTIES, NULL},
    {"sp.presence_penalty", F(sp.presence_penalty), ENG_KT_F32, ENG_KEY_PENALTIES, NULL},
    {"sp.frequency_penalty", F(sp.frequency_penalty), ENG_KT_F32, ENG_KEY_PENALTIES, NULL},
    {"sp.penalty_last_n", F(sp.penalty_last_n), ENG_KT_I32, ENG_KEY_PENALTIES, NULL},
    {"sp.seed", F(sp.seed), ENG_KT_U64, ENG_KEY_SAMPLED, NULL},
    {"sp.bias", F(sp.bias), ENG_KT_BIAS, ENG_KEY_ALWAYS, NULL},
    {"sp.n_bias", F(sp.n_bias), ENG_KT_PART, ENG_KEY_ALWAYS, "the length of sp.bias, keyed with it"},
    {"n_predict", F(n_predict), ENG_KT_I32, ENG_KEY_ALWAYS, NULL},
    {"ignore_eos", F(ignore_eos), ENG_KT_BOOL, ENG_KEY_ALWAYS, NULL},
    {"stops", F(stops), ENG_KT_STOPS, ENG_KEY_ALWAYS, NULL},
    {"n_stops", F(n_stops), ENG_KT_PART, ENG_KEY_ALWAYS, "the length of stops, keyed with it"},
    {"n_logprobs", F(n_logprobs), ENG_KT_I32, ENG_KEY_ALWAYS, NULL},
    {"t_origin", F(t_origin), ENG_KT_F64, ENG_KEY_NEVER, "when the request arrived: timing only"},
    /* drafts are verified exactly for greedy requests; a sampled token's
     * random numbers depend on the drafts it was checked against */
    {"spec", F(spec), ENG_KT_ENUM, ENG_KEY_SAMPLED, NULL},
    {"spec_max", F(spec_max), ENG_KT_I32, ENG_KEY_SAMPLED, NULL},
    {"stall_timeout_s", F(stall_timeout_s), ENG_KT_F64, ENG_KEY_NEVER,
     "how long a reader may take nothing: it cancels, it never changes the text"},
    {"grammar", F(grammar), ENG_KT_STR, ENG_KEY_ALWAYS, NULL},
    {"markup", F(markup), ENG_KT_BOOL, ENG_KEY_ALWAYS, NULL},
};

#undef F

const eng_key_field *eng_gen_key_fields(size_t *n) {
    *n = sizeof KEY_FIELDS / sizeof *KEY_FIELDS;
    return KEY_FIELDS;
}

static void put_bytes(kn_buf *b, const void *p, size_t n) {
    uint64_t len = n;
    kn_buf_add(b, &len, sizeof len, 0);
    kn_buf_add(b, p, n, 0);
}
static void put_str(kn_buf *b, const char *s) { put_bytes(b, s ? s : "", s ? strlen(s) : 0); }
static void put_u64(kn_buf *b, uint64_t v) { kn_buf_add(b, &v, sizeof v, 0); }

static void put_instance(kn_buf *b, const char *kind, const eng_key_ctx *k) {
    put_str(b, kind);
    put_str(b, k->name);
    put_str(b, k->quant);
    put_str(b, k->sha256);
    put_str(b, k->kv_type);
    put_u64(b, (uint64_t)k->ops_level);
    put_u64(b, k->ops_vnni);
}

static int cmp_bias(const void *a, const void *b) {
    const eng_logit_bias *x = a, *y = b;
    return x->token < y->token ? -1 : x->token > y->token;
}

/* The bias entries sorted by token (the order a client wrote them in does
 * not change the output). */
static void put_bias(kn_buf *b, const eng_sampler_params *sp) {
    int32_t n = sp->n_bias > 0 ? sp->n_bias : 0;
    put_u64(b, (uint64_t)n);
    if (n == 0) return;
    eng_logit_bias *sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted) { /* keyed unsorted: at worst a miss */
        put_bytes(b, sp->bias, (size_t)n * sizeof *sp->bias);
        return;
    }
    memcpy(sorted, sp->bias, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_bias);
    for (int32_t i = 0; i < n; i++) {
        put_u64(b, (uint64_t)(int64_t)sorted[i].token);
        put_bytes(b, &sorted[i].bias, sizeof sorted[i].bias);
    }
    free(sorted);
}

static void put_field(kn_buf *b, const eng_key_field *f, const eng_gen_params *p) {
    const char *at = (const char *)p + f->offset;
    put_str(b, f->name);
    switch (f->type) {
    case ENG_KT_I32: put_bytes(b, at, sizeof(int32_t)); break;
    case ENG_KT_U64: put_bytes(b, at, sizeof(uint64_t)); break;
    case ENG_KT_F32: put_bytes(b, at, sizeof(float)); break;
    case ENG_KT_F64: put_bytes(b, at, sizeof(double)); break;
    case ENG_KT_BOOL: put_u64(b, *(const bool *)at); break;
    case ENG_KT_ENUM: put_bytes(b, at, sizeof(int)); break;
    case ENG_KT_STOPS:
        put_u64(b, p->n_stops);
        for (size_t i = 0; i < p->n_stops; i++) put_str(b, p->stops[i]);
        break;
    case ENG_KT_BIAS: put_bias(b, &p->sp); break;
    case ENG_KT_PART: break;
    case ENG_KT_STR: put_str(b, *(const char *const *)at); break;
    }
}

rc_key eng_gen_key(const eng_key_ctx *k, const int32_t *ids, size_t n_ids, const eng_gen_params *p) {
    kn_buf b = {0};
    put_instance(&b, "kiln.response.3", k);
    put_bytes(&b, ids, n_ids * sizeof *ids);
    const eng_sampler_params *sp = &p->sp;
    bool sampled = sp->temp > 0.0f;
    bool penalties = sp->repeat_penalty != 1.0f || sp->presence_penalty != 0.0f || sp->frequency_penalty != 0.0f;
    for (size_t i = 0; i < sizeof KEY_FIELDS / sizeof *KEY_FIELDS; i++) {
        const eng_key_field *f = &KEY_FIELDS[i];
        bool use = f->use == ENG_KEY_ALWAYS || (f->use == ENG_KEY_SAMPLED && sampled) ||
                   (f->use == ENG_KEY_PENALTIES && penalties);
        if (use) put_field(&b, f, p);
    }
    if (sampled) put_str(&b, k->draft);
    rc_key key = rc_key_of(b.p ? b.p : "", b.n);
    kn_buf_free(&b);
    return key;
}

rc_key eng_embed_key(const eng_key_ctx *k, bool normalize, int trunc_ctx, bool tokens, const void *input,
                     size_t bytes) {
    kn_buf b = {0};
    put_instance(&b, "kiln.embedding.1", k);
    put_u64(&b, normalize);
    put_u64(&b, trunc_ctx > 0 ? (uint64_t)trunc_ctx : 0);
    put_u64(&b, tokens);
    put_bytes(&b, input, bytes);
    rc_key key = rc_key_of(b.p ? b.p : "", b.n);
    kn_buf_free(&b);
    return key;
}
