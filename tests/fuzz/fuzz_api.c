/* fuzz_api.c — libFuzzer target for the request layer (server/api.h):
 * bytes -> JSON -> validated request, for every route's parser. The first
 * byte picks the route (chat, completions, Ollama generate, Ollama chat,
 * OpenAI embeddings, Ollama embed) and whether the server's default limits
 * or tiny ones apply (so that every limit check is reached); the rest is the
 * body. Errors are fine;
 * any crash, leak or sanitizer report is a bug, and so is an error without
 * an HTTP status or a message. */
#include "server/api.h"

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
    bool ok;
    if (route < 4) {
        srv_gen_req q;
        ok = srv_parse_gen((srv_api)route, root, &lim, &q, &e);
        if (ok) {
            /* within the limits, and touch what the handlers use */
            if (q.n_stops > (size_t)lim.stops || q.sp.n_bias > lim.logit_bias ||
                (q.messages && json_array_size(q.messages) > (size_t)lim.messages) ||
                (q.n_predict_set && q.n_predict > lim.max_tokens))
                abort();
            volatile size_t sink = q.prompt_len + q.n_prompt_tokens + q.n_stops;
            for (size_t i = 0; i < q.n_stops; i++) sink += strlen(q.stops[i]);
            for (int i = 0; i < q.sp.n_bias; i++) sink += (size_t)q.sp.bias[i].token;
            if (q.messages) sink += json_array_size(q.messages);
            (void)sink;
        }
        srv_gen_req_free(&q);
    } else {
        srv_embed_req q;
        ok = srv_parse_embed(route == 5, root, &lim, &q, &e);
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
        json_t *j = srv_error_json(&e, route == 2 || route == 3 || route == 5);
        if (!j) abort();
        json_decref(j);
    }
    json_decref(root);
    return 0;
}
