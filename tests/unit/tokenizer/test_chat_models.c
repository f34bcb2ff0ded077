/* test_chat_models.c — the chat format kiln picks for each model family in
 * $KILN_SHARED/models (qwen3, qwen3moe, gemma3, phi3, gpt-oss, llama 3.1):
 * whether the file carries its own tokenizer.chat_template, the template
 * used (the model's, or the built-in its vocabulary and architecture
 * select), the built-in a copy without a template would get, and that an
 * assistant turn in either rendering closes with a token that ends
 * generation in that vocabulary. This reads metadata only, so it covers
 * architectures the model module does not load yet. */
#include "testutil.h"
#include "kiln/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct model_case {
    const char *file;
    bool has_template; /* the file carries tokenizer.chat_template */
    const char *used;  /* what tok_tmpl_for_model picks for the file */
    const char *bare;  /* the built-in for the same file without a template */
    const char *end;   /* the token that closes an assistant turn in both */
} model_case;

static const model_case MODELS[] = {
    /* these carry the ChatML template of the qwen2 vocabulary they were made with */
    {"tiny-qwen3-Q8_0.gguf", true, "model", "qwen3", "<|im_end|>"},
    {"tiny-qwen3moe-Q8_0.gguf", true, "model", "qwen3", "<|im_end|>"},
    /* a Gemma 4 vocabulary and template (<|turn>, <turn|>) */
    {"tiny-gemma3-Q8_0.gguf", true, "model", "gemma4", "<turn|>"},
    {"tiny-phi3-Q8_0.gguf", true, "model", "phi3", "<|end|>"},
    /* its vocabulary is Llama 3's (standing in for o200k): harmony's
     * <|start|>/<|message|> would not be tokens, Llama 3's markers are */
    {"tiny-gptoss-MXFP4.gguf", false, "llama3", "llama3", "<|eot_id|>"},
    /* the Llama 2 SentencePiece vocabulary: no header tokens */
    {"tiny-llama31-Q8_0.gguf", false, "llama2", "llama2", "</s>"},
};

/* The same lookup `kiln template -m` does: a scan of the token texts. */
static bool gguf_has_token(void *ctx, const char *text) {
    const gguf_ctx *g = ctx;
    gguf_type et;
    uint64_t n;
    const void *data;
    if (gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data) != KN_OK || et != GGUF_TYPE_STRING)
        return false;
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        if (gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &s) == KN_OK && gguf_str_eq(s, text)) return true;
    }
    return false;
}

static char *token_text(const gguf_ctx *g, const char *key) {
    uint64_t id;
    gguf_str s;
    if (gguf_get_u64(g, key, &id) != KN_OK || gguf_get_arr_str(g, "tokenizer.ggml.tokens", id, &s) != KN_OK)
        return NULL;
    char *out = malloc(s.len + 1);
    assert_non_null(out);
    memcpy(out, s.data, s.len);
    out[s.len] = 0;
    return out;
}

static const char ANSWER[] = "Hello there";

/* Renders system/user/assistant (no generation prompt) and checks that the
 * assistant's answer is followed by `end`, a token of the file's vocabulary
 * (g), which ends generation in v (when the vocabulary loads). */
static void check_turn_end(const tok_tmpl *t, const char *what, const gguf_ctx *g, const tok_vocab *v,
                           const char *end, const char *bos, const char *eos) {
    json_t *msgs = json_pack("[{s:s,s:s},{s:s,s:s},{s:s,s:s}]", "role", "system", "content", "Be brief.",
                             "role", "user", "content", "Hi", "role", "assistant", "content", ANSWER);
    assert_non_null(msgs);
    struct tm now = {.tm_year = 124, .tm_mon = 6, .tm_mday = 26, .tm_hour = 12, .tm_isdst = -1};
    tok_tmpl_inputs in = {
        .messages = msgs, .bos_token = bos ? bos : "", .eos_token = eos ? eos : "", .now = &now};
    char *out = NULL;
    size_t len;
    bool raised;
    kn_err err;
    if (tok_tmpl_render(t, &in, &out, &len, &raised, &err) != KN_OK) fail_msg("%s: %s", what, err.msg);
    const char *after = strstr(out, ANSWER);
    if (!after) fail_msg("%s: the answer is missing from\n%s", what, out);
    after += strlen(ANSWER);
    while (*after == ' ')
        after++;
    if (strncmp(after, end, strlen(end)) || !gguf_has_token((void *)g, end))
        fail_msg("%s: expected the assistant turn to close with %s, a token; rendered:\n%s", what, end, out);
    fprintf(stderr, "    %-8s closes a turn with %s%s\n", what, end, v ? ", which ends generation" : "");
    if (v) {
        int32_t *ids = NULL;
        size_t n = 0;
        assert_int_equal(tok_encode_alloc(v, after, strlen(after), false, true, &ids, &n, &err), KN_OK);
        if (n == 0 || !tok_is_eog(v, ids[0])) {
            size_t tl = 0;
            const char *tt = n ? tok_token_text(v, ids[0], &tl) : "";
            fail_msg(
                "%s: the assistant turn closes with '%.*s', which does not end generation; rendered:\n%s",
                what, (int)tl, tt, out);
        }
        free(ids);
    }
    free(out);
    json_decref(msgs);
}

static void test_model_templates(void **state) {
    (void)state;
    for (size_t m = 0; m < sizeof MODELS / sizeof MODELS[0]; m++) {
        const model_case *c = &MODELS[m];
        char rel[256], path[1400];
        snprintf(rel, sizeof rel, "models/%s", c->file);
        tu_shared_path(path, sizeof path, rel);
        gguf_ctx *g = NULL;
        kn_err err;
        if (gguf_open(path, &g, &err) != KN_OK) fail_msg("%s: %s", c->file, err.msg);
        gguf_str src = {0}, arch = {0};
        bool has = gguf_get_str(g, "tokenizer.chat_template", &src) == KN_OK;
        char archbuf[64] = "";
        if (gguf_get_str(g, "general.architecture", &arch) == KN_OK && arch.len < sizeof archbuf)
            memcpy(archbuf, arch.data, arch.len);
        fprintf(stderr, "%s (%s): %s\n", c->file, archbuf, has ? "has a chat template" : "no chat template");
        assert_int_equal(has, c->has_template);
        const char *used = NULL, *bare = NULL;
        tok_tmpl *t = tok_tmpl_for_model(has ? src.data : NULL, has ? src.len : 0, gguf_has_token, g, archbuf,
                                         &used, &err);
        assert_non_null(t);
        assert_string_equal(used, c->used);
        tok_tmpl *tb = tok_tmpl_for_model(NULL, 0, gguf_has_token, g, archbuf, &bare, &err);
        assert_non_null(tb);
        assert_string_equal(bare, c->bare);
        char *bos = token_text(g, "tokenizer.ggml.bos_token_id"),
             *eos = token_text(g, "tokenizer.ggml.eos_token_id");
        tok_vocab *v = NULL;
        kn_err verr;
        if (tok_vocab_load(g, &v, &verr) != KN_OK) {
            /* the gemma4 tokenizer arrives separately: then only the text
             * is checked here (test_tok_features has the EOG rule for its
             * token texts) */
            fprintf(stderr, "    (vocabulary not loadable here: %s)\n", verr.msg);
            v = NULL;
        }
        check_turn_end(t, used, g, v, c->end, bos, eos);
        check_turn_end(tb, bare, g, v, c->end, bos, eos);
        tok_vocab_destroy(v);
        free(bos);
        free(eos);
        tok_tmpl_destroy(t);
        tok_tmpl_destroy(tb);
        gguf_close(g);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_templates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
