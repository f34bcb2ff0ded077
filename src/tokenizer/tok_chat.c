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
    char *src;       /* the template's source */
    size_t src_len;
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

static char *dup_n(const char *p, size_t n) {
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = 0;
    }
    return s;
}

kn_status tok_chat_create_with(const gguf_ctx *g, const tok_vocab *v, const char *override, tok_chat **out,
                               const char **used_name, kn_err *err) {
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
    const char *used = NULL;
    if (override) {
        /* a built-in's name, else Jinja source */
        const char *b = tok_tmpl_builtin(override);
        const char *text = b ? b : override;
        size_t n = strlen(text);
        if (n > TOK_TMPL_MAX_SOURCE) {
            free(c);
            return kn_fail(err, KN_ERANGE, "the chat template override has %zu bytes; at most %u", n,
                           TOK_TMPL_MAX_SOURCE);
        }
        kn_err e2 = {0};
        if (!(c->tmpl = tok_tmpl_create(text, n, &e2))) {
            free(c);
            return kn_fail(err, e2.status ? e2.status : KN_EINVAL, "the chat template override does not parse: %s",
                           e2.msg);
        }
        used = b ? override : "override";
        c->src = dup_n(text, n);
        c->src_len = n;
    } else {
        c->tmpl = tok_tmpl_for_model(has ? src.data : NULL, has ? src.len : 0, vocab_has, (void *)v,
                                     arch_buf[0] ? arch_buf : NULL, &used, err);
        if (!c->tmpl) {
            free(c);
            return err ? err->status : KN_EINVAL;
        }
        const char *b = used && strcmp(used, "model") ? tok_tmpl_builtin(used) : NULL;
        c->src = b ? dup_n(b, strlen(b)) : dup_n(has ? src.data : "", has ? src.len : 0);
        c->src_len = b ? strlen(b) : has ? src.len : 0;
    }
    if (used_name) *used_name = used;
    c->bos = token_text(v, tok_bos(v));
    c->eos = token_text(v, tok_eos(v));
    if (!c->src) {
        tok_chat_destroy(c);
        return kn_fail(err, KN_ENOMEM, "out of memory");
    }
    *out = c;
    return KN_OK;
}

kn_status tok_chat_create(const gguf_ctx *g, const tok_vocab *v, tok_chat **out, const char **used_name,
                          kn_err *err) {
    return tok_chat_create_with(g, v, NULL, out, used_name, err);
}

const char *tok_chat_source(const tok_chat *c, size_t *len) {
    *len = c->src_len;
    return c->src;
}

void tok_chat_destroy(tok_chat *c) {
    if (!c) return;
    tok_tmpl_destroy(c->tmpl);
    free(c->src);
    free(c->bos);
    free(c->eos);
    free(c);
}

kn_status tok_chat_render_ex(const tok_chat *c, const json_t *messages, const json_t *tools, const json_t *extra,
                             bool add_generation_prompt, char **text, size_t *len, kn_err *err) {
    tok_tmpl_inputs in = {.messages = messages,
                          .tools = tools,
                          .add_generation_prompt = add_generation_prompt,
                          .bos_token = c->bos ? c->bos : "",
                          .eos_token = c->eos ? c->eos : "",
                          .extra = extra};
    kn_status st = tok_tmpl_render(c->tmpl, &in, text, len, NULL, err);
    return st == KN_OK ? KN_OK : (err && err->status ? err->status : KN_EINVAL);
}

kn_status tok_chat_render(const tok_chat *c, const json_t *messages, const json_t *tools, bool add_generation_prompt,
                          char **text, size_t *len, kn_err *err) {
    return tok_chat_render_ex(c, messages, tools, NULL, add_generation_prompt, text, len, err);
}

kn_status tok_chat_encode(const tok_chat *c, const char *text, size_t len, int32_t **ids, size_t *n, kn_err *err) {
    const tok_vocab *v = c->vocab;
    /* A template that writes BOS itself must not get a second one. */
    bool add_special = !(c->bos && tok_add_bos(v) && len >= strlen(c->bos) && !strncmp(text, c->bos, strlen(c->bos)));
    return tok_encode_alloc(v, text, len, add_special, true, ids, n, err);
}

kn_status tok_chat_tokenize(const tok_chat *c, const json_t *messages, const json_t *tools, int32_t **ids,
                            size_t *n, kn_err *err) {
    *ids = NULL;
    *n = 0;
    char *text = NULL;
    size_t len = 0;
    kn_status st = tok_chat_render(c, messages, tools, true, &text, &len, err);
    if (st != KN_OK) return st;
    st = tok_chat_encode(c, text, len, ids, n, err);
    free(text);
    return st;
}
