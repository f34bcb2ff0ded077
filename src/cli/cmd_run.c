/*
 * cmd_run.c — `kiln run`: load a model, tokenize a prompt, prefill it and
 * stream the sampled continuation to stdout.
 */
#include "cli.h"
#include "engine/chat.h"
#include "engine/sampler.h"
#include "model/model.h"
#include "tokenizer/tok.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: kiln run -m FILE.gguf (-p TEXT | -f FILE) [options]\n\n"
            "Generates text from a prompt and streams it (not the prompt) to stdout.\n"
            "Timings go to stderr.\n\n"
            "options:\n"
            "  -m, --model FILE       GGUF model\n"
            "  -p, --prompt TEXT      prompt text\n"
            "  -f, --file FILE        read the prompt from a file (verbatim)\n"
            "  -n, --n-predict N      tokens to generate (default 128; -1 = until EOS or context end)\n"
            "  -c, --ctx-size N       context size (default: the model's, at most 4096)\n"
            "  -t, --threads N        threads (default: online CPUs)\n"
            "  -b, --batch-size N     prefill chunk size (default 512)\n"
            "      --kv-type T        KV cache type: f16 (default) or q8_0 (half the memory)\n"
            "      --mmap             compute from the file mapping instead of a copy in huge pages\n"
            "                         (less memory and faster load; slower decode)\n"
            "      --temp T           temperature (default 0.8; 0 = greedy)\n"
            "      --top-k K          top-k (default 40; 0 = off)\n"
            "      --top-p P          top-p (default 0.95; 1 = off)\n"
            "      --min-p P          min-p (default 0.05; 0 = off)\n"
            "      --typical P        typical-p (default 1 = off)\n"
            "      --repeat-penalty X repetition penalty (default 1 = off)\n"
            "      --repeat-last-n N  tokens the penalties look back on (default 64)\n"
            "      --presence-penalty X, --frequency-penalty X\n"
            "  -s, --seed S           RNG seed (default 0x5eed)\n"
            "      --chat             format the prompt with the model's chat template, as one user message\n"
            "      --ignore-eos       keep generating past end-of-generation tokens\n");
}

int cmd_run(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *model_path = NULL, *prompt = NULL, *prompt_file = NULL;
    long long n_predict = 128, n_ctx = 0, threads = kn_default_threads(), batch = 512;
    bool ignore_eos = false, chat = false;
    model_kv_type kv_type = MODEL_KV_F16;
    model_load_opts load_opts = {0};
    eng_sampler_params sp = eng_sampler_defaults();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long long iv;
        double fv;
#define VAL()                                                                                                  \
    do {                                                                                                       \
        if (!(v = cli_flag_value("run", argc, argv, &i))) return 2;                                            \
    } while (0)
#define INT(lo, hi, dst)                                                                                       \
    do {                                                                                                       \
        VAL();                                                                                                 \
        if (!cli_parse_int(v, lo, hi, &iv)) {                                                                  \
            fprintf(stderr, "kiln run: %s expects an integer in [%lld, %lld], got '%s'\n", a, (long long)(lo), \
                    (long long)(hi), v);                                                                       \
            return 2;                                                                                          \
        }                                                                                                      \
        dst = iv;                                                                                              \
    } while (0)
#define FLT(dst)                                                                                               \
    do {                                                                                                       \
        VAL();                                                                                                 \
        if (!cli_parse_float(v, &fv)) {                                                                        \
            fprintf(stderr, "kiln run: %s expects a number, got '%s'\n", a, v);                                \
            return 2;                                                                                          \
        }                                                                                                      \
        dst = (float)fv;                                                                                       \
    } while (0)
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) { VAL(); model_path = v; }
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { VAL(); prompt = v; }
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) { VAL(); prompt_file = v; }
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) INT(-1, 1 << 24, n_predict);
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) INT(0, 1 << 24, n_ctx);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) INT(1, 1024, threads);
        else if (!strcmp(a, "-b") || !strcmp(a, "--batch-size")) INT(1, 65536, batch);
        else if (!strcmp(a, "--temp")) FLT(sp.temp);
        else if (!strcmp(a, "--top-k")) INT(0, 1 << 24, sp.top_k);
        else if (!strcmp(a, "--top-p")) FLT(sp.top_p);
        else if (!strcmp(a, "--min-p")) FLT(sp.min_p);
        else if (!strcmp(a, "--typical")) FLT(sp.typical_p);
        else if (!strcmp(a, "--repeat-penalty")) FLT(sp.repeat_penalty);
        else if (!strcmp(a, "--repeat-last-n")) INT(0, 1 << 20, sp.penalty_last_n);
        else if (!strcmp(a, "--presence-penalty")) FLT(sp.presence_penalty);
        else if (!strcmp(a, "--frequency-penalty")) FLT(sp.frequency_penalty);
        else if (!strcmp(a, "-s") || !strcmp(a, "--seed")) { INT(0, INT64_MAX, iv); sp.seed = (uint64_t)iv; }
        else if (!strcmp(a, "--ignore-eos")) ignore_eos = true;
        else if (!strcmp(a, "--chat")) chat = true;
        else if (!strcmp(a, "--mmap")) load_opts.mmap_weights = true;
        else if (!strcmp(a, "--kv-type")) {
            VAL();
            if (!model_kv_type_parse(v, &kv_type)) {
                fprintf(stderr, "kiln run: --kv-type expects f16 or q8_0, got '%s'\n", v);
                return 2;
            }
        }
        else {
            fprintf(stderr, "kiln run: unknown option '%s' (see kiln run --help)\n", a);
            return 2;
        }
#undef VAL
#undef INT
#undef FLT
    }
    if (!model_path || (!prompt && !prompt_file) || (prompt && prompt_file)) {
        fprintf(stderr, "kiln run: needs -m FILE and one of -p TEXT or -f FILE (see kiln run --help)\n");
        return 2;
    }

    int rc = 1;
    kn_err err = {0};
    char *file_prompt = NULL;
    size_t prompt_len = 0;
    kn_pool *pool = NULL;
    model *m = NULL;
    tok_vocab *vocab = NULL;
    tok_decoder *dec = NULL;
    model_kv *kv = NULL;
    model_ctx *ctx = NULL;
    eng_sampler *smp = NULL;
    eng_chat *chat_fmt = NULL;
    int32_t *toks = NULL;
    float *logits = NULL;
    int32_t *pos = NULL, *seq = NULL;

    if (prompt_file) {
        if (kn_read_file(prompt_file, 64u << 20, &file_prompt, &prompt_len, &err) != KN_OK) {
            fprintf(stderr, "kiln run: %s\n", err.msg);
            return 1;
        }
        prompt = file_prompt;
    } else {
        prompt_len = strlen(prompt);
    }

    kn_cpu_level lvl;
    if (kn_cpu_select(&lvl, &err) != KN_OK) {
        fprintf(stderr, "kiln run: %s\n", err.msg);
        goto done;
    }
    tensor_ops ops;
    tensor_ops_init(&ops, lvl);
    pool = kn_pool_create((int)threads);
    if (!pool) {
        fprintf(stderr, "kiln run: cannot start %lld threads\n", threads);
        goto done;
    }

    double t0 = kn_now_s();
    if (model_load(model_path, &load_opts, &m, &err) != KN_OK) {
        fprintf(stderr, "kiln run: %s: %s\n", model_path, err.msg);
        goto done;
    }
    if (tok_vocab_load(m->gguf, &vocab, &err) != KN_OK) {
        fprintf(stderr, "kiln run: %s: tokenizer: %s\n", model_path, err.msg);
        goto done;
    }
    const model_hparams *hp = &m->hp;
    if (n_ctx == 0) n_ctx = hp->n_ctx_train > 0 && hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
    if (hp->n_ctx_train > 0 && n_ctx > hp->n_ctx_train) {
        KN_WARN("context %lld exceeds the model's trained context %d; using %d", n_ctx, hp->n_ctx_train,
                hp->n_ctx_train);
        n_ctx = hp->n_ctx_train;
    }

    size_t n_prompt = 0;
    if (chat) {
        const char *used = NULL;
        if (eng_chat_create(m->gguf, vocab, &chat_fmt, &used, &err) != KN_OK) {
            fprintf(stderr, "kiln run: chat template: %s\n", err.msg);
            goto done;
        }
        KN_INFO("chat template: %s", used ? used : "model");
        json_t *msgs = json_pack("[{s:s, s:s%}]", "role", "user", "content", prompt, prompt_len);
        kn_status cst = msgs ? eng_chat_tokenize(chat_fmt, msgs, NULL, &toks, &n_prompt, &err) : KN_ENOMEM;
        json_decref(msgs);
        if (cst != KN_OK) {
            fprintf(stderr, "kiln run: chat template: %s\n", err.msg);
            goto done;
        }
    } else {
        kn_status st = tok_encode(vocab, prompt, prompt_len, true, true, NULL, 0, &n_prompt, &err);
        if ((st != KN_OK && st != KN_ERANGE) || n_prompt == 0) {
            fprintf(stderr, "kiln run: cannot tokenize the prompt: %s\n", n_prompt ? err.msg : "it is empty");
            goto done;
        }
        toks = malloc(n_prompt * sizeof *toks);
        if (!toks || tok_encode(vocab, prompt, prompt_len, true, true, toks, n_prompt, &n_prompt, &err) != KN_OK) {
            fprintf(stderr, "kiln run: cannot tokenize the prompt: %s\n", err.msg);
            goto done;
        }
    }
    if (n_prompt == 0) {
        fprintf(stderr, "kiln run: the prompt is empty\n");
        goto done;
    }
    if ((long long)n_prompt >= n_ctx) {
        fprintf(stderr, "kiln run: the prompt has %zu tokens, more than the context size %lld allows\n", n_prompt,
                n_ctx);
        goto done;
    }
    if (batch > (long long)n_prompt) batch = (long long)n_prompt;
    if (model_kv_create(m, 1, (int)n_ctx, kv_type, &kv, &err) != KN_OK ||
        model_ctx_create(m, &ops, pool, (int)batch, &ctx, &err) != KN_OK ||
        eng_sampler_create(&sp, hp->n_vocab, &smp, &err) != KN_OK) {
        fprintf(stderr, "kiln run: %s\n", err.msg);
        goto done;
    }
    tok_decoder_opts dopts = {.special = false, .strip_space = false, .replace_invalid = false};
    dec = tok_decoder_create(vocab, &dopts);
    logits = malloc((size_t)hp->n_vocab * sizeof *logits);
    pos = malloc((size_t)batch * sizeof *pos);
    seq = calloc((size_t)batch, sizeof *seq);
    if (!dec || !logits || !pos || !seq) {
        fprintf(stderr, "kiln run: out of memory\n");
        goto done;
    }
    double t_load = kn_now_s() - t0;
    KN_INFO("loaded %s (%s, %d layers, dim %d, vocab %d) in %.2f s with kernel set %s, %lld threads; "
            "memory: weights %.1f MiB (%s), KV %.1f MiB (%s, ctx %lld), scratch %.1f MiB",
            model_path, hp->arch_name, hp->n_layer, hp->n_embd, hp->n_vocab, t_load, kn_cpu_level_name(lvl),
            threads, (double)m->weight_bytes / 1048576.0,
            m->weights_mem ? (m->huge_pages ? "copied, huge pages" : "copied") : "mapped",
            (double)model_kv_bytes(kv) / 1048576.0, model_kv_type_name(kv_type), n_ctx,
            (double)model_ctx_bytes(ctx) / 1048576.0);

    /* prefill in chunks; only the last token's logits are needed */
    double t1 = kn_now_s();
    for (size_t s = 0; s < n_prompt; s += (size_t)batch) {
        int len = (int)((n_prompt - s) < (size_t)batch ? (n_prompt - s) : (size_t)batch);
        for (int i = 0; i < len; i++) pos[i] = (int32_t)(s + (size_t)i);
        model_batch b = {.n_tokens = len, .token = toks + s, .pos = pos, .seq = seq, .logits = NULL};
        if (model_forward(ctx, kv, &b, logits, &err) != KN_OK) {
            fprintf(stderr, "kiln run: %s\n", err.msg);
            goto done;
        }
    }
    for (size_t i = 0; i < n_prompt; i++) eng_sampler_accept(smp, toks[i]);
    double t_prompt = kn_now_s() - t1;

    double t2 = kn_now_s();
    long long n_gen = 0;
    int32_t cur_pos = (int32_t)n_prompt;
    char last = '\n';
    bool wrote = false;
    while (n_predict < 0 || n_gen < n_predict) {
        int32_t tok = eng_sampler_sample(smp, logits);
        if (!ignore_eos && tok_is_eog(vocab, tok)) break;
        eng_sampler_accept(smp, tok);
        n_gen++;
        const char *piece;
        size_t plen;
        if (tok_decoder_feed(dec, tok, &piece, &plen, &err) == KN_OK && plen) {
            fwrite(piece, 1, plen, stdout);
            fflush(stdout);
            last = piece[plen - 1];
            wrote = true;
        }
        if (cur_pos >= n_ctx) break;
        model_batch b = {.n_tokens = 1, .token = &tok, .pos = &cur_pos, .seq = seq, .logits = NULL};
        if (model_forward(ctx, kv, &b, logits, &err) != KN_OK) {
            fprintf(stderr, "\nkiln run: %s\n", err.msg);
            goto done;
        }
        cur_pos++;
    }
    const char *rest;
    size_t rlen;
    tok_decoder_flush(dec, &rest, &rlen);
    if (rlen) {
        fwrite(rest, 1, rlen, stdout);
        last = rest[rlen - 1];
        wrote = true;
    }
    if (wrote && last != '\n') fputc('\n', stdout);
    fflush(stdout);
    double t_gen = kn_now_s() - t2;
    fprintf(stderr,
            "kiln run: load %.2f s | prompt %zu tokens in %.3f s (%.1f tok/s) | generated %lld tokens in %.3f s "
            "(%.1f tok/s)\n",
            t_load, n_prompt, t_prompt, t_prompt > 0 ? (double)n_prompt / t_prompt : 0.0, n_gen, t_gen,
            t_gen > 0 ? (double)n_gen / t_gen : 0.0);
    rc = 0;
done:
    free(pos);
    free(seq);
    free(logits);
    free(toks);
    eng_sampler_destroy(smp);
    eng_chat_destroy(chat_fmt);
    model_ctx_destroy(ctx);
    model_kv_destroy(kv);
    tok_decoder_destroy(dec);
    tok_vocab_destroy(vocab);
    model_destroy(m);
    kn_pool_destroy(pool);
    free(file_prompt);
    return rc;
}
