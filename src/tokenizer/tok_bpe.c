/*
 * tok_bpe.c — byte-level BPE (tokenizer.ggml.model = "gpt2").
 *
 * Pre-tokenizer: llama.cpp's regex list for the `tokenizer.ggml.pre` family,
 * run with PCRE2 (UTF + UCP, JIT when available). Each regex of the list
 * splits every piece left by the previous one into its matches and the gaps
 * between them. Invalid UTF-8 in the input becomes U+FFFD first, as in
 * llama.cpp.
 *
 * Merging works on raw bytes: every token text is decoded from the GPT-2
 * byte alphabet once at load (map_raw), merges become (left id, right id) ->
 * (rank, result id) in a hash table, and each word is merged lowest rank
 * first (ties: leftmost) with a binary heap.
 */
#include "kiln/gguf.h"
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* ---- pre-tokenizer families (regex lists as llama.cpp defines them) ---- */

#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_CONTRACT "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define RE_LLAMA3 RE_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2 RE_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN35 RE_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_CJK "[\\x{4e00}-\\x{9fa5}\\x{800}-\\x{4e00}\\x{ac00}-\\x{d7ff}]+"
#define RE_BLOOM " ?[^(\\s|.,!?\\x{2026}\\x{3002}\\x{ff0c}\\x{3001}\\x{964}\\x{6d4}\\x{60c})]+"
#define RE_DS_LLM_LETTERS \
"\\s?[A-Za-z\\x{b5}\\x{c0}-\\x{d6}\\x{d8}-\\x{f6}\\x{f8}-\\x{1ba}\\x{1bc}-\\x{1bf}\\x{1c4}-\\x{293}\\x{295}-\\x{2af}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37b}-\\x{37d}\\x{37f}\\x{386}\\x{388}-\\x{38a}\\x{38c}\\x{38e}-\\x{3a1}\\x{3a3}-\\x{3f5}\\x{3f7}-\\x{481}\\x{48a}-\\x{52f}\\x{531}-\\x{556}\\x{10a0}-\\x{10c5}\\x{13a0}-\\x{13f5}\\x{13f8}-\\x{13fd}\\x{1c90}-\\x{1cba}\\x{1cbd}-\\x{1cbf}\\x{1d00}-\\x{1d2b}\\x{1d6b}-\\x{1d77}\\x{1d79}-\\x{1d9a}\\x{1e00}-\\x{1f15}\\x{1f18}-\\x{1f1d}\\x{1f20}-\\x{1f45}\\x{1f48}-\\x{1f4d}\\x{1f50}-\\x{1f57}\\x{1f59}\\x{1f5b}\\x{1f5d}\\x{1f5f}-\\x{1f7d}\\x{1f80}-\\x{1fb4}\\x{1fb6}-\\x{1fbc}\\x{1fbe}\\x{1fc2}-\\x{1fc4}\\x{1fc6}-\\x{1fcc}\\x{1fd0}-\\x{1fd3}\\x{1fd6}-\\x{1fdb}\\x{1fe0}-\\x{1fec}\\x{1ff2}-\\x{1ff4}\\x{1ff6}-\\x{1ffc}\\x{2102}\\x{2107}\\x{210a}-\\x{2113}\\x{2115}\\x{2119}-\\x{211d}\\x{2124}\\x{2126}\\x{2128}\\x{212a}-\\x{212d}\\x{212f}-\\x{2134}\\x{2139}\\x{213c}-\\x{213f}\\x{2145}-\\x{2149}\\x{214e}\\x{2183}\\x{2184}\\x{2c00}-\\x{2c7b}\\x{2c7e}-\\x{2ce4}\\x{2ceb}-\\x{2cee}\\x{2cf2}\\x{2cf3}\\x{a640}-\\x{a66d}\\x{a680}-\\x{a69b}\\x{a722}-\\x{a76f}\\x{a771}-\\x{a787}\\x{a78b}-\\x{a78e}\\x{ab70}-\\x{abbf}\\x{fb00}-\\x{fb06}\\x{fb13}-\\x{fb17}\\x{ff21}-\\x{ff3a}\\x{ff41}-\\x{ff5a}\\x{10400}-\\x{1044f}\\x{104b0}-\\x{104d3}\\x{104d8}-\\x{104fb}\\x{10c80}-\\x{10cb2}\\x{10cc0}-\\x{10cf2}\\x{118a0}-\\x{118df}\\x{1e900}-\\x{1e943}]+"

#define RE_UPPER_LOWER "((?=[\\p{L}])([^a-z]))"
#define RE_LOWER_ONLY "((?=[\\p{L}])([^A-Z]))"

typedef struct pre_family {
    const char *names[12];
    const char *re[TOK_MAX_REGEX];
    bool ignore_merges, add_bos, add_sep, no_bos;
} pre_family;

static const pre_family FAMILIES[] = {
    {{"default"},
     {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}, false, false, false, false},
    {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano"},
     {RE_LLAMA3}, true, true, false, false},
    {{"dbrx", "smaug-bpe"}, {RE_LLAMA3}, false, false, false, false},
    {{"glm4", "chatglm-bpe"}, {RE_LLAMA3}, false, false, false, true},
    {{"deepseek-llm"},
     {"[\r\n]", RE_DS_LLM_LETTERS,
      "\\s?[!-/:-~\\x{ff01}-\\x{ff0f}\\x{ff1a}-\\x{ff5e}\\x{2018}-\\x{201f}\\x{3000}-\\x{3002}]+", "\\s+$", RE_CJK,
      "\\p{N}+"},
     false, false, false, false},
    {{"deepseek-coder"}, {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RE_CJK, "\\p{N}"}, false, false, false, false},
    {{"deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4"},
     {"\\p{N}{1,3}", "[\\x{4e00}-\\x{9fa5}\\x{3040}-\\x{309f}\\x{30a0}-\\x{30ff}]+",
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"},
     false, false, false, false},
    {{"falcon"}, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]"}, false, false, false, false},
    {{"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2"},
     {"\\p{N}", RE_GPT2}, false, false, false, false},
    {{"gpt-2", "phi-2", "mpt", "olmo", "jais", "trillion", "granite-docling", "exaone4", "jina-es", "jina-de",
      "gigachat", "jina-v2-es"},
     {RE_GPT2}, false, false, false, false},
    /* gpt-neox (EleutherAI, Pythia): a byte-level pre-tokenizer with the GPT-2 regex, as mpt */
    {{"jina-v2-de", "a.x-4.0", "mellum", "modern-bert", "gpt-neox"}, {RE_GPT2}, false, false, false, false},
    {{"jina-v1-en", "jina-v2-code", "roberta-bpe"}, {RE_GPT2}, false, false, true, false},
    {{"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open", "grok-2"},
     {RE_QWEN2}, false, false, false, false},
    {{"qwen35"}, {RE_QWEN35}, false, false, false, false},
    {{"poro-chat", "bloom", "gpt3-finnish"}, {RE_BLOOM}, false, false, false, false},
    {{"viking"}, {RE_BLOOM, "\\p{N}"}, false, false, false, false},
    {{"tekken"},
     {"[^\\r\\n\\p{L}\\p{N}]?" RE_UPPER_LOWER "*" RE_LOWER_ONLY "+|[^\\r\\n\\p{L}\\p{N}]?" RE_UPPER_LOWER "+" RE_LOWER_ONLY
      "*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     true, true, false, false},
    {{"gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"},
     {"[^\\r\\n\\p{L}\\p{N}]?" RE_UPPER_LOWER "*" RE_LOWER_ONLY "+" RE_CONTRACT "?|[^\\r\\n\\p{L}\\p{N}]?" RE_UPPER_LOWER
      "+" RE_LOWER_ONLY "*" RE_CONTRACT "?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     false, false, false, false},
    {{"chameleon"},
     {"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )", "\\p{N}",
      "[\\p{P}!-/:-@\\[-`{-~]", RE_GPT2},
     false, true, false, false},
    {{"seed-coder"},
     {RE_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     false, false, false, false},
    {{"bailingmoe", "bailingmoe2", "llada-moe"},
     {"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"},
     false, false, false, false},
    {{"minicpm5"},
     {"\\p{N}{1,3}", RE_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     true, false, false, false},
    {{"superbpe"}, {"\\p{N}+", "(?=(\\d{3})+(?!\\d))"}, false, false, false, false},
    {{"ufakzeka"},
     {"[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     false, false, false, false},
    {{"exaone-moe"},
     {RE_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"},
     false, false, false, false},
};

static const pre_family *find_family(const char *pre) {
    for (size_t f = 0; f < sizeof FAMILIES / sizeof FAMILIES[0]; f++)
        for (size_t k = 0; k < 12 && FAMILIES[f].names[k]; k++)
            if (!strcmp(FAMILIES[f].names[k], pre)) return &FAMILIES[f];
    return NULL;
}

/* ---- byte-level alphabet: tok_byte_alphabet (tok.c) ---- */

/* ---- merge table ---- */

static tok_merge *merge_slot(const tok_vocab *v, uint64_t key) {
    uint64_t i = XXH3_64bits(&key, sizeof key) & v->merge_mask;
    for (;;) {
        tok_merge *m = &v->merges[i];
        if (m->key == key || m->key == UINT64_MAX) return m;
        i = (i + 1) & v->merge_mask;
    }
}

static kn_status compile_regexes(tok_vocab *v, const pre_family *f, kn_err *err) {
    for (int k = 0; k < TOK_MAX_REGEX && f->re[k]; k++) {
        int ec;
        PCRE2_SIZE eo;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)f->re[k], PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY | PCRE2_NO_UTF_CHECK, &ec, &eo, NULL);
        if (!re) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(ec, msg, sizeof msg);
            return kn_fail(err, KN_EINVAL, "tokenizer: pre-tokenizer regex %d of '%s' does not compile at %zu: %s", k,
                           v->pre, (size_t)eo, (const char *)msg);
        }
        (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
        v->re[v->n_re++] = re;
    }
    return KN_OK;
}

kn_status tok_bpe_setup(tok_vocab *v, const gguf_ctx *g, kn_err *err) {
    kn_status st;
    const pre_family *f = find_family(v->pre);
    if (!f) return kn_fail(err, KN_EUNSUPPORTED, "tokenizer.ggml.pre: unknown pre-tokenizer '%s'", v->pre);
    v->ignore_merges = f->ignore_merges;
    if (f->add_bos) v->add_bos = true;
    if (f->add_sep) v->add_sep = true;
    if (f->no_bos) v->bos = TOK_NULL;
    if ((st = compile_regexes(v, f, err)) != KN_OK) return st;

    /* raw (byte-decoded) form of every token */
    int16_t cp_to_byte[324];
    tok_byte_alphabet(cp_to_byte);
    uint64_t total = 0;
    for (int32_t i = 0; i < v->n; i++) total += v->text_len[i];
    v->raw_pool = malloc(total + 1);
    v->raw_off = malloc(sizeof(uint64_t) * (size_t)v->n);
    v->raw_len = malloc(sizeof(int32_t) * (size_t)v->n);
    if (!v->raw_pool || !v->raw_off || !v->raw_len) goto oom;
    uint64_t pos = 0;
    for (int32_t i = 0; i < v->n; i++) {
        const unsigned char *t = (const unsigned char *)v->text_pool + v->text_off[i];
        uint32_t tl = v->text_len[i];
        v->raw_off[i] = pos;
        size_t k = 0, o = 0;
        bool ok = true;
        while (k < tl) {
            uint32_t cp;
            size_t cl = tok_utf8_decode(t + k, tl - k, &cp);
            int b = (cl && cp < 324) ? cp_to_byte[cp] : -1;
            if (b < 0) { ok = false; break; }
            v->raw_pool[pos + o++] = (char)b;
            k += cl;
        }
        v->raw_len[i] = ok ? (int32_t)o : -1;
        if (ok) pos += o;
    }
    if (tok_map_init(&v->map_raw, (uint64_t)v->n) != KN_OK) goto oom;
    for (int32_t i = 0; i < v->n; i++)
        if (v->raw_len[i] >= 0) tok_map_insert(&v->map_raw, v->raw_pool, v->raw_off, v->raw_len, true, i);
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        v->byte_tok[b] = tok_map_find(&v->map_raw, v->raw_pool, v->raw_off, v->raw_len, true, &c, 1);
        v->fallback_tok[b] = (b >= 33 && b <= 126) ? tok_find(v, &c, 1) : TOK_NULL;
    }
    return tok_bpe_load_merges(v, g, err);
oom:
    return kn_fail(err, KN_ENOMEM, "tokenizer: out of memory");
}

/* Each merge "A B" (split at the first space after the first byte, as
 * llama.cpp does) becomes (id(A), id(B)) -> (rank, id(AB)); the first rank
 * of a pair wins. Both parts must be tokens; AB need not be one. */
kn_status tok_bpe_load_merges(tok_vocab *v, const gguf_ctx *g, kn_err *err) {
    kn_status st;
    gguf_type et;
    uint64_t n;
    const void *data;
    st = gguf_get_arr(g, "tokenizer.ggml.merges", &et, &n, &data);
    if (st == KN_ENOTFOUND) return kn_fail(err, KN_ENOTFOUND, "tokenizer.ggml.merges: missing (required for gpt2 and gemma4 tokenizers)");
    if (st != KN_OK || et != GGUF_TYPE_STRING) return kn_fail(err, KN_ETYPE, "tokenizer.ggml.merges: expected an array of strings");
    if (n > TOK_MAX_MERGES) return kn_fail(err, KN_ERANGE, "tokenizer.ggml.merges: %llu merges (max %u)", (unsigned long long)n, TOK_MAX_MERGES);
    uint64_t size = 16;
    while (size < n * 2 + 1) size <<= 1;
    v->merges = malloc(size * sizeof(tok_merge));
    if (!v->merges) goto oom;
    for (uint64_t i = 0; i < size; i++) v->merges[i].key = UINT64_MAX;
    v->merge_mask = size - 1;
    v->n_merges = (int32_t)n;
    char *cat = malloc(2 * (size_t)TOK_MAX_TOKEN_LEN + 2);
    if (!cat) goto oom;
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        if (gguf_get_arr_str(g, "tokenizer.ggml.merges", i, &s) != KN_OK) { free(cat); return kn_fail(err, KN_EFORMAT, "tokenizer.ggml.merges[%llu]: unreadable", (unsigned long long)i); }
        const char *sp = s.len > 1 ? memchr(s.data + 1, ' ', s.len - 1) : NULL;
        if (!sp) {
            free(cat);
            return kn_fail(err, KN_EFORMAT, "tokenizer.ggml.merges[%llu]: '%.*s' is not two tokens separated by a space",
                           (unsigned long long)i, (int)(s.len > 64 ? 64 : s.len), s.data);
        }
        size_t la = (size_t)(sp - s.data), lb = s.len - la - 1;
        int32_t a = tok_find(v, s.data, la), b = tok_find(v, sp + 1, lb);
        if (a == TOK_NULL || b == TOK_NULL) {
            free(cat);
            return kn_fail(err, KN_EFORMAT, "tokenizer.ggml.merges[%llu]: '%.*s' names a token that is not in the vocab",
                           (unsigned long long)i, (int)(s.len > 64 ? 64 : s.len), s.data);
        }
        int32_t r = TOK_NULL;
        if (la + lb <= 2 * (size_t)TOK_MAX_TOKEN_LEN) {
            memcpy(cat, s.data, la);
            memcpy(cat + la, sp + 1, lb);
            r = tok_find(v, cat, la + lb);
        }
        uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
        tok_merge *m = merge_slot(v, key);
        if (m->key == UINT64_MAX) { /* the first (lowest) rank wins */
            m->key = key;
            m->rank = (int32_t)i;
            m->result = r;
        }
    }
    free(cat);
    return KN_OK;
oom:
    return kn_fail(err, KN_ENOMEM, "tokenizer: out of memory");
}

void tok_bpe_free(tok_vocab *v) {
    for (int k = 0; k < v->n_re; k++) pcre2_code_free(v->re[k]);
    v->n_re = 0;
    free(v->raw_pool);
    free(v->raw_off);
    free(v->raw_len);
    free(v->map_raw.slots);
    free(v->merges);
}

/* ---- encoding ---- */

const char *tok_bpe_sanitize(tok_encoder *e, const char *text, size_t *len) {
    size_t n = *len, i = 0;
    const unsigned char *s = (const unsigned char *)text;
    while (i < n) {
        if (s[i] < 0x80) { i++; continue; }
        uint32_t cp;
        size_t l = tok_utf8_decode(s + i, n - i, &cp);
        if (!l) break;
        i += l;
    }
    if (i == n) return text;
    if (tok_reserve((void **)&e->buf, &e->buf_cap, n * 3 + 4, 1) != KN_OK) return NULL;
    size_t o = 0;
    memcpy(e->buf, text, i);
    o = i;
    while (i < n) {
        uint32_t cp;
        size_t l = tok_utf8_decode_lenient(s + i, n - i, &cp);
        o += tok_utf8_encode(cp, e->buf + o);
        i += l;
    }
    *len = o;
    return e->buf;
}

static kn_status push_piece(size_t **arr, size_t *cap, size_t *n, size_t start, size_t len) {
    if (tok_reserve((void **)arr, cap, (*n + 1) * 2, sizeof(size_t)) != KN_OK) return KN_ENOMEM;
    (*arr)[2 * *n] = start;
    (*arr)[2 * *n + 1] = len;
    (*n)++;
    return KN_OK;
}

static int re_match(tok_encoder *e, const pcre2_code *re, const char *s, size_t len, size_t off, uint32_t opts) {
    int rc = pcre2_match(re, (PCRE2_SPTR)s, len, off, opts | PCRE2_NO_UTF_CHECK, e->md, e->mctx);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(re, (PCRE2_SPTR)s, len, off, opts | PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, e->md, e->mctx);
    return rc;
}

/* Splits one piece with one regex, appending pieces (absolute offsets). */
static kn_status split_piece(tok_encoder *e, const pcre2_code *re, const char *text, size_t start, size_t len,
                             size_t **out, size_t *cap, size_t *n, kn_err *err) {
    const char *s = text + start;
    size_t last = 0, off = 0;
    uint32_t opts = 0;
    while (off <= len) {
        int rc = re_match(e, re, s, len, off, opts);
        if (rc == PCRE2_ERROR_NOMATCH) {
            if (opts) { /* no non-empty match at off: advance one character */
                opts = 0;
                if (off >= len) break;
                off += tok_utf8_len((unsigned char)s[off]);
                if (off > len) off = len;
                continue;
            }
            break;
        }
        if (rc < 0) return kn_fail(err, KN_ERANGE, "tokenize: pre-tokenizer regex failed (PCRE2 error %d)", rc);
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t ms = ov[0], me = ov[1];
        if (ms > last && push_piece(out, cap, n, start + last, ms - last) != KN_OK) goto oom;
        if (me > ms) {
            if (push_piece(out, cap, n, start + ms, me - ms) != KN_OK) goto oom;
            last = off = me;
            opts = 0;
        } else {
            if (ms > last) last = ms;
            off = ms;
            opts = PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED;
        }
        if (off >= len && !opts) break;
    }
    if (last < len && push_piece(out, cap, n, start + last, len - last) != KN_OK) goto oom;
    return KN_OK;
oom:
    return kn_fail(err, KN_ENOMEM, "tokenize: out of memory");
}

static inline void add_bigram(tok_encoder *e, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const tok_sym *l = &e->syms[left], *r = &e->syms[right];
    if (l->id == TOK_NULL || r->id == TOK_NULL) return;
    const tok_vocab *v = e->v;
    uint64_t key = ((uint64_t)(uint32_t)l->id << 32) | (uint32_t)r->id;
    uint64_t i = XXH3_64bits(&key, sizeof key) & v->merge_mask;
    const tok_merge *m;
    for (;;) {
        m = &v->merges[i];
        if (m->key == key) break;
        if (m->key == UINT64_MAX) return;
        i = (i + 1) & v->merge_mask;
    }
    tok_bigram b = {.score = 0, .rank = m->rank, .left = left, .right = right, .size = l->n + r->n, .result = m->result};
    tok_heap_push(e, &b, false);
}

/* tok_bpe_merge, inlined into the byte-level BPE word loop */
static inline kn_status bpe_merge(tok_encoder *e, size_t n) {
    /* every merge adds at most two bigrams */
    if (tok_reserve((void **)&e->heap, &e->heap_cap, 3 * n + 3, sizeof(tok_bigram)) != KN_OK) return KN_ENOMEM;
    e->heap_n = 0;
    for (size_t i = 1; i < n; i++) add_bigram(e, (int32_t)i - 1, (int32_t)i);
    while (e->heap_n) {
        tok_bigram b = tok_heap_pop(e, false);
        tok_sym *l = &e->syms[b.left], *r = &e->syms[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue;
        l->n += r->n;
        l->id = b.result;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) e->syms[r->next].prev = b.left;
        add_bigram(e, l->prev, b.left);
        add_bigram(e, b.left, l->next);
    }
    return KN_OK;
}

kn_status tok_bpe_merge(tok_encoder *e, size_t n) { return bpe_merge(e, n); }

static kn_status bpe_word(tok_encoder *e, const char *w, size_t n) {
    const tok_vocab *v = e->v;
    if (v->ignore_merges) {
        int32_t id = tok_map_find(&v->map_raw, v->raw_pool, v->raw_off, v->raw_len, true, w, n);
        if (id != TOK_NULL) return tok_ivec_push(&e->out, id);
    }
    if (n == 1) {
        int32_t id = v->byte_tok[(unsigned char)w[0]];
        if (id == TOK_NULL) id = v->fallback_tok[(unsigned char)w[0]];
        return id == TOK_NULL ? KN_OK : tok_ivec_push(&e->out, id);
    }
    if (tok_reserve((void **)&e->syms, &e->syms_cap, n, sizeof(tok_sym)) != KN_OK) return KN_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        tok_sym *y = &e->syms[i];
        y->start = (uint32_t)i;
        y->n = 1;
        y->prev = (int32_t)i - 1;
        y->next = i + 1 == n ? -1 : (int32_t)i + 1;
        y->id = v->byte_tok[(unsigned char)w[i]];
    }
    if (bpe_merge(e, n) != KN_OK) return KN_ENOMEM;
    for (int32_t i = 0; i != -1; i = e->syms[i].next) {
        const tok_sym *y = &e->syms[i];
        if (y->id != TOK_NULL) {
            if (tok_ivec_push(&e->out, y->id) != KN_OK) return KN_ENOMEM;
            continue;
        }
        for (uint32_t k = 0; k < y->n; k++) {
            int32_t id = v->fallback_tok[(unsigned char)w[y->start + k]];
            if (id != TOK_NULL && tok_ivec_push(&e->out, id) != KN_OK) return KN_ENOMEM;
        }
    }
    return KN_OK;
}

kn_status tok_bpe_encode(tok_encoder *e, const char *text, size_t len, kn_err *err) {
    const tok_vocab *v = e->v;
    if (!len) return KN_OK;
    const char *s = tok_bpe_sanitize(e, text, &len);
    if (!s) return kn_fail(err, KN_ENOMEM, "tokenize: out of memory");
    kn_status st;
    e->pieces_n = 0;
    if (push_piece(&e->pieces, &e->pieces_cap, &e->pieces_n, 0, len) != KN_OK) goto oom;
    for (int k = 0; k < v->n_re; k++) {
        size_t n2 = 0;
        for (size_t p = 0; p < e->pieces_n; p++) {
            st = split_piece(e, v->re[k], s, e->pieces[2 * p], e->pieces[2 * p + 1], &e->pieces2, &e->pieces2_cap, &n2, err);
            if (st != KN_OK) return st;
        }
        size_t *t = e->pieces;
        e->pieces = e->pieces2;
        e->pieces2 = t;
        size_t tc = e->pieces_cap;
        e->pieces_cap = e->pieces2_cap;
        e->pieces2_cap = tc;
        e->pieces_n = n2;
    }
    for (size_t p = 0; p < e->pieces_n; p++) {
        size_t wl = e->pieces[2 * p + 1];
        if (wl && tok_word_cached(e, s + e->pieces[2 * p], wl, bpe_word) != KN_OK) goto oom;
    }
    return KN_OK;
oom:
    return kn_fail(err, KN_ENOMEM, "tokenize: out of memory");
}

