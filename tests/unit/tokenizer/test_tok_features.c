/*
 * test_tok_features.c — tokenizer behaviour beyond the suites: streaming
 * detokenization of multi-byte characters (never a partial UTF-8 sequence,
 * flush raw or as U+FFFD), special-token parsing on/off, BOS/EOS defaults per
 * family and metadata overrides, BERT [CLS]/[SEP] against the embedding
 * references, gemma4's specifics (forced BOS, <0xNN> fallback, "</s>" as
 * text), the per-model whitespace stripping beside special tokens (phi-3's
 * rstrip, a mask token's lstrip), the end-of-generation tokens of each chat
 * format's vocabulary, and hostile metadata written with the GGUF writer
 * (each an error, never a crash).
 */
#include "testutil.h"

#include "kiln/tokenizer.h"
#include "tokenizer/tok_internal.h" /* gemma4's chunking switch, for the equivalence test */

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tok_vocab *load_path(const char *path, kn_err *err) {
    gguf_ctx *g = NULL;
    if (gguf_open(path, &g, err) != KN_OK) return NULL;
    tok_vocab *v = NULL;
    tok_vocab_load(g, &v, err);
    gguf_close(g);
    return v;
}

static tok_vocab *load_shared(const char *rel) {
    char path[1024];
    kn_err err = {0};
    tok_vocab *v = load_path(tu_shared_path(path, sizeof path, rel), &err);
    if (!v) fprintf(stderr, "%s: %s\n", rel, err.msg);
    assert_non_null(v);
    return v;
}

static size_t enc(const tok_vocab *v, const char *s, bool add_special, bool parse_special, int32_t *ids, size_t cap) {
    size_t n = 0;
    kn_err err = {0};
    assert_int_equal(tok_encode(v, s, strlen(s), add_special, parse_special, ids, cap, &n, &err), KN_OK);
    return n;
}

static bool contains(const int32_t *ids, size_t n, int32_t id) {
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id) return true;
    return false;
}

/* Checks that s[0..n) is complete, valid UTF-8. */
static bool valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t l = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!l || i + l > n) return false;
        for (size_t k = 1; k < l; k++)
            if ((s[i + k] & 0xC0) != 0x80) return false;
        i += l;
    }
    return true;
}

static void stream_check(const char *vocab, const char *text) {
    tok_vocab *v = load_shared(vocab);
    int32_t ids[512];
    size_t n = enc(v, text, false, false, ids, 512);
    tok_decoder_opts o = {.special = false, .strip_space = true};
    tok_decoder *d = tok_decoder_create(v, &o);
    assert_non_null(d);
    char out[2048];
    size_t ol = 0;
    bool held = false;
    for (size_t i = 0; i < n; i++) {
        const char *p;
        size_t pl;
        kn_err err;
        assert_int_equal(tok_decoder_feed(d, ids[i], &p, &pl, &err), KN_OK);
        assert_true(valid_utf8((const unsigned char *)p, pl)); /* never a partial character */
        if (tok_decoder_pending(d)) held = true;
        memcpy(out + ol, p, pl);
        ol += pl;
    }
    const char *p;
    size_t pl;
    tok_decoder_flush(d, &p, &pl);
    assert_int_equal(pl, 0);
    assert_int_equal(ol, strlen(text));
    assert_memory_equal(out, text, ol);
    assert_true(held); /* the text had characters split over several tokens */
    tok_decoder_destroy(d);
    tok_vocab_destroy(v);
}

static void test_stream_multibyte(void **state) {
    (void)state;
    const char *text = "Hello 🦙 emoji 😶‍🌫️ and Äpfel, 你好世界, нещо на Български 🚀✅";
    stream_check("tokenizers/ggml-vocab-llama-spm.gguf", text); /* byte fallback <0xNN> */
    stream_check("tokenizers/ggml-vocab-llama-bpe.gguf", text); /* byte-level BPE */
    stream_check("tokenizers/ggml-vocab-qwen2.gguf", text);
    /* gemma4 has a token for every character above; U+10FFFD takes <0xNN> */
    stream_check("models/tiny-gemma3-Q8_0.gguf", "Hello \xF4\x8F\xBF\xBD and 😶‍🌫️\n\n\tx  y");
}

static void test_stream_flush(void **state) {
    (void)state;
    tok_vocab *v = load_shared("tokenizers/ggml-vocab-llama-spm.gguf");
    int32_t f0 = tok_find(v, "<0xF0>", 6), x9f = tok_find(v, "<0x9F>", 6), xff = tok_find(v, "<0xFF>", 6);
    int32_t a = tok_find(v, "a", 1);
    assert_true(f0 >= 0 && x9f >= 0 && xff >= 0 && a >= 0);
    for (int mode = 0; mode < 2; mode++) {
        tok_decoder_opts o = {.replace_invalid = mode == 1};
        tok_decoder *d = tok_decoder_create(v, &o);
        const char *p;
        size_t pl;
        kn_err err;
        assert_int_equal(tok_decoder_feed(d, f0, &p, &pl, &err), KN_OK);
        assert_int_equal(pl, 0);
        assert_int_equal(tok_decoder_feed(d, x9f, &p, &pl, &err), KN_OK);
        assert_int_equal(pl, 0);
        assert_int_equal(tok_decoder_pending(d), 2);
        tok_decoder_flush(d, &p, &pl);
        if (mode == 0) {
            assert_int_equal(pl, 2);
            assert_memory_equal(p, "\xF0\x9F", 2);
        } else {
            assert_int_equal(pl, 3);
            assert_memory_equal(p, "\xEF\xBF\xBD", 3);
        }
        assert_int_equal(tok_decoder_pending(d), 0);
        /* a byte that can never start a character is released at once */
        assert_int_equal(tok_decoder_feed(d, xff, &p, &pl, &err), KN_OK);
        if (mode == 0) {
            assert_int_equal(pl, 1);
            assert_int_equal((unsigned char)p[0], 0xFF);
        } else {
            assert_int_equal(pl, 3);
        }
        /* an incomplete lead followed by ASCII: lead released, then the ASCII */
        tok_decoder_reset(d);
        assert_int_equal(tok_decoder_feed(d, f0, &p, &pl, &err), KN_OK);
        assert_int_equal(tok_decoder_feed(d, a, &p, &pl, &err), KN_OK);
        assert_int_equal(pl, mode == 0 ? 2 : 4);
        assert_int_equal(p[pl - 1], 'a');
        /* bad id */
        assert_int_equal(tok_decoder_feed(d, tok_n_vocab(v), &p, &pl, &err), KN_EINVAL);
        assert_int_equal(tok_decoder_feed(d, -5, &p, &pl, &err), KN_EINVAL);
        tok_decoder_destroy(d);
    }
    tok_vocab_destroy(v);
}

static void test_special_parsing(void **state) {
    (void)state;
    int32_t ids[256];
    size_t n;
    tok_vocab *v = load_shared("tokenizers/ggml-vocab-llama-bpe.gguf");
    n = enc(v, "<|begin_of_text|>Hi<|eot_id|>", false, true, ids, 256);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], 128000);
    assert_int_equal(ids[2], 128009);
    n = enc(v, "<|begin_of_text|>Hi<|eot_id|>", false, false, ids, 256);
    assert_true(n > 3);
    assert_false(contains(ids, n, 128000));
    assert_false(contains(ids, n, 128009));
    assert_true(tok_is_eog(v, 128009));
    assert_true(tok_is_eog(v, tok_eos(v)));
    assert_false(tok_is_eog(v, 9906));
    assert_int_equal(tok_token_type(v, 128000), TOK_TYPE_CONTROL);
    size_t pl;
    tok_token_piece(v, 128000, false, &pl);
    assert_int_equal(pl, 0);
    const char *p = tok_token_piece(v, 128000, true, &pl);
    assert_int_equal(pl, strlen("<|begin_of_text|>"));
    assert_memory_equal(p, "<|begin_of_text|>", pl);
    tok_vocab_destroy(v);

    v = load_shared("tokenizers/ggml-vocab-llama-spm.gguf");
    n = enc(v, "a<s>b</s>", false, true, ids, 256);
    assert_true(contains(ids, n, 1) && contains(ids, n, 2));
    n = enc(v, "a<s>b</s>", false, false, ids, 256);
    assert_false(contains(ids, n, 1) || contains(ids, n, 2));
    tok_vocab_destroy(v);

    /* user-defined tokens are split out even when special parsing is off */
    v = load_shared("tokenizers/ggml-vocab-qwen2.gguf");
    int32_t ud = TOK_NULL;
    for (int32_t i = 0; i < tok_n_vocab(v) && ud == TOK_NULL; i++) {
        size_t l;
        const char *t = tok_token_text(v, i, &l);
        if (tok_token_type(v, i) == TOK_TYPE_USER_DEFINED && !tok_is_control(v, i) && l > 3 && t) ud = i;
    }
    assert_true(ud != TOK_NULL);
    size_t l;
    const char *t = tok_token_text(v, ud, &l);
    char buf[256];
    snprintf(buf, sizeof buf, "x %.*s y", (int)l, t);
    n = enc(v, buf, false, false, ids, 256);
    assert_true(contains(ids, n, ud));
    tok_vocab_destroy(v);
}

static void test_bos_defaults(void **state) {
    (void)state;
    int32_t ids[64];
    size_t n;
    tok_vocab *v = load_shared("tokenizers/ggml-vocab-llama-bpe.gguf"); /* no add_bos key: llama3 family adds BOS */
    assert_true(tok_add_bos(v));
    n = enc(v, "Hi", true, false, ids, 64);
    assert_int_equal(ids[0], 128000);
    assert_int_equal(n, 2);
    tok_vocab_destroy(v);

    v = load_shared("tokenizers/ggml-vocab-gpt-2.gguf"); /* gpt-2 adds nothing */
    assert_false(tok_add_bos(v));
    assert_false(tok_add_eos(v));
    n = enc(v, "Hi", true, false, ids, 64);
    assert_int_equal(n, 1);
    tok_vocab_destroy(v);

    v = load_shared("tokenizers/ggml-vocab-llama-spm.gguf"); /* SPM adds BOS and a space prefix */
    n = enc(v, "Hi", true, false, ids, 64);
    assert_int_equal(ids[0], 1);
    size_t pl;
    const char *p = tok_token_piece(v, ids[1], false, &pl);
    assert_true(pl > 0 && p[0] == ' ');
    tok_vocab_destroy(v);

    v = load_shared("tokenizers/ggml-vocab-bert-bge.gguf"); /* WordPiece: [CLS] ... [SEP] */
    n = enc(v, "Hello world", true, false, ids, 64);
    assert_int_equal(ids[0], 101);
    assert_int_equal(ids[n - 1], 102);
    assert_int_equal(tok_sep(v), 102);
    assert_int_equal(tok_pad(v), 0);
    assert_int_equal(tok_unk(v), 100);
    tok_vocab_destroy(v);

    /* count mode and a short buffer */
    v = load_shared("tokenizers/ggml-vocab-gpt-2.gguf");
    kn_err err;
    assert_int_equal(tok_encode(v, "Hello world again", 17, false, false, NULL, 0, &n, &err), KN_OK);
    assert_int_equal(n, 3);
    assert_int_equal(tok_encode(v, "Hello world again", 17, false, false, ids, 2, &n, &err), KN_ERANGE);
    assert_int_equal(n, 3);
    tok_vocab_destroy(v);
}

/* Copies a shared vocab with one key overridden or removed (via the writer). */
static tok_vocab *load_modified(const char *rel, const char *drop_key, const char *bool_key, bool bool_val,
                                kn_err *err) {
    char path[1024], dir[512], out[1100];
    gguf_ctx *g = NULL;
    assert_int_equal(gguf_open(tu_shared_path(path, sizeof path, rel), &g, err), KN_OK);
    gguf_writer *w = gguf_writer_create();
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        gguf_str k = gguf_kv_key(g, i);
        if (drop_key && gguf_str_eq(k, drop_key)) continue;
        assert_int_equal(gguf_writer_copy_kv(w, g, i), KN_OK);
    }
    if (bool_key) assert_int_equal(gguf_writer_set_bool(w, bool_key, bool_val), KN_OK);
    tu_tmpdir(dir, sizeof dir);
    snprintf(out, sizeof out, "%s/v.gguf", dir);
    assert_int_equal(gguf_writer_write_file(w, out, err), KN_OK);
    gguf_writer_destroy(w);
    gguf_close(g);
    tok_vocab *v = load_path(out, err);
    tu_rmdir(dir);
    return v;
}

static void test_metadata_wins(void **state) {
    (void)state;
    kn_err err = {0};
    int32_t ids[16];
    tok_vocab *v = load_modified("tokenizers/ggml-vocab-llama-bpe.gguf", NULL, "tokenizer.ggml.add_bos_token", false, &err);
    assert_non_null(v);
    assert_false(tok_add_bos(v));
    assert_int_equal(enc(v, "Hi", true, false, ids, 16), 1);
    tok_vocab_destroy(v);
    v = load_modified("tokenizers/ggml-vocab-gpt-2.gguf", NULL, "tokenizer.ggml.add_eos_token", true, &err);
    assert_non_null(v);
    size_t n = enc(v, "Hi", true, false, ids, 16);
    assert_int_equal(ids[n - 1], 50256);
    tok_vocab_destroy(v);
    /* SPM without the add_bos key falls back to adding BOS */
    v = load_modified("tokenizers/ggml-vocab-llama-spm.gguf", "tokenizer.ggml.add_bos_token", NULL, false, &err);
    assert_non_null(v);
    assert_true(tok_add_bos(v));
    tok_vocab_destroy(v);
}

/* BERT tokens against the embedding references (llama.cpp, with [CLS]/[SEP]). */
static void test_bert_reference(void **state) {
    (void)state;
    tok_vocab *v = load_shared("models/tiny-bert-mean-f16.gguf");
    char path[1024];
    json_error_t je;
    json_t *root = json_load_file(tu_shared_path(path, sizeof path, "reference/tiny-bert-mean-f16.embed.json"), 0, &je);
    assert_non_null(root);
    json_t *items = json_object_get(root, "items");
    size_t k;
    json_t *it;
    int checked = 0;
    json_array_foreach(items, k, it) {
        const char *text = json_string_value(json_object_get(it, "text"));
        json_t *want = json_object_get(it, "tokens");
        int32_t ids[512];
        size_t n = enc(v, text, true, false, ids, 512);
        assert_int_equal(n, json_array_size(want));
        for (size_t i = 0; i < n; i++) assert_int_equal(ids[i], json_integer_value(json_array_get(want, i)));
        checked++;
    }
    assert_true(checked >= 3);
    json_decref(root);
    tok_vocab_destroy(v);
}

static void expect_ids(const int32_t *ids, size_t n, const int32_t *want, size_t nw) {
    if (n != nw) fprintf(stderr, "%zu ids, %zu expected\n", n, nw);
    assert_int_equal(n, nw);
    for (size_t i = 0; i < n; i++) assert_int_equal(ids[i], want[i]);
}

static void test_gemma4(void **state) {
    (void)state;
    int32_t ids[64];
    size_t n, pl;
    tok_vocab *v = load_shared("models/tiny-gemma3-Q8_0.gguf"); /* tokenizer.ggml.model = "gemma4" */
    assert_int_equal(tok_vocab_family(v), TOK_FAMILY_GEMMA4);
    assert_string_equal(tok_family_name(TOK_FAMILY_GEMMA4), "gemma4");
    assert_string_equal(tok_vocab_pre(v), "gemma4");
    assert_true(tok_add_bos(v));
    assert_false(tok_add_eos(v));
    assert_int_equal(tok_bos(v), 2);
    assert_int_equal(tok_eos(v), 1);
    assert_int_equal(tok_nl(v), 107);
    n = enc(v, "Hello world", true, false, ids, 64);
    expect_ids(ids, n, (const int32_t[]){2, 9259, 1902}, 3);

    /* a character that is no token: one <0xNN> token per byte */
    const char *rare = "\xF4\x8F\xBF\xBD"; /* U+10FFFD */
    assert_int_equal(tok_find(v, rare, 4), TOK_NULL);
    int32_t want[4];
    for (int i = 0; i < 4; i++) {
        char hex[8];
        snprintf(hex, sizeof hex, "<0x%02X>", (unsigned char)rare[i]);
        want[i] = tok_find(v, hex, 6);
        assert_true(want[i] >= 0);
        assert_int_equal(tok_token_type(v, want[i]), TOK_TYPE_BYTE);
    }
    n = enc(v, rare, false, false, ids, 64);
    expect_ids(ids, n, want, 4);
    char *txt = NULL;
    size_t tl = 0;
    kn_err err = {0};
    assert_int_equal(tok_decode_all(v, ids, n, NULL, &txt, &tl, &err), KN_OK);
    assert_int_equal(tl, 4);
    assert_memory_equal(txt, rare, 4);
    free(txt);

    /* invalid UTF-8 is read as U+FFFD, as llama.cpp reads it */
    int32_t ids2[64];
    n = enc(v, "a\xFF" "b c", false, false, ids, 64);
    size_t n2 = enc(v, "a\xEF\xBF\xBD" "b c", false, false, ids2, 64);
    expect_ids(ids, n, ids2, n2);

    /* the end tokens; "</s>" is plain text here (llama.cpp's Gemma 4 workaround) */
    assert_true(tok_is_eog(v, 1));
    assert_true(tok_is_eog(v, tok_find(v, "<turn|>", 7)));
    assert_true(tok_is_eog(v, tok_find(v, "<|tool_response>", 16)));
    int32_t end_s = tok_find(v, "</s>", 4);
    assert_true(end_s >= 0);
    assert_false(tok_is_eog(v, end_s));
    assert_false(tok_is_control(v, end_s));
    const char *p = tok_token_piece(v, end_s, false, &pl);
    assert_int_equal(pl, 4);
    assert_memory_equal(p, "</s>", 4);

    /* user-defined tokens are split out without special parsing, control ones only with it */
    int32_t quote = tok_find(v, "<|\"|>", 5), turn = tok_find(v, "<turn|>", 7);
    assert_int_equal(tok_token_type(v, quote), TOK_TYPE_USER_DEFINED);
    n = enc(v, "a<|\"|>b", false, false, ids, 64);
    assert_true(contains(ids, n, quote));
    n = enc(v, "a<turn|>b", false, false, ids, 64);
    assert_false(contains(ids, n, turn));
    n = enc(v, "a<turn|>b", false, true, ids, 64);
    assert_true(contains(ids, n, turn));
    tok_vocab_destroy(v);

    /* a file that says add_bos_token = false still gets BOS */
    v = load_modified("models/tiny-gemma3-Q8_0.gguf", NULL, "tokenizer.ggml.add_bos_token", false, &err);
    assert_non_null(v);
    assert_true(tok_add_bos(v));
    n = enc(v, "Hello", true, false, ids, 64);
    expect_ids(ids, n, (const int32_t[]){2, 9259}, 2);
    tok_vocab_destroy(v);
}

/* gemma4 merges each line in chunks cut before U+2581 (tok_gemma4.c): on
 * text made to hit every kind of cut (multiple spaces, '>' before a space,
 * the one glue character of this vocab, ▁ typed in, byte fallback, newlines)
 * the ids must be those of merging whole lines. */
static void test_gemma4_chunks(void **state) {
    (void)state;
    static const char *const P[] = {
        "the", "quick", "brown", "fox", " ", " ", " ", "  ", "   ", ">", " >", "</", " </", "<b>", "</s>", "a>",
        "\n", "\n\n", "\t", "é", "你好", "🦙", "\xE2\x96\x81", "\xF4\x8F\xBF\xBD", "'s", "123", ".", ",", "x",
        "Привет", "->", "=>", "int", "(", ")", "{", "}", "\r\n", "😶‍🌫️", "a▁b",
    };
    size_t cap = 200000, len = 0;
    char *text = malloc(cap + 64);
    assert_non_null(text);
    uint64_t seed = 7;
    while (len < cap) {
        uint64_t z = (seed += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        const char *piece = P[(z ^ (z >> 31)) % (sizeof P / sizeof P[0])];
        size_t pl = strlen(piece);
        memcpy(text + len, piece, pl);
        len += pl;
    }
    tok_vocab *v = load_shared("models/tiny-gemma3-Q8_0.gguf");
    assert_int_equal(v->g4_n_glue, 1); /* '>' of ">▁</" */
    assert_int_equal(v->g4_glue[0], '>');
    int32_t *chunked = NULL, *whole = NULL;
    size_t nc = 0, nw = 0;
    kn_err err = {0};
    assert_int_equal(tok_encode_alloc(v, text, len, true, false, &chunked, &nc, &err), KN_OK);
    v->g4_n_glue = -1; /* no cuts: each line merged at once, as llama.cpp does */
    assert_int_equal(tok_encode_alloc(v, text, len, true, false, &whole, &nw, &err), KN_OK);
    expect_ids(chunked, nc, whole, nw);
    assert_true(nc > len / 8);
    free(chunked);
    free(whole);
    free(text);
    tok_vocab_destroy(v);
}

/* phi-3 (general.name has "phi3"): partitioning eats the whitespace after
 * its special tokens, but for <s>, <unk> and <|endoftext|>, as llama.cpp does */
static void test_phi3_rstrip(void **state) {
    (void)state;
    int32_t ids[64];
    size_t n;
    tok_vocab *v = load_shared("models/tiny-phi3-Q8_0.gguf");
    int32_t hi = tok_find(v, "\xE2\x96\x81Hi", 5);
    assert_true(hi >= 0);
    n = enc(v, "<|user|>\n Hi<|end|>\n<|assistant|>\n", false, true, ids, 64);
    expect_ids(ids, n, (const int32_t[]){32010, hi, 32007, 32001}, 4);
    /* "</s>" too (user-defined in phi-3, but an end token, hence control) */
    n = enc(v, "Hi</s>  \n Hi", false, true, ids, 64);
    expect_ids(ids, n, (const int32_t[]){hi, 2, hi}, 3);
    n = enc(v, "Hi</s>  \n Hi", false, false, ids, 64);
    assert_false(contains(ids, n, 2));
    /* <s> keeps the whitespace after it: more than "<s>" and "▁Hi" */
    n = enc(v, "<s>\nHi", false, true, ids, 64);
    assert_int_equal(ids[0], 1);
    assert_true(contains(ids, n, tok_find(v, "<0x0A>", 6)));
    tok_vocab_destroy(v);

    /* the same Llama-2 vocab without phi-3's name strips nothing */
    v = load_shared("models/tiny-llama31-Q8_0.gguf");
    n = enc(v, "a</s>\nb", false, true, ids, 64);
    assert_true(contains(ids, n, 2));
    assert_true(contains(ids, n, tok_find(v, "<0x0A>", 6)));
    tok_vocab_destroy(v);
}

/* ---- hostile metadata ---- */

typedef struct vspec {
    const char *model;
    const char *const *tokens;
    uint64_t n_tokens;
    const char *const *merges;
    uint64_t n_merges;
    const float *scores;
    uint64_t n_scores;
    const int32_t *types;
    uint64_t n_types;
} vspec;

/* Writes s (and extra's keys) to a temporary vocab-only GGUF and loads it:
 * the vocab, or NULL with *st and err set. */
static tok_vocab *load_built(const vspec *s, void (*extra)(gguf_writer *), kn_status *st, kn_err *err) {
    char dir[512], out[600];
    gguf_writer *w = gguf_writer_create();
    assert_non_null(w);
    if (s->model) gguf_writer_set_str(w, "tokenizer.ggml.model", s->model);
    gguf_writer_set_str(w, "tokenizer.ggml.pre", "gpt-2");
    if (s->tokens) gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", s->tokens, s->n_tokens);
    if (s->merges) gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", s->merges, s->n_merges);
    if (s->scores) gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, s->scores, s->n_scores);
    if (s->types) gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, s->types, s->n_types);
    if (extra) extra(w);
    tu_tmpdir(dir, sizeof dir);
    snprintf(out, sizeof out, "%s/h.gguf", dir);
    *st = gguf_writer_write_file(w, out, err);
    gguf_writer_destroy(w);
    tok_vocab *v = NULL;
    gguf_ctx *g = NULL;
    if (*st == KN_OK && (*st = gguf_open(out, &g, err)) == KN_OK) {
        *st = tok_vocab_load(g, &v, err);
        gguf_close(g);
    }
    tu_rmdir(dir);
    return v;
}

static kn_status try_load(const vspec *s, void (*extra)(gguf_writer *), kn_err *err) {
    kn_status st;
    tok_vocab *v = load_built(s, extra, &st, err);
    if (v) {
        /* usable: encode and decode something */
        int32_t ids[64];
        size_t n;
        kn_err e2;
        if (tok_encode(v, "abab ba", 7, true, true, ids, 64, &n, &e2) == KN_OK) {
            char *txt;
            size_t tl;
            if (tok_decode_all(v, ids, n, NULL, &txt, &tl, &e2) == KN_OK) free(txt);
        }
    }
    tok_vocab_destroy(v);
    return st;
}

static const char *const TOKS[] = {"a", "b", "ab", "\xc4\xa0", "ba"}; /* \xc4\xa0 = the byte-level space */
static const char *const MERGES[] = {"a b", "b a"};

static void x_tokens_i32(gguf_writer *w) {
    int32_t x[3] = {1, 2, 3};
    gguf_writer_set_arr(w, "tokenizer.ggml.tokens", GGUF_TYPE_INT32, x, 3);
}
static void x_model_u32(gguf_writer *w) { gguf_writer_set_u32(w, "tokenizer.ggml.model", 2); }
static void x_bos_str(gguf_writer *w) { gguf_writer_set_str(w, "tokenizer.ggml.bos_token_id", "one"); }
static void x_addbos_str(gguf_writer *w) { gguf_writer_set_str(w, "tokenizer.ggml.add_bos_token", "yes"); }
static void x_merges_i32(gguf_writer *w) {
    int32_t x[2] = {1, 2};
    gguf_writer_set_arr(w, "tokenizer.ggml.merges", GGUF_TYPE_INT32, x, 2);
}
static void x_pre_unknown(gguf_writer *w) { gguf_writer_set_str(w, "tokenizer.ggml.pre", "no-such-pre"); }
static void x_wpm_ids(gguf_writer *w) {
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 0);
    gguf_writer_set_u32(w, "tokenizer.ggml.seperator_token_id", 1);
}
static void x_bos_out_of_range(gguf_writer *w) { gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 99999); }
static void x_bos_2(gguf_writer *w) { gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 2); }
static void x_name_modern_bert(gguf_writer *w) { gguf_writer_set_str(w, "general.name", "Modern-BERT-test"); }

/* lstrip: a model named like modern-bert has its [MASK] take the whitespace
 * before it (llama.cpp's per-model attribute; the name is case folded) */
static void test_mask_lstrip(void **state) {
    (void)state;
    static const char *const T[] = {"<unk>", "<s>", "</s>", "\342\226\201a", "\342\226\201", "[MASK]"};
    static const int32_t TY[] = {2, 3, 3, 1, 1, 3};
    vspec s = {.model = "llama", .tokens = T, .n_tokens = 6, .types = TY, .n_types = 6};
    kn_status st;
    kn_err err = {0};
    int32_t ids[16];
    tok_vocab *v = load_built(&s, x_name_modern_bert, &st, &err);
    assert_non_null(v);
    size_t n = enc(v, "a \t[MASK] a", false, true, ids, 16);
    expect_ids(ids, n, (const int32_t[]){3, 5, 4, 3}, 4);
    tok_vocab_destroy(v);
    v = load_built(&s, NULL, &st, &err);
    assert_non_null(v);
    n = enc(v, "a [MASK]", false, true, ids, 16);
    expect_ids(ids, n, (const int32_t[]){3, 4, 5}, 3);
    tok_vocab_destroy(v);
}

static void test_hostile_metadata(void **state) {
    (void)state;
    kn_err err;
    /* a valid minimal byte-level BPE vocab works */
    vspec ok = {.model = "gpt2", .tokens = TOKS, .n_tokens = 5, .merges = MERGES, .n_merges = 2};
    assert_int_equal(try_load(&ok, NULL, &err), KN_OK);
    assert_int_equal(try_load(&ok, x_bos_out_of_range, &err), KN_OK); /* ignored, as llama.cpp does */

    /* a merge naming a token that does not exist */
    static const char *const BADM[] = {"a b", "a zz"};
    vspec s = ok;
    s.merges = BADM;
    assert_int_not_equal(try_load(&s, NULL, &err), KN_OK);
    assert_non_null(strstr(err.msg, "merges[1]"));
    static const char *const NOSPACE[] = {"ab"};
    s.merges = NOSPACE;
    s.n_merges = 1;
    assert_int_not_equal(try_load(&s, NULL, &err), KN_OK);

    /* empty vocab */
    s = ok;
    s.n_tokens = 0;
    assert_int_not_equal(try_load(&s, NULL, &err), KN_OK);
    assert_non_null(strstr(err.msg, "empty"));
    /* missing vocab / merges / model */
    s = ok;
    s.tokens = NULL;
    assert_int_not_equal(try_load(&s, NULL, &err), KN_OK);
    s = ok;
    s.merges = NULL;
    assert_int_not_equal(try_load(&s, NULL, &err), KN_OK);
    s = ok;
    s.model = NULL;
    assert_int_not_equal(try_load(&s, NULL, &err), KN_OK);
    s = ok;
    s.model = "rwkv-unknown";
    assert_int_equal(try_load(&s, NULL, &err), KN_EUNSUPPORTED);
    assert_int_not_equal(try_load(&ok, x_pre_unknown, &err), KN_OK);

    /* a 1 MB token string */
    char *big = malloc((1 << 20) + 1);
    memset(big, 'a', 1 << 20);
    big[1 << 20] = 0;
    const char *bigtoks[] = {"a", "b", "ab", big};
    s = ok;
    s.tokens = bigtoks;
    s.n_tokens = 4;
    assert_int_equal(try_load(&s, NULL, &err), KN_ERANGE);
    free(big);

    /* duplicate tokens */
    static const char *const DUP[] = {"a", "b", "ab", "a"};
    s = ok;
    s.tokens = DUP;
    s.n_tokens = 4;
    assert_int_not_equal(try_load(&s, NULL, &err), KN_OK);

    /* mismatched array lengths */
    float sc[3] = {0, 0, 0};
    int32_t ty[6] = {1, 1, 1, 1, 1, 1};
    s = ok;
    s.scores = sc;
    s.n_scores = 3;
    assert_int_equal(try_load(&s, NULL, &err), KN_EFORMAT);
    s = ok;
    s.types = ty;
    s.n_types = 6;
    assert_int_equal(try_load(&s, NULL, &err), KN_EFORMAT);
    s.n_types = 5;
    assert_int_equal(try_load(&s, NULL, &err), KN_OK);

    /* wrong value types */
    s = ok;
    s.tokens = NULL;
    assert_int_equal(try_load(&s, x_tokens_i32, &err), KN_ETYPE);
    s = ok;
    s.model = NULL;
    assert_int_equal(try_load(&s, x_model_u32, &err), KN_ETYPE);
    assert_int_equal(try_load(&ok, x_bos_str, &err), KN_ETYPE);
    assert_int_equal(try_load(&ok, x_addbos_str, &err), KN_ETYPE);
    s = ok;
    s.merges = NULL;
    assert_int_equal(try_load(&s, x_merges_i32, &err), KN_ETYPE);

    /* SPM and WPM minimal vocabs without scores/types still load */
    static const char *const SPM[] = {"<unk>", "<s>", "</s>", "\342\226\201a", "b"};
    s = (vspec){.model = "llama", .tokens = SPM, .n_tokens = 5};
    assert_int_equal(try_load(&s, NULL, &err), KN_OK);
    static const char *const WPM[] = {"[PAD]", "x", "\342\226\201a", "b"};
    s = (vspec){.model = "bert", .tokens = WPM, .n_tokens = 4};
    /* default [CLS]/[SEP] ids 101/102 are out of range, so adding them is impossible */
    assert_int_equal(try_load(&s, NULL, &err), KN_EFORMAT);
    assert_int_equal(try_load(&s, x_wpm_ids, &err), KN_OK);

    /* gemma4: merges are required, and BOS (always added) must exist */
    static const char *const G4[] = {"<pad>", "<eos>", "<bos>", "a", "b", "ab", "\342\226\201"};
    static const char *const G4M[] = {"a b"};
    s = (vspec){.model = "gemma4", .tokens = G4, .n_tokens = 7, .merges = G4M, .n_merges = 1};
    assert_int_equal(try_load(&s, x_bos_2, &err), KN_OK);
    assert_int_equal(try_load(&s, NULL, &err), KN_EFORMAT);
    assert_non_null(strstr(err.msg, "BOS"));
    s.merges = NULL;
    assert_int_equal(try_load(&s, x_bos_2, &err), KN_ENOTFOUND);
    s.merges = BADM;
    s.n_merges = 2;
    assert_int_equal(try_load(&s, x_bos_2, &err), KN_EFORMAT);
}

/* gemma4's rules on a small vocab: spaces become U+2581, a run of newlines
 * that is a token is taken whole (no merge needed), other runs merge over
 * whole characters, and a symbol that is no token falls back to <0xNN>
 * tokens, dropping a byte that has none */
static void test_gemma4_rules(void **state) {
    (void)state;
    static const char *const T[] = {"<pad>", "<eos>", "<bos>", "a",      "b",     "ab",
                                    "\342\226\201", "\n", "\n\n", "<0xC3>", "<0xA9>"};
    static const int32_t TY[] = {3, 3, 3, 1, 1, 1, 1, 1, 1, 6, 6};
    static const char *const M[] = {"a b"};
    vspec s = {.model = "gemma4", .tokens = T, .n_tokens = 11, .merges = M, .n_merges = 1, .types = TY, .n_types = 11};
    kn_status st;
    kn_err err = {0};
    int32_t ids[32];
    tok_vocab *v = load_built(&s, x_bos_2, &st, &err);
    if (!v) fprintf(stderr, "%s\n", err.msg);
    assert_non_null(v);
    size_t n = enc(v, "\n\n", false, false, ids, 32);
    expect_ids(ids, n, (const int32_t[]){8}, 1);
    n = enc(v, "\n\n\n", false, false, ids, 32);
    expect_ids(ids, n, (const int32_t[]){7, 7, 7}, 3);
    n = enc(v, "ab a\n\nb", true, false, ids, 32);
    expect_ids(ids, n, (const int32_t[]){2, 5, 6, 3, 8, 4}, 6);
    n = enc(v, "\xC3\xA9\xC3\xA7", false, false, ids, 32); /* é has both bytes, ç only its first */
    expect_ids(ids, n, (const int32_t[]){9, 10, 9}, 3);
    char *txt = NULL;
    size_t tl = 0;
    assert_int_equal(tok_decode_all(v, (const int32_t[]){5, 6, 3, 8, 9, 10}, 6, NULL, &txt, &tl, &err), KN_OK);
    assert_int_equal(tl, 8);
    assert_memory_equal(txt, "ab a\n\n\xC3\xA9", 8);
    free(txt);
    tok_vocab_destroy(v);
}

/* ---- end of generation per chat format ---- */

/* A SentencePiece vocab of <unk> <s> </s> and `extra` (written with the GGUF
 * writer, loaded back). */
static tok_vocab *load_tokens(const char *const *extra, size_t n) {
    const char *toks[32] = {"<unk>", "<s>", "</s>"};
    assert_true(n + 3 <= 32);
    memcpy(toks + 3, extra, n * sizeof *extra);
    char dir[512], out[600];
    gguf_writer *w = gguf_writer_create();
    assert_non_null(w);
    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, n + 3);
    tu_tmpdir(dir, sizeof dir);
    snprintf(out, sizeof out, "%s/v.gguf", dir);
    kn_err err = {0};
    assert_int_equal(gguf_writer_write_file(w, out, &err), KN_OK);
    gguf_writer_destroy(w);
    tok_vocab *v = load_path(out, &err);
    tu_rmdir(dir);
    if (!v) fprintf(stderr, "%s\n", err.msg);
    assert_non_null(v);
    return v;
}

static bool eog(const tok_vocab *v, const char *text) {
    int32_t id = tok_find(v, text, strlen(text));
    assert_int_not_equal(id, TOK_NULL);
    return tok_is_eog(v, id);
}

static void test_end_of_turn_tokens(void **state) {
    (void)state;
    /* harmony (gpt-oss): <|return|> ends the answer and <|call|> a tool call;
     * <|end|> only closes a message (the analysis comes first, then the
     * final answer), so it must not stop generation; it stays a control
     * token, parsed in prompts and not printed */
    static const char *const harmony[] = {"<|start|>", "<|message|>", "<|channel|>", "<|end|>", "<|return|>", "<|call|>", "<|endoftext|>"};
    tok_vocab *v = load_tokens(harmony, 7);
    assert_true(eog(v, "<|return|>") && eog(v, "<|call|>") && eog(v, "<|endoftext|>"));
    assert_false(eog(v, "<|end|>") || eog(v, "<|start|>") || eog(v, "<|message|>") || eog(v, "<|channel|>"));
    assert_true(tok_is_control(v, tok_find(v, "<|end|>", 7)));
    int32_t ids[16];
    assert_int_equal(enc(v, "<|end|>", false, true, ids, 16), 1);
    tok_vocab_destroy(v);
    /* phi3: <|end|> ends the turn; so it does beside <|return|> alone */
    static const char *const phi3[] = {"<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>"};
    v = load_tokens(phi3, 5);
    assert_true(eog(v, "<|end|>") && eog(v, "<|endoftext|>"));
    assert_false(eog(v, "<|user|>") || eog(v, "<|assistant|>"));
    tok_vocab_destroy(v);
    static const char *const ret_only[] = {"<|end|>", "<|return|>"};
    v = load_tokens(ret_only, 2);
    assert_true(eog(v, "<|end|>") && eog(v, "<|return|>"));
    tok_vocab_destroy(v);
    /* LFM2's pair, as llama.cpp */
    static const char *const lfm2[] = {"<|end|>", "<|calls|>", "<|flush|>"};
    v = load_tokens(lfm2, 3);
    assert_true(eog(v, "<|calls|>") && eog(v, "<|flush|>"));
    assert_false(eog(v, "<|end|>"));
    tok_vocab_destroy(v);
    /* ChatML (Qwen), Gemma 2/3, Gemma 4 */
    static const char *const chatml[] = {"<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>"};
    v = load_tokens(chatml, 5);
    assert_true(eog(v, "<|im_end|>") && eog(v, "<|endoftext|>"));
    assert_false(eog(v, "<|im_start|>") || eog(v, "<think>") || eog(v, "</think>"));
    tok_vocab_destroy(v);
    static const char *const gemma[] = {"<start_of_turn>", "<end_of_turn>", "<eos>"};
    v = load_tokens(gemma, 3);
    assert_true(eog(v, "<end_of_turn>") && eog(v, "<eos>"));
    assert_false(eog(v, "<start_of_turn>"));
    tok_vocab_destroy(v);
    /* Gemma 4: <turn|> ends a turn; after a tool call the model stops at
     * <|tool_response>, where the results go */
    static const char *const gemma4[] = {"<|turn>", "<turn|>", "<|tool_call>", "<tool_call|>", "<|tool_response>", "<|channel>", "<channel|>"};
    v = load_tokens(gemma4, 7);
    assert_true(eog(v, "<turn|>") && eog(v, "<|tool_response>"));
    assert_false(eog(v, "<|turn>") || eog(v, "<|tool_call>") || eog(v, "<tool_call|>") || eog(v, "<channel|>"));
    tok_vocab_destroy(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_multibyte), cmocka_unit_test(test_stream_flush),
        cmocka_unit_test(test_special_parsing),  cmocka_unit_test(test_bos_defaults),
        cmocka_unit_test(test_metadata_wins),    cmocka_unit_test(test_bert_reference),
        cmocka_unit_test(test_gemma4),           cmocka_unit_test(test_gemma4_chunks),
        cmocka_unit_test(test_phi3_rstrip),
        cmocka_unit_test(test_mask_lstrip),      cmocka_unit_test(test_gemma4_rules),
        cmocka_unit_test(test_hostile_metadata), cmocka_unit_test(test_end_of_turn_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
