/*
 * cmd_eval.c — `kiln eval`: teacher-forced logits over a whole prompt file,
 * printed as the top-k ids/logits and the logsumexp at every position (the
 * format the agreement tests compare with llama.cpp's).
 */
#include "cli.h"
#include "model/model.h"
#include "tokenizer/tok.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: kiln eval -m FILE.gguf -f PROMPT_FILE [--top-k K] [-t THREADS] [-b BATCH] --json\n\n"
               "Runs the prompt file (read verbatim, every byte) teacher-forced and prints, for every\n"
               "position, the top-K ids and logits and the logsumexp of all logits:\n"
               "  {\"prompt_tokens\": [...], \"positions\": [{\"ids\": [...], \"logits\": [...], \"logsumexp\": x}, ...]}\n"
               "Tokenization follows llama.cpp: BOS when the model asks for it, special tokens not parsed.\n\n"
               "options:\n"
               "  -m, --model FILE     GGUF model\n"
               "  -f, --file FILE      prompt file\n"
               "      --top-k K        ids per position (default 8, at most 1024)\n"
               "  -t, --threads N      threads (default: online CPUs)\n"
               "  -b, --batch-size N   tokens per forward call (default 512)\n"
               "      --kv-type T      KV cache type: f16 (default) or q8_0\n"
               "      --mmap           compute from the file mapping (no copy into huge pages)\n"
               "      --json           JSON output (the only format)\n");
}

typedef struct idlogit {
    int32_t id;
    float logit;
} idlogit;

static int by_logit_desc(const void *a, const void *b) {
    const idlogit *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Top-k of one row by a bounded insertion (k is small). */
static void topk(const float *l, int32_t n, int k, idlogit *out) {
    int have = 0;
    for (int32_t i = 0; i < n; i++) {
        idlogit c = {i, l[i]};
        if (have == k && by_logit_desc(&c, &out[k - 1]) >= 0) continue;
        int j = have < k ? have++ : k - 1;
        while (j > 0 && by_logit_desc(&c, &out[j - 1]) < 0) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = c;
    }
}

int cmd_eval(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *model_path = NULL, *file = NULL;
    long long k = 8, threads = kn_default_threads(), batch = 512;
    bool json = false;
    model_kv_type kv_type = MODEL_KV_F16;
    model_load_opts load_opts = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long long *dst = NULL, lo = 1, hi = 0;
        if (!strcmp(a, "-m") || !strcmp(a, "--model") || !strcmp(a, "-f") || !strcmp(a, "--file")) {
            if (!(v = cli_flag_value("eval", argc, argv, &i))) return 2;
            if (a[1] == 'm' || a[2] == 'm') model_path = v;
            else file = v;
            continue;
        }
        if (!strcmp(a, "--json")) {
            json = true;
            continue;
        }
        if (!strcmp(a, "--mmap")) {
            load_opts.mmap_weights = true;
            continue;
        }
        if (!strcmp(a, "--kv-type")) {
            if (!(v = cli_flag_value("eval", argc, argv, &i))) return 2;
            if (!model_kv_type_parse(v, &kv_type)) {
                fprintf(stderr, "kiln eval: --kv-type expects f16 or q8_0, got '%s'\n", v);
                return 2;
            }
            continue;
        }
        if (!strcmp(a, "--top-k")) dst = &k, hi = 1024;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) dst = &threads, hi = 1024;
        else if (!strcmp(a, "-b") || !strcmp(a, "--batch-size")) dst = &batch, hi = 65536;
        else {
            fprintf(stderr, "kiln eval: unknown option '%s' (see kiln eval --help)\n", a);
            return 2;
        }
        if (!(v = cli_flag_value("eval", argc, argv, &i))) return 2;
        if (!cli_parse_int(v, lo, hi, dst)) {
            fprintf(stderr, "kiln eval: %s expects an integer in [%lld, %lld], got '%s'\n", a, lo, hi, v);
            return 2;
        }
    }
    if (!model_path || !file || !json) {
        fprintf(stderr, "kiln eval: needs -m FILE, -f PROMPT_FILE and --json (see kiln eval --help)\n");
        return 2;
    }
    int rc = 1;
    kn_err err = {0};
    char *text = NULL;
    size_t text_len = 0;
    kn_pool *pool = NULL;
    model *m = NULL;
    tok_vocab *vocab = NULL;
    model_kv *kv = NULL;
    model_ctx *ctx = NULL;
    int32_t *toks = NULL, *pos = NULL, *seq = NULL;
    uint8_t *want = NULL;
    float *logits = NULL;
    idlogit *top = NULL;
    json_t *root = NULL;

    if (kn_read_file(file, 256u << 20, &text, &text_len, &err) != KN_OK) {
        fprintf(stderr, "kiln eval: %s\n", err.msg);
        return 1;
    }
    kn_cpu_level lvl;
    if (kn_cpu_select(&lvl, &err) != KN_OK) {
        fprintf(stderr, "kiln eval: %s\n", err.msg);
        goto done;
    }
    tensor_ops ops;
    tensor_ops_init(&ops, lvl);
    if (!(pool = kn_pool_create((int)threads))) goto oom;
    if (model_load(model_path, &load_opts, &m, &err) != KN_OK) {
        fprintf(stderr, "kiln eval: %s: %s\n", model_path, err.msg);
        goto done;
    }
    if (tok_vocab_load(m->gguf, &vocab, &err) != KN_OK) {
        fprintf(stderr, "kiln eval: %s: tokenizer: %s\n", model_path, err.msg);
        goto done;
    }
    size_t n = 0;
    if (tok_encode_alloc(vocab, text, text_len, true, false, &toks, &n, &err) != KN_OK || n == 0) {
        fprintf(stderr, "kiln eval: cannot tokenize %s: %s\n", file, n ? err.msg : "no tokens");
        goto done;
    }
    if (m->hp.n_ctx_train > 0 && n > (size_t)m->hp.n_ctx_train) {
        fprintf(stderr, "kiln eval: %s has %zu tokens, more than the model's context %d\n", file, n,
                m->hp.n_ctx_train);
        goto done;
    }
    if (batch > (long long)n) batch = (long long)n;
    if (k > m->hp.n_vocab) k = m->hp.n_vocab;
    if (model_kv_create(m, 1, (int)n, kv_type, &kv, &err) != KN_OK ||
        model_ctx_create(m, &ops, pool, (int)batch, &ctx, &err) != KN_OK) {
        fprintf(stderr, "kiln eval: %s\n", err.msg);
        goto done;
    }
    const int32_t V = m->hp.n_vocab;
    pos = malloc((size_t)batch * sizeof *pos);
    seq = calloc((size_t)batch, sizeof *seq);
    want = malloc((size_t)batch);
    logits = malloc((size_t)batch * V * sizeof *logits);
    top = malloc((size_t)k * sizeof *top);
    root = json_object();
    json_t *jt = json_array(), *jp = json_array();
    if (!pos || !seq || !want || !logits || !top || !root || !jt || !jp) goto oom;
    json_object_set_new(root, "prompt_tokens", jt);
    json_object_set_new(root, "positions", jp);
    memset(want, 1, (size_t)batch);
    for (size_t i = 0; i < n; i++) json_array_append_new(jt, json_integer(toks[i]));
    kn_progress prog;
    kn_progress_begin(&prog, "eval", n);
    for (size_t s = 0; s < n; s += (size_t)batch) {
        int len = (int)(n - s < (size_t)batch ? n - s : (size_t)batch);
        for (int i = 0; i < len; i++) pos[i] = (int32_t)(s + (size_t)i);
        model_batch b = {.n_tokens = len, .token = toks + s, .pos = pos, .seq = seq, .logits = want};
        if (model_forward(ctx, kv, &b, logits, &err) != KN_OK) {
            fprintf(stderr, "kiln eval: %s\n", err.msg);
            goto done;
        }
        for (int i = 0; i < len; i++) {
            const float *L = logits + (size_t)i * V;
            topk(L, V, (int)k, top);
            double mx = top[0].logit, sum = 0.0;
            for (int32_t v = 0; v < V; v++) sum += exp((double)L[v] - mx);
            json_t *row = json_object(), *ids = json_array(), *lg = json_array();
            for (int j = 0; j < k; j++) {
                json_array_append_new(ids, json_integer(top[j].id));
                json_array_append_new(lg, json_real(top[j].logit));
            }
            json_object_set_new(row, "ids", ids);
            json_object_set_new(row, "logits", lg);
            json_object_set_new(row, "logsumexp", json_real(mx + log(sum)));
            json_array_append_new(jp, row);
        }
        kn_progress_update(&prog, s + (size_t)len, NULL);
    }
    kn_progress_end(&prog);
    if (json_dumpf(root, stdout, JSON_COMPACT) != 0) {
        fprintf(stderr, "kiln eval: cannot write the output\n");
        goto done;
    }
    fputc('\n', stdout);
    rc = 0;
    goto done;
oom:
    fprintf(stderr, "kiln eval: out of memory\n");
done:
    json_decref(root);
    free(top);
    free(logits);
    free(want);
    free(seq);
    free(pos);
    free(toks);
    model_ctx_destroy(ctx);
    kv_cache_destroy(kv);
    tok_vocab_destroy(vocab);
    model_destroy(m);
    kn_pool_destroy(pool);
    free(text);
    return rc;
}
