/*
 * tok_chat.c — see kiln/tokenizer.h.
 */
#include "kiln/tokenizer.h"
#include "kiln/gguf.h"


#include <stdlib.h>
#include <string.h>

struct tok_chat {
    const tok_vocab *vocab;
    tok_tmpl *tmpl;
    char *bos, *eos; /* token texts, or NULL */
};

static bool vocab_has(void *ctx, const char *text) { return tok_find(ctx, text, strlen(text)) != TOK_NULL; }

static char *token_text(const tok_vocab *v, int32_t id) {
    if (id == TOK_NULL) return NULL;
    size_t len;
    const char *t = tok_token_text(v, id, &len);
    if (!t) return NULL;
    char *s = malloc(len + 1);
    if (s) {
        memcpy(s, t, len);
        s[len] = 0;
    }
    return s;
}

kn_status tok_chat_create(const gguf_ctx *g, const tok_vocab *v, tok_chat **out, const char **used_name,
                          kn_err *err) {
    *out = NULL;
    tok_chat *c = calloc(1, sizeof *c);
    if (!c) return kn_fail(err, KN_ENOMEM, "out of memory");
    c->vocab = v;
    gguf_str src = {0}, arch = {0};
    bool has = gguf_get_str(g, "tokenizer.chat_template", &src) == KN_OK;
    char arch_buf[64] = "";
    if (gguf_get_str(g, "general.architecture", &arch) == KN_OK && arch.len < sizeof arch_buf) {
        memcpy(arch_buf, arch.data, arch.len);
        arch_buf[arch.len] = 0;
    }
    c->tmpl = tok_tmpl_for_model(has ? src.data : NULL, has ? src.len : 0, vocab_has, (void *)v,
                                 arch_buf[0] ? arch_buf : NULL, used_name, err);
    if (!c->tmpl) {
        free(c);
        return err ? err->status : KN_EINVAL;
    }
    c->bos = token_text(v, tok_bos(v));
    c->eos = token_text(v, tok_eos(v));
    *out = c;
    return KN_OK;
}

void tok_chat_destroy(tok_chat *c) {
    if (!c) return;
    tok_tmpl_destroy(c->tmpl);
    free(c->bos);
    free(c->eos);
    free(c);
}

kn_status tok_chat_render(const tok_chat *c, const json_t *messages, const json_t *tools, bool add_generation_prompt,
                          char **text, size_t *len, kn_err *err) {
    tok_tmpl_inputs in = {.messages = messages,
                          .tools = tools,
                          .add_generation_prompt = add_generation_prompt,
                          .bos_token = c->bos ? c->bos : "",
                          .eos_token = c->eos ? c->eos : ""};
    kn_status st = tok_tmpl_render(c->tmpl, &in, text, len, NULL, err);
    return st == KN_OK ? KN_OK : (err && err->status ? err->status : KN_EINVAL);
}

kn_status tok_chat_tokenize(const tok_chat *c, const json_t *messages, const json_t *tools, int32_t **ids,
                            size_t *n, kn_err *err) {
    *ids = NULL;
    *n = 0;
    char *text = NULL;
    size_t len = 0;
    kn_status st = tok_chat_render(c, messages, tools, true, &text, &len, err);
    if (st != KN_OK) return st;
    const tok_vocab *v = c->vocab;
    /* A template that writes BOS itself must not get a second one. */
    bool add_special = !(c->bos && tok_add_bos(v) && len >= strlen(c->bos) && !strncmp(text, c->bos, strlen(c->bos)));
    st = tok_encode_alloc(v, text, len, add_special, true, ids, n, err);
    free(text);
    return st;
}
