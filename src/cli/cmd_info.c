/*
 * cmd_info.c — `kiln info FILE [--json]`: describes a GGUF file (any
 * architecture, vocab-only files included): architecture, size, parameter
 * count, the quant mix, the hyperparameters under `<arch>.*`, and the
 * tokenizer. With --json, stdout carries exactly one JSON object (built with
 * jansson) whose missing values are null.
 */
#include "cli.h"

#include "kiln/gguf.h"
#include "kiln/tensor.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: kiln info FILE [--json]\n\n"
               "Describes a GGUF file: architecture, name, parameter count, file size, tensors per\n"
               "type, context/embedding/ffn lengths, layers, heads, rope theta and scaling, the\n"
               "architecture's features (experts, sliding window, RoPE frequency factors),\n"
               "vocabulary and tokenizer, BOS/EOS ids and whether a chat template is present.\n\n"
               "  --json   print one JSON object (missing values are null)\n");
}

/* What `kiln info` reports; has_* / NULL mark missing values. */
typedef struct info {
    gguf_str arch, name, tok_model, tok_pre;
    bool has_arch, has_name, has_tok_model, has_tok_pre;
    uint64_t params, file_size;
    int64_t ctx_len, embd, blocks, heads, heads_kv, ffn, vocab, bos, eos; /* -1 = missing */
    double rope_base;
    bool has_rope;
    bool chat_template;
    /* the architecture's features (-1 / NULL: absent) */
    int64_t experts, experts_used, expert_ffn, window;
    const char *rope_factors; /* "rope_freqs" (Llama 3.1), "long/short" (LongRoPE) */
    gguf_str rope_scaling;
    bool has_rope_scaling;
    double rope_factor;
} info;

/* An integer hyperparameter: a scalar, or (for per-layer arrays) the
 * largest element. -1 when absent or not an integer. */
static int64_t get_int(const gguf_ctx *g, const char *key) {
    int64_t v;
    if (gguf_get_i64(g, key, &v) == KN_OK) return v;
    int64_t k = gguf_find_key(g, key);
    gguf_type et;
    uint64_t n;
    if (k < 0 || gguf_kv_get_arr(g, k, &et, &n, NULL) != KN_OK || n == 0) return -1;
    int64_t best = -1;
    for (uint64_t i = 0; i < n; i++) {
        if (gguf_arr_get_i64(g, k, i, &v) != KN_OK) return -1;
        if (v > best) best = v;
    }
    return best;
}

static int64_t get_arch_int(const gguf_ctx *g, gguf_str arch, bool has_arch, const char *suffix) {
    if (!has_arch) return -1;
    char key[256];
    snprintf(key, sizeof key, "%.*s.%s", (int)(arch.len > 100 ? 100 : arch.len), arch.data, suffix);
    return get_int(g, key);
}

static void collect(const gguf_ctx *g, info *in) {
    memset(in, 0, sizeof *in);
    in->has_arch = gguf_get_str(g, "general.architecture", &in->arch) == KN_OK;
    in->has_name = gguf_get_str(g, "general.name", &in->name) == KN_OK;
    in->has_tok_model = gguf_get_str(g, "tokenizer.ggml.model", &in->tok_model) == KN_OK;
    in->has_tok_pre = gguf_get_str(g, "tokenizer.ggml.pre", &in->tok_pre) == KN_OK;
    in->file_size = gguf_file_size(g);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) in->params += gguf_tensor(g, i)->nelements;
    in->ctx_len = get_arch_int(g, in->arch, in->has_arch, "context_length");
    in->embd = get_arch_int(g, in->arch, in->has_arch, "embedding_length");
    in->blocks = get_arch_int(g, in->arch, in->has_arch, "block_count");
    in->heads = get_arch_int(g, in->arch, in->has_arch, "attention.head_count");
    in->heads_kv = get_arch_int(g, in->arch, in->has_arch, "attention.head_count_kv");
    in->ffn = get_arch_int(g, in->arch, in->has_arch, "feed_forward_length");
    if (in->has_arch) {
        char key[256];
        snprintf(key, sizeof key, "%.*s.rope.freq_base", (int)(in->arch.len > 100 ? 100 : in->arch.len),
                 in->arch.data);
        in->has_rope = gguf_get_f64(g, key, &in->rope_base) == KN_OK;
    }
    in->experts = get_arch_int(g, in->arch, in->has_arch, "expert_count");
    in->experts_used = get_arch_int(g, in->arch, in->has_arch, "expert_used_count");
    in->expert_ffn = get_arch_int(g, in->arch, in->has_arch, "expert_feed_forward_length");
    in->window = get_arch_int(g, in->arch, in->has_arch, "attention.sliding_window");
    if (in->window == 0) in->window = -1;
    in->rope_factors = gguf_find_tensor(g, "rope_freqs.weight")          ? "rope_freqs (per-frequency factors)"
                       : gguf_find_tensor(g, "rope_factors_long.weight") ? "long/short (LongRoPE)"
                                                                          : NULL;
    in->rope_factor = -1;
    if (in->has_arch) {
        char key[256];
        const int al = (int)(in->arch.len > 100 ? 100 : in->arch.len);
        snprintf(key, sizeof key, "%.*s.rope.scaling.type", al, in->arch.data);
        in->has_rope_scaling = gguf_get_str(g, key, &in->rope_scaling) == KN_OK;
        snprintf(key, sizeof key, "%.*s.rope.scaling.factor", al, in->arch.data);
        if (gguf_get_f64(g, key, &in->rope_factor) != KN_OK) in->rope_factor = -1;
    }
    gguf_type et;
    uint64_t n;
    if (gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, NULL) == KN_OK)
        in->vocab = (int64_t)n;
    else
        in->vocab = get_arch_int(g, in->arch, in->has_arch, "vocab_size");
    in->bos = get_int(g, "tokenizer.ggml.bos_token_id");
    in->eos = get_int(g, "tokenizer.ggml.eos_token_id");
    in->chat_template = gguf_find_key(g, "tokenizer.chat_template") >= 0;
}

/* A JSON string from file bytes; bytes that are not valid UTF-8 become '?'. */
static json_t *json_str(gguf_str s) {
    json_t *j = json_stringn(s.data, s.len);
    if (j) return j;
    char *tmp = malloc(s.len + 1);
    if (!tmp) return json_null();
    for (uint64_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.data[i];
        tmp[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    j = json_stringn(tmp, s.len);
    free(tmp);
    return j ? j : json_null();
}

static json_t *json_int_or_null(int64_t v) { return v < 0 ? json_null() : json_integer(v); }

/* Tensor counts per type, in type-id order. */
static void count_types(const gguf_ctx *g, uint64_t counts[Q_TYPE_COUNT]) {
    memset(counts, 0, sizeof(uint64_t) * Q_TYPE_COUNT);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        uint32_t t = gguf_tensor(g, i)->type;
        if (t < Q_TYPE_COUNT) counts[t]++; /* the reader rejects unknown types */
    }
}

static int print_json(const gguf_ctx *g, const info *in) {
    json_t *o = json_object();
    json_t *types = json_object();
    uint64_t counts[Q_TYPE_COUNT];
    count_types(g, counts);
    for (int t = 0; t < Q_TYPE_COUNT; t++)
        if (counts[t]) json_object_set_new(types, q_type_name((uint32_t)t), json_integer((json_int_t)counts[t]));
    json_object_set_new(o, "architecture", in->has_arch ? json_str(in->arch) : json_null());
    json_object_set_new(o, "name", in->has_name ? json_str(in->name) : json_null());
    json_object_set_new(o, "parameters", json_integer((json_int_t)in->params));
    json_object_set_new(o, "file_size", json_integer((json_int_t)in->file_size));
    json_object_set_new(o, "tensor_types", types);
    json_object_set_new(o, "context_length", json_int_or_null(in->ctx_len));
    json_object_set_new(o, "embedding_length", json_int_or_null(in->embd));
    json_object_set_new(o, "block_count", json_int_or_null(in->blocks));
    json_object_set_new(o, "head_count", json_int_or_null(in->heads));
    json_object_set_new(o, "head_count_kv", json_int_or_null(in->heads_kv));
    json_object_set_new(o, "feed_forward_length", json_int_or_null(in->ffn));
    json_object_set_new(o, "rope_freq_base", in->has_rope ? json_real(in->rope_base) : json_null());
    json_object_set_new(o, "rope_scaling", in->has_rope_scaling ? json_str(in->rope_scaling) : json_null());
    json_object_set_new(o, "rope_scaling_factor", in->rope_factor >= 0 ? json_real(in->rope_factor) : json_null());
    json_object_set_new(o, "rope_factors", in->rope_factors ? json_string(in->rope_factors) : json_null());
    json_object_set_new(o, "sliding_window", json_int_or_null(in->window));
    if (in->experts > 0) {
        json_t *x = json_object();
        json_object_set_new(x, "count", json_integer(in->experts));
        json_object_set_new(x, "used", json_int_or_null(in->experts_used));
        json_object_set_new(x, "feed_forward_length", json_int_or_null(in->expert_ffn));
        json_object_set_new(o, "experts", x);
    } else {
        json_object_set_new(o, "experts", json_null());
    }
    json_object_set_new(o, "vocab_size", json_int_or_null(in->vocab));
    json_object_set_new(o, "tokenizer_model", in->has_tok_model ? json_str(in->tok_model) : json_null());
    json_object_set_new(o, "tokenizer_pre", in->has_tok_pre ? json_str(in->tok_pre) : json_null());
    json_object_set_new(o, "bos_id", json_int_or_null(in->bos));
    json_object_set_new(o, "eos_id", json_int_or_null(in->eos));
    json_object_set_new(o, "chat_template", json_boolean(in->chat_template));
    int rc = json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    json_decref(o);
    return rc == 0 ? 0 : 1;
}

static void print_str(const char *label, bool has, gguf_str s) {
    if (has)
        printf("%-20s %.*s\n", label, (int)(s.len > 200 ? 200 : s.len), s.data);
    else
        printf("%-20s -\n", label);
}

static void print_int(const char *label, int64_t v) {
    if (v < 0)
        printf("%-20s -\n", label);
    else
        printf("%-20s %lld\n", label, (long long)v);
}

static void human(double v, const char *const *units, double base, char *buf, size_t cap) {
    int u = 0;
    while (v >= base && units[u + 1]) {
        v /= base;
        u++;
    }
    snprintf(buf, cap, u ? "%.2f %s" : "%.0f%s", v, units[u]);
}

static void print_text(const gguf_ctx *g, const info *in) {
    static const char *const counts_u[] = {"", "K", "M", "B", "T", NULL};
    static const char *const bytes_u[] = {" B", "KiB", "MiB", "GiB", "TiB", NULL};
    char h[64];
    print_str("architecture:", in->has_arch, in->arch);
    print_str("name:", in->has_name, in->name);
    human((double)in->params, counts_u, 1000, h, sizeof h);
    printf("%-20s %s (%llu)\n", "parameters:", h, (unsigned long long)in->params);
    human((double)in->file_size, bytes_u, 1024, h, sizeof h);
    printf("%-20s %s (%llu bytes, GGUF v%u, %lld tensors, %lld keys)\n", "file size:", h,
           (unsigned long long)in->file_size, gguf_version(g), (long long)gguf_n_tensors(g), (long long)gguf_n_kv(g));
    uint64_t counts[Q_TYPE_COUNT];
    count_types(g, counts);
    printf("%-20s", "tensor types:");
    bool any = false;
    for (int t = 0; t < Q_TYPE_COUNT; t++) {
        if (!counts[t]) continue;
        printf(" %s:%llu", q_type_name((uint32_t)t), (unsigned long long)counts[t]);
        any = true;
    }
    printf("%s\n", any ? "" : " -");
    print_int("context length:", in->ctx_len);
    print_int("embedding length:", in->embd);
    print_int("layers:", in->blocks);
    print_int("heads:", in->heads);
    print_int("kv heads:", in->heads_kv);
    print_int("ffn length:", in->ffn);
    if (in->has_rope)
        printf("%-20s %g\n", "rope theta:", in->rope_base);
    else
        printf("%-20s -\n", "rope theta:");
    if (in->has_rope_scaling || in->rope_factor >= 0)
        printf("%-20s %.*s%s x%g\n", "rope scaling:", in->has_rope_scaling ? (int)in->rope_scaling.len : 6,
               in->has_rope_scaling ? in->rope_scaling.data : "linear", "", in->rope_factor >= 0 ? in->rope_factor : 1);
    if (in->rope_factors) printf("%-20s %s\n", "rope factors:", in->rope_factors);
    if (in->window > 0) printf("%-20s %lld positions\n", "sliding window:", (long long)in->window);
    if (in->experts > 0)
        printf("%-20s %lld, %lld used per token, expert ffn %lld\n", "experts:", (long long)in->experts,
               (long long)in->experts_used, (long long)in->expert_ffn);
    print_int("vocab size:", in->vocab);
    print_str("tokenizer model:", in->has_tok_model, in->tok_model);
    print_str("tokenizer pre:", in->has_tok_pre, in->tok_pre);
    print_int("bos id:", in->bos);
    print_int("eos id:", in->eos);
    printf("%-20s %s\n", "chat template:", in->chat_template ? "yes" : "no");
}

int cmd_info(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *path = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "kiln info: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (path) {
            fprintf(stderr, "kiln info: more than one FILE given\n");
            usage(stderr);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    gguf_ctx *g = NULL;
    kn_err err = {0};
    if (gguf_open(path, &g, &err) != KN_OK) {
        fprintf(stderr, "kiln info: %s: %s\n", path, err.msg);
        return 1;
    }
    info in;
    collect(g, &in);
    int rc = 0;
    if (json)
        rc = print_json(g, &in);
    else
        print_text(g, &in);
    gguf_close(g);
    return rc;
}
