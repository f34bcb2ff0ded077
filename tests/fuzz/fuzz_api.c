/* fuzz_api.c — libFuzzer target for the request layer (server/api.h and
 * the dialect tables of server/dialect.h):
 * bytes -> JSON -> validated request, for every route's parser. The first
 * byte picks the route (chat, completions, Ollama generate, Ollama chat,
 * OpenAI embeddings, Ollama embed) and whether the server's default limits
 * or tiny ones apply (so that every limit check is reached); the rest is the
 * body. Errors are fine;
 * any crash, leak or sanitizer report is a bug, and so is an error without
 * an HTTP status or a message. */
#include "server/dialect.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    unsigned route = data[0] % 6;
    srv_limits lim = srv_limits_default();
    if ((data[0] / 6) % 2) /* tiny limits: every breach path */
        lim = (srv_limits){.json_depth = 3, .messages = 2, .max_tokens = 5, .embed_inputs = 2, .stops = 1,
                           .logit_bias = 2};
    srv_error e;
    memset(&e, 0, sizeof e);
    json_t *root = srv_parse_json((const char *)data + 1, size - 1, lim.json_depth, &e);
    if (!root) {
        if (e.status != 400 || !e.msg[0]) abort();
        return 0;
    }
    static const srv_gen_dialect *const GEN[4] = {&srv_openai_chat, &srv_openai_completions, &srv_ollama_generate,
                                                  &srv_ollama_chat};
    static const srv_embed_dialect *const EMB[2] = {&srv_openai_embeddings, &srv_ollama_embed};
    bool ok;
    srv_error_fn shape;
    if (route < 4) {
        srv_gen_req q;
        srv_gen_req_init(&q);
        ok = GEN[route]->parse(root, &lim, &q, &e);
        shape = GEN[route]->error_json;
        if (ok) {
            /* within the limits, and touch what the handlers use */
            if (q.q.n_stops > (size_t)lim.stops || q.q.sp.n_bias > lim.logit_bias ||
                (q.messages && json_array_size(q.messages) > (size_t)lim.messages) ||
                (q.q.n_predict_set && q.q.n_predict > lim.max_tokens))
                abort();
            volatile size_t sink = q.q.prompt_len + q.q.n_prompt_tokens + q.q.n_stops;
            for (size_t i = 0; i < q.q.n_stops; i++) sink += strlen(q.q.stops[i]);
            for (int i = 0; i < q.q.sp.n_bias; i++) sink += (size_t)q.q.sp.bias[i].token;
            if (q.q.messages) sink += json_array_size(q.q.messages);
            (void)sink;
        }
        srv_gen_req_free(&q);
    } else {
        srv_embed_req q;
        ok = EMB[route - 4]->parse(root, &lim, &q, &e);
        shape = EMB[route - 4]->error_json;
        if (ok) {
            if (q.n > (size_t)lim.embed_inputs) abort();
            volatile size_t sink = 0;
            for (size_t i = 0; i < q.n; i++) sink += q.lens[i];
            (void)sink;
        }
        srv_embed_req_free(&q);
    }
    if (!ok && (e.status < 400 || e.status > 599 || !e.msg[0])) abort();
    if (!ok) {
        json_t *j = shape(&e);
        if (!j) abort();
        json_decref(j);
    }
    json_decref(root);
    return 0;
}
