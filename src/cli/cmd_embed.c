/*
 * cmd_embed.c — `kiln embed`: pooled embeddings of every line of a file
 * with an encoder (bert) model, several lines per forward pass
 * (model_encode), printed as JSON or as one summary line per input.
 */
#include "cli.h"
#include "cli_model.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: kiln embed -m FILE.gguf -f TEXTS [--normalize] [--json] [-t THREADS] [--truncate]\n\n"
            "Embeds each line of TEXTS (an empty line too; a final newline ends the last line) with an\n"
            "encoder model (bert: bge, MiniLM, e5, ...): WordPiece tokens with [CLS]/[SEP] added, one\n"
            "forward pass per batch of lines, and the model's pooling (mean, CLS or last; mean when the\n"
            "model declares none). The vectors are as pooled, L2-normalized only with --normalize.\n\n"
            "output: one line per input: index, token count, norm, the first values and the text;\n"
            "with --json: {\"n_embd\": n, \"items\": [{\"text\": ..., \"tokens\": [...], \"embedding\": "
            "[...]}, ...]}\n\n"
            "options:\n"
            "  -m, --model FILE      GGUF encoder model\n"
            "  -f, --file FILE       texts, one per line\n"
            "      --normalize       L2-normalize every vector\n"
            "      --json            JSON output\n"
            "      --truncate        cut inputs longer than the model's context (keeping [SEP] last)\n"
            "                        instead of failing\n"
            "  -t, --threads N       threads (default: online CPUs)\n"
            "  -b, --batch-size N    tokens per forward pass (default 2048, at least the model's context)\n"
            "      --mmap            compute from the file mapping (no copy into huge pages)\n");
}

typedef struct line {
    const char *text;
    size_t len;
    int32_t *toks; /* owned */
    size_t n;
} line;

/* Splits text into lines (in place: no copies); a final newline ends the
 * last line rather than starting an empty one; a trailing CR is dropped. */
static line *split_lines(char *text, size_t len, size_t *n_out) {
    size_t cap = 1;
    for (size_t i = 0; i < len; i++)
        cap += text[i] == '\n';
    line *ls = calloc(cap, sizeof *ls);
    if (!ls) return NULL;
    size_t n = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && text[i] != '\n') continue;
        if (i == len && start == len) break;
        size_t e = i;
        if (e > start && text[e - 1] == '\r') e--;
        ls[n].text = text + start;
        ls[n].len = e - start;
        n++;
        start = i + 1;
    }
    *n_out = n;
    return ls;
}

static void print_plain(size_t i, const line *l, const float *v, int64_t E) {
    double ss = 0.0;
    for (int64_t d = 0; d < E; d++)
        ss += (double)v[d] * v[d];
    printf("%zu\t%zu tokens\tnorm %.6f\t[", i, l->n, sqrt(ss));
    for (int64_t d = 0; d < E && d < 4; d++)
        printf("%s%.6f", d ? ", " : "", v[d]);
    printf("%s]\t%.*s\n", E > 4 ? ", ..." : "", (int)(l->len > 200 ? 200 : l->len), l->text);
}

typedef struct opts {
    cli_model_args m; /* -m -f -t -b --json --mmap */
    bool normalize, truncate;
} opts;

/* Fills *o from argv. Returns -1 to go on, else the exit status (2). */
static int parse_opts(int argc, char **argv, opts *o) {
    *o = (opts){.m = {.threads = kn_default_threads(), .batch = 2048}};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int took = cli_model_arg("embed", argc, argv, &i, &o->m);
        if (took < 0) return 2;
        if (took) continue;
        if (!strcmp(a, "--normalize"))
            o->normalize = true;
        else if (!strcmp(a, "--truncate"))
            o->truncate = true;
        else {
            fprintf(stderr, "kiln embed: unknown option '%s' (see kiln embed --help)\n", a);
            return 2;
        }
    }
    if (!o->m.model || !o->m.file) {
        fprintf(stderr, "kiln embed: needs -m FILE.gguf and -f TEXTS (see kiln embed --help)\n");
        return 2;
    }
    return -1;
}

/* Tokenizes every line ([CLS]/[SEP] added) into lines[i].toks/.n; a line
 * longer than n_ctx fails unless truncate, which keeps [SEP] last. */
static bool tokenize_lines(const tok_vocab *vocab, line *lines, size_t n_lines, size_t n_ctx, bool truncate) {
    kn_err err = {0};
    for (size_t i = 0; i < n_lines; i++) {
        line *l = &lines[i];
        size_t n = 0;
        if (tok_encode_alloc(vocab, l->text, l->len, true, false, &l->toks, &n, &err) != KN_OK) {
            fprintf(stderr, "kiln embed: line %zu: %s\n", i + 1, err.msg);
            return false;
        }
        if (n == 0) {
            fprintf(stderr, "kiln embed: line %zu gives no tokens\n", i + 1);
            return false;
        }
        if (n > n_ctx && !truncate) {
            fprintf(stderr,
                    "kiln embed: line %zu has %zu tokens, more than the model's context of %zu tokens "
                    "(--truncate cuts it)\n",
                    i + 1, n, n_ctx);
            return false;
        }
        l->n = n > n_ctx ? n_ctx : n;
        if (n > n_ctx) { /* keep [SEP] as the last token */
            if (tok_sep(vocab) != TOK_NULL && l->toks[n - 1] == tok_sep(vocab))
                l->toks[n_ctx - 1] = l->toks[n - 1];
            fprintf(stderr, "kiln embed: line %zu: %zu tokens truncated to the model's context of %zu\n",
                    i + 1, n, n_ctx);
        }
    }
    return true;
}

/* Embeds every line into vecs[i * E ...], consecutive lines per forward
 * pass while their tokens fit in `batch`. False (printed) on an error:
 * *oom tells out of memory from a failed forward. */
static bool embed_lines(model_ctx *ctx, const line *lines, size_t n_lines, size_t batch, bool normalize,
                        float *vecs, int64_t E, bool *oom) {
    const int32_t **btoks = malloc(n_lines * sizeof *btoks);
    size_t *blens = malloc(n_lines * sizeof *blens);
    bool ok = btoks && blens;
    *oom = !ok;
    for (size_t i = 0; ok && i < n_lines; i++)
        btoks[i] = lines[i].toks, blens[i] = lines[i].n;
    for (size_t s = 0; ok && s < n_lines;) {
        size_t e = s, tokens = 0;
        while (e < n_lines && tokens + blens[e] <= batch)
            tokens += blens[e++];
        kn_err err = {0};
        if (model_encode(ctx, btoks + s, blens + s, e - s, normalize, vecs + s * (size_t)E, &err) != KN_OK) {
            fprintf(stderr, "kiln embed: %s\n", err.msg);
            ok = false;
        }
        s = e;
    }
    free(blens);
    free(btoks);
    return ok;
}

/* Prints {"n_embd": E, "items": [{"text", "tokens", "embedding"}, ...]}.
 * Returns 0, or 1 after printing why. */
static int print_json(const line *lines, size_t n_lines, const float *vecs, int64_t E) {
    int rc = 1;
    json_t *root = json_object(), *items = json_array();
    if (!root || !items || json_object_set_new(root, "n_embd", json_integer(E)) ||
        json_object_set(root, "items", items))
        goto oom;
    for (size_t i = 0; i < n_lines; i++) {
        json_t *it = json_object(), *jt = json_array(), *je = json_array();
        if (!it || !jt || !je || json_array_append_new(items, it)) {
            json_decref(jt);
            json_decref(je);
            goto oom;
        }
        json_t *jtext = json_stringn(lines[i].text, lines[i].len);
        if (!jtext) {
            fprintf(stderr, "kiln embed: line %zu is not valid UTF-8, which JSON cannot carry\n", i + 1);
            json_decref(jt);
            json_decref(je);
            goto done;
        }
        json_object_set_new(it, "text", jtext);
        json_object_set_new(it, "tokens", jt);
        json_object_set_new(it, "embedding", je);
        for (size_t k = 0; k < lines[i].n; k++)
            json_array_append_new(jt, json_integer(lines[i].toks[k]));
        for (int64_t d = 0; d < E; d++)
            json_array_append_new(je, json_real(vecs[i * (size_t)E + (size_t)d]));
    }
    if (json_dumpf(root, stdout, JSON_COMPACT | JSON_REAL_PRECISION(9)) != 0 || fputc('\n', stdout) == EOF ||
        fflush(stdout) != 0) {
        fprintf(stderr, "kiln embed: cannot write the output\n");
        goto done;
    }
    rc = 0;
    goto done;
oom:
    fprintf(stderr, "kiln embed: out of memory\n");
done:
    json_decref(items);
    json_decref(root);
    return rc;
}

int cmd_embed(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc >= 0) return rc;
    rc = 1;
    const char *model_path = o.m.model, *file = o.m.file;
    kn_err err = {0};
    char *text = NULL;
    size_t text_len = 0, n_lines = 0;
    line *lines = NULL;
    kn_pool *pool = NULL;
    model *m = NULL;
    tok_vocab *vocab = NULL;
    model_ctx *ctx = NULL;
    float *vecs = NULL;

    if (!cli_read_file("embed", file, 256u << 20, &text, &text_len)) return 1;
    if (!(lines = split_lines(text, text_len, &n_lines))) goto oom;
    if (n_lines == 0) {
        fprintf(stderr, "kiln embed: %s has no lines to embed\n", file);
        goto done;
    }
    kn_cpu_level lvl;
    tensor_ops ops;
    if (!cli_kernels("embed", &lvl, &ops)) goto done;
    if (!(pool = kn_pool_create((int)o.m.threads))) goto oom;
    if (!cli_model_load("embed", model_path, &o.m.load, &m)) goto done;
    if (!model_is_encoder(m)) {
        fprintf(
            stderr,
            "kiln embed: %s is a %s (decoder) model; kiln embed needs an encoder (embedding) model such as "
            "bert\n",
            model_path, m->hp.arch_name);
        goto done;
    }
    if (!cli_model_vocab("embed", model_path, m, &vocab)) goto done;
    const size_t n_ctx = (size_t)m->hp.n_ctx_train;
    if (!tokenize_lines(vocab, lines, n_lines, n_ctx, o.truncate)) goto done;
    long long batch = o.m.batch;
    if ((size_t)batch < n_ctx) batch = (long long)n_ctx;
    if (model_ctx_create(m, &ops, pool, (int)batch, &ctx, &err) != KN_OK) {
        fprintf(stderr, "kiln embed: %s\n", err.msg);
        goto done;
    }
    const int64_t E = m->hp.n_embd;
    if (!(vecs = malloc(n_lines * (size_t)E * sizeof *vecs))) goto oom;
    bool oom;
    if (!embed_lines(ctx, lines, n_lines, (size_t)batch, o.normalize, vecs, E, &oom)) {
        if (oom) goto oom;
        goto done;
    }
    if (o.m.json) {
        rc = print_json(lines, n_lines, vecs, E);
        goto done;
    }
    for (size_t i = 0; i < n_lines; i++)
        print_plain(i, &lines[i], vecs + i * (size_t)E, E);
    rc = fflush(stdout) == 0 ? 0 : 1;
    goto done;
oom:
    fprintf(stderr, "kiln embed: out of memory\n");
done:
    free(vecs);
    if (lines)
        for (size_t i = 0; i < n_lines; i++)
            free(lines[i].toks);
    free(lines);
    model_ctx_destroy(ctx);
    tok_vocab_destroy(vocab);
    model_destroy(m);
    kn_pool_destroy(pool);
    free(text);
    return rc;
}
