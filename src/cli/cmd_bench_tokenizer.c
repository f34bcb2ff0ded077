/*
 * cmd_bench_tokenizer.c — `kiln bench tokenizer -m FILE.gguf [--json] [--mb N]`:
 * encode and decode throughput (MB/s of text, one thread) of a model's
 * tokenizer on a few MB of mixed English, code and non-Latin text generated
 * in-process from a fixed seed. Measures only; asserts nothing.
 */
#include "cli.h"
#include "cli_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: kiln bench tokenizer -m FILE.gguf [--json] [--mb N] [--special]\n\n"
               "Encode/decode MB/s on N MB (default 4) of generated mixed text (English,\n"
               "code, Cyrillic, CJK, Arabic, emoji), single thread.\n"
               "  --special  parse special-token text while encoding (as `kiln tokenize`)\n");
}

static const char *const EN[] = {
    "the", "of", "and", "a", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are", "as", "with",
    "his", "they", "I", "at", "be", "this", "have", "from", "or", "one", "had", "by", "word", "but", "not", "what",
    "all", "were", "we", "when", "your", "can", "said", "there", "use", "an", "each", "which", "she", "do", "how",
    "their", "if", "will", "up", "other", "about", "out", "many", "then", "them", "these", "so", "some", "her",
    "would", "make", "like", "him", "into", "time", "has", "look", "two", "more", "write", "go", "see", "number",
    "no", "way", "could", "people", "my", "than", "first", "water", "been", "call", "who", "oil", "its", "now",
    "find", "long", "down", "day", "did", "get", "come", "made", "may", "part", "tokenizer", "inference",
    "throughput", "benchmark", "don't", "it's", "we'll", "they're", "1984", "3.14159", "2024-07-26",
};
static const char *const PUNCT[] = {", ", ". ", "! ", "? ", "; ", ": ", " - ", " (", ") ", "\n", "\n\n", " \"", "\" "};
static const char *const CODE[] = {
    "for (int i = 0; i < n; i++) {\n    sum += a[i] * b[i];\n}\n",
    "def tokenize(text: str) -> list[int]:\n    return [vocab[w] for w in text.split()]\n",
    "    if (err != NULL) {\n        return kn_fail(err, KN_EINVAL, \"bad input: %s\", name);\n    }\n",
    "const result = await fetch(`/api/v1/models/${id}`, { method: 'POST' });\n",
    "#include <stdio.h>\nint main(void) { printf(\"hello, world\\n\"); return 0; }\n",
    "SELECT name, COUNT(*) AS n FROM users WHERE age >= 18 GROUP BY name ORDER BY n DESC;\n",
    "\tx = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)\n",
};
static const char *const OTHER[] = {
    "Привет, как дела? ", "Съешь же ещё этих мягких французских булок. ", "我想在苹果公司工作。", "今天天气很好，我们去公园吧。",
    "東京は日本の首都です。", "こんにちは、世界！", "مرحبا بالعالم، كيف حالك؟ ", "Γειά σου Κόσμε! ", "안녕하세요 세계 ",
    "🦙🚀 ✅ 😶‍🌫️ ", "Ünïcödé tëxt wîth àccénts. ", "नमस्ते दुनिया ",
};

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#define PICK(arr, s) (arr[rng_next(s) % (sizeof arr / sizeof arr[0])])

static char *gen_text(size_t target, size_t *len) {
    char *buf = malloc(target + 1024);
    if (!buf) return NULL;
    uint64_t seed = 42;
    size_t n = 0;
    while (n < target) {
        uint64_t r = rng_next(&seed) % 100;
        const char *s;
        if (r < 70) {
            /* an English sentence */
            int words = 5 + (int)(rng_next(&seed) % 12);
            for (int w = 0; w < words && n < target; w++) {
                s = PICK(EN, &seed);
                size_t l = strlen(s);
                if (w) buf[n++] = ' ';
                memcpy(buf + n, s, l);
                if (w == 0 && buf[n] >= 'a' && buf[n] <= 'z') buf[n] = (char)(buf[n] - 32);
                n += l;
            }
            s = PICK(PUNCT, &seed);
        } else if (r < 85) {
            s = PICK(CODE, &seed);
        } else {
            s = PICK(OTHER, &seed);
        }
        size_t l = strlen(s);
        memcpy(buf + n, s, l);
        n += l;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

int cmd_bench_tokenizer(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) { usage(stdout); return 0; }
    const char *model = NULL;
    bool json = false, special = false;
    long long mb = 4;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) {
            if (!(model = cli_flag_value("bench tokenizer", argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!strcmp(argv[i], "--special")) {
            special = true;
        } else if (!strcmp(argv[i], "--mb")) {
            const char *s = cli_flag_value("bench tokenizer", argc, argv, &i);
            if (!s || !cli_parse_int(s, 1, 256, &mb)) { fprintf(stderr, "kiln bench tokenizer: --mb takes 1..256\n"); return 2; }
        } else {
            fprintf(stderr, "kiln bench tokenizer: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!model) { fprintf(stderr, "kiln bench tokenizer: -m FILE.gguf is required\n"); return 2; }
    kn_err err = {0};
    tok_vocab *v = NULL;
    double t0, t_load = 0;
    if (!cli_vocab_open("bench tokenizer", model, &v, &t_load)) return 1;
    size_t len = 0;
    char *text = gen_text((size_t)mb << 20, &len);
    tok_encoder *e = tok_encoder_create(v);
    tok_decoder_opts o = {.special = true};
    tok_decoder *d = tok_decoder_create(v, &o);
    if (!text || !e || !d) { fprintf(stderr, "kiln bench tokenizer: out of memory\n"); return 1; }
    /* encode: best of 3, each with a new encoder (cold word cache) */
    double best_enc = 1e30;
    size_t n = 0;
    for (int rep = 0; rep < 3; rep++) {
        /* a fresh encoder each time: its word cache starts cold */
        tok_encoder_destroy(e);
        if (!(e = tok_encoder_create(v))) return 1;
        t0 = kn_now_s();
        if (tok_encoder_encode(e, text, len, false, special, NULL, 0, &n, &err) != KN_OK) {
            fprintf(stderr, "kiln bench tokenizer: %s\n", err.msg);
            return 1;
        }
        double t = kn_now_s() - t0;
        if (t < best_enc) best_enc = t;
    }
    size_t nids;
    const int32_t *ids0 = tok_encoder_ids(e, &nids);
    int32_t *ids = malloc(nids * sizeof(int32_t) + 1);
    if (!ids) return 1;
    memcpy(ids, ids0, nids * sizeof(int32_t));
    double best_dec = 1e30;
    size_t out_bytes = 0;
    for (int rep = 0; rep < 3; rep++) {
        tok_decoder_reset(d);
        out_bytes = 0;
        t0 = kn_now_s();
        for (size_t i = 0; i < nids; i++) {
            const char *p;
            size_t pl;
            tok_decoder_feed(d, ids[i], &p, &pl, NULL);
            out_bytes += pl;
        }
        const char *p;
        size_t pl;
        tok_decoder_flush(d, &p, &pl);
        out_bytes += pl;
        double t = kn_now_s() - t0;
        if (t < best_dec) best_dec = t;
    }
    double mbs = (double)len / (1 << 20);
    if (json) {
        printf("{\"model\":\"%s\",\"family\":\"%s\",\"pre\":\"%s\",\"n_vocab\":%d,\"load_s\":%.4f,\"text_bytes\":%zu,"
               "\"tokens\":%zu,\"bytes_per_token\":%.3f,\"encode_s\":%.4f,\"encode_mb_s\":%.2f,\"decode_s\":%.4f,"
               "\"decode_mb_s\":%.2f,\"decode_roundtrip_bytes\":%zu}\n",
               model, tok_family_name(tok_vocab_family(v)), tok_vocab_pre(v), tok_n_vocab(v), t_load, len, nids,
               (double)len / (double)(nids ? nids : 1), best_enc, mbs / best_enc, best_dec, mbs / best_dec, out_bytes);
    } else {
        printf("tokenizer %s (%s, pre %s, %d tokens), loaded in %.3f s\n", model, tok_family_name(tok_vocab_family(v)),
               tok_vocab_pre(v), tok_n_vocab(v), t_load);
        printf("text      %.2f MB mixed English/code/non-Latin -> %zu tokens (%.2f bytes/token)\n", mbs, nids,
               (double)len / (double)(nids ? nids : 1));
        printf("encode    %8.2f MB/s  (%.3f s, best of 3, 1 thread)\n", mbs / best_enc, best_enc);
        printf("decode    %8.2f MB/s  (%.3f s, streaming, best of 3)\n", mbs / best_dec, best_dec);
    }
    free(ids);
    tok_decoder_destroy(d);
    tok_encoder_destroy(e);
    free(text);
    tok_vocab_destroy(v);
    return 0;
}
