/*
 * cmd_eval.c — `kiln eval`: teacher-forced logits over a whole prompt file,
 * printed as the top-k ids/logits and the logsumexp at every position (the
 * format the agreement tests compare with llama.cpp's).
 */
#include "cli.h"
#include "cli_model.h"

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

typedef struct opts {
    cli_model_args m; /* -m -f -t -b --json --mmap */
    long long k;      /* --top-k */
    model_kv_type kv_type;
} opts;

/* Fills *o from argv. Returns -1 to go on, else the exit status (2). */
static int parse_opts(int argc, char **argv, opts *o) {
    *o = (opts){.m = {.threads = kn_default_threads(), .batch = 512}, .k = 8, .kv_type = MODEL_KV_F16};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int took = cli_model_arg("eval", argc, argv, &i, &o->m);
        if (took < 0) return 2;
        if (took) continue;
        if (!strcmp(a, "--kv-type")) {
            if (!cli_kv_type_flag("eval", argc, argv, &i, &o->kv_type)) return 2;
        } else if (!strcmp(a, "--top-k")) {
            if (!cli_int_flag("eval", argc, argv, &i, 1, 1024, &o->k)) return 2;
        } else {
            fprintf(stderr, "kiln eval: unknown option '%s' (see kiln eval --help)\n", a);
            return 2;
        }
    }
    if (!o->m.model || !o->m.file || !o->m.json) {
        fprintf(stderr, "kiln eval: needs -m FILE, -f PROMPT_FILE and --json (see kiln eval --help)\n");
        return 2;
    }
    return -1;
}

/* One position's {"ids", "logits", "logsumexp"} from its V logits; top has
 * room for k. */
static json_t *position_json(const float *L, int32_t V, int k, idlogit *top) {
    topk(L, V, k, top);
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
    return row;
}

/* What the teacher-forced pass needs, sized for `batch` tokens a call. */
typedef struct pass {
    model_ctx *ctx;
    model_kv *kv;
    int32_t *pos, *seq; /* [batch] */
    uint8_t *want;      /* [batch], all 1: every position's logits */
    float *logits;      /* [batch][V] */
    idlogit *top;       /* [k] */
} pass;

/* Runs toks[0..n) in calls of `batch` tokens and appends every position's
 * row to jp. False (printed) when a forward call fails. */
static bool eval_positions(pass *p, const int32_t *toks, size_t n, long long batch, int32_t V, int k,
                           json_t *jp) {
    kn_err err = {0};
    kn_progress prog;
    kn_progress_begin(&prog, "eval", n);
    for (size_t s = 0; s < n; s += (size_t)batch) {
        int len = (int)(n - s < (size_t)batch ? n - s : (size_t)batch);
        for (int i = 0; i < len; i++) p->pos[i] = (int32_t)(s + (size_t)i);
        model_batch b = {.n_tokens = len, .token = toks + s, .pos = p->pos, .seq = p->seq, .logits = p->want};
        if (model_forward(p->ctx, p->kv, &b, p->logits, &err) != KN_OK) {
            fprintf(stderr, "kiln eval: %s\n", err.msg);
            return false;
        }
        for (int i = 0; i < len; i++)
            json_array_append_new(jp, position_json(p->logits + (size_t)i * V, V, k, p->top));
        kn_progress_update(&prog, s + (size_t)len, NULL);
    }
    kn_progress_end(&prog);
    return true;
}

int cmd_eval(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc >= 0) return rc;
    rc = 1;
    const char *model_path = o.m.model, *file = o.m.file;
    long long k = o.k, batch = o.m.batch;
    kn_err err = {0};
    char *text = NULL;
    size_t text_len = 0;
    kn_pool *pool = NULL;
    model *m = NULL;
    tok_vocab *vocab = NULL;
    int32_t *toks = NULL;
    pass p = {0};
    json_t *root = NULL;

    if (!cli_read_file("eval", file, 256u << 20, &text, &text_len)) return 1;
    kn_cpu_level lvl;
    tensor_ops ops;
    if (!cli_kernels("eval", &lvl, &ops)) goto done;
    if (!(pool = kn_pool_create((int)o.m.threads))) goto oom;
    if (!cli_model_load("eval", model_path, &o.m.load, &m)) goto done;
    if (!cli_model_vocab("eval", model_path, m, &vocab)) goto done;
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
    if (model_kv_create(m, 1, (int)n, o.kv_type, &p.kv, &err) != KN_OK ||
        model_ctx_create(m, &ops, pool, (int)batch, &p.ctx, &err) != KN_OK) {
        fprintf(stderr, "kiln eval: %s\n", err.msg);
        goto done;
    }
    const int32_t V = m->hp.n_vocab;
    p.pos = malloc((size_t)batch * sizeof *p.pos);
    p.seq = calloc((size_t)batch, sizeof *p.seq);
    p.want = malloc((size_t)batch);
    p.logits = malloc((size_t)batch * V * sizeof *p.logits);
    p.top = malloc((size_t)k * sizeof *p.top);
    root = json_object();
    json_t *jt = json_array(), *jp = json_array();
    if (!p.pos || !p.seq || !p.want || !p.logits || !p.top || !root || !jt || !jp) goto oom;
    json_object_set_new(root, "prompt_tokens", jt);
    json_object_set_new(root, "positions", jp);
    memset(p.want, 1, (size_t)batch);
    for (size_t i = 0; i < n; i++) json_array_append_new(jt, json_integer(toks[i]));
    if (!eval_positions(&p, toks, n, batch, V, (int)k, jp)) goto done;
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
    free(p.top);
    free(p.logits);
    free(p.want);
    free(p.seq);
    free(p.pos);
    free(toks);
    model_ctx_destroy(p.ctx);
    kv_cache_destroy(p.kv);
    tok_vocab_destroy(vocab);
    model_destroy(m);
    kn_pool_destroy(pool);
    free(text);
    return rc;
}
