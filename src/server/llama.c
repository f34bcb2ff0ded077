/*
 * llama.c — llama-server's native dialect: POST /completion. Requests use
 * llama-server's field names (prompt, n_predict, temperature, top_k, top_p,
 * min_p, typical_p, repeat_penalty, repeat_last_n, presence_penalty,
 * frequency_penalty, seed (-1: random), stop, ignore_eos, grammar,
 * speculative.n_max, stream); answers are {content, stop, stop_type,
 * tokens_predicted, tokens_evaluated, ...} objects, streamed as SSE
 * ("data: {content, stop: false}" pieces and a final object with stop: true,
 * without a [DONE] line, as llama-server does). Errors have the OpenAI shape
 * ({"error": {message, type, param, code}}), which llama-server also uses.
 * Fields llama-server has and kiln does not (n_probs, dynatemp, mirostat,
 * samplers, ...) are refused with a 400 rather than ignored when they would
 * change the output.
 */
#include "dialect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* llama-server fields that change the output and that kiln does not implement. */
static const char *const UNSUPPORTED[] = {"n_probs",        "dynatemp_range",  "mirostat",    "samplers",
                                          "dry_multiplier", "xtc_probability", "lora",
                                          "n_indent",       "t_max_predict_ms"};

static bool parse_llama(json_t *root, const srv_limits *lim, srv_gen_req *r, srv_error *e) {
    for (size_t i = 0; i < sizeof UNSUPPORTED / sizeof *UNSUPPORTED; i++) {
        json_t *v = json_object_get(root, UNSUPPORTED[i]);
        /* the values that mean "off" are fine */
        if (!v || json_is_null(v) || (json_is_number(v) && json_number_value(v) == 0) ||
            (json_is_array(v) && json_array_size(v) == 0))
            continue;
        return srv_err(e, 400, UNSUPPORTED[i], "unsupported", "'%s' is not supported by kiln",
                       UNSUPPORTED[i]);
    }
    if (!srv_get_str(root, "model", "model", &r->q.model, NULL, e)) return false;
    if (!srv_get_bool(root, "stream", "stream", &r->stream, e)) return false;
    if (!srv_get_bool(root, "cache", "cache", &r->q.cache, e)) return false;
    json_t *seed = json_object_get(root, "seed");
    bool random_seed = json_is_integer(seed) && json_integer_value(seed) == -1;
    if (!srv_get_sampler_fields(root, "", lim, r, e) || !srv_get_engine_fields(root, "", r, e)) return false;
    if (random_seed) r->q.seed_set = false; /* llama-server's -1: a fresh seed */
    size_t glen = 0;
    if (!srv_get_str(root, "grammar", "grammar", &r->q.grammar, &glen, e)) return false;
    if (r->q.grammar && strlen(r->q.grammar) != glen)
        return srv_err(e, 400, "grammar", "invalid_value", "'grammar' must not contain NUL characters");
    json_t *js = json_object_get(root, "json_schema");
    if (js && !json_is_null(js)) {
        if (!json_is_object(js) && !json_is_boolean(js))
            return srv_err(e, 400, "json_schema", "invalid_type", "'json_schema' must be a JSON Schema object");
        r->q.json_schema = js;
        r->q.json_schema_param = "json_schema";
    }
    long long x = -1;
    bool set = false;
    if (!srv_get_int(root, "n_predict", "n_predict", -1, 1 << 24, &x, &set, e)) return false;
    if (set && x > lim->max_tokens)
        return srv_err(e, 400, "n_predict", "limit_exceeded",
                       "'n_predict' is %lld; this server allows at most %d (--limit-max-tokens)", x,
                       lim->max_tokens);
    if (set) { /* -1: until the context is full (within the server's cap) */
        r->q.n_predict = (int32_t)x;
        r->q.n_predict_set = true;
    }
    json_t *p = json_object_get(root, "prompt");
    if (!p || json_is_null(p)) return srv_err(e, 400, "prompt", "missing_field", "'prompt' is required");
    if (json_is_string(p)) {
        r->q.prompt = json_string_value(p);
        r->q.prompt_len = json_string_length(p);
        return true;
    }
    if (!json_is_array(p) || json_array_size(p) == 0 || json_array_size(p) > (1u << 24))
        return srv_err(e, 400, "prompt", "invalid_type",
                       "'prompt' must be a string or a non-empty array of token ids");
    size_t n = json_array_size(p);
    if (!(r->prompt_tokens = malloc(n * sizeof *r->prompt_tokens)))
        return srv_err(e, 500, NULL, NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(p, i);
        if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > INT32_MAX)
            return srv_err(e, 400, "prompt", "invalid_type", "'prompt[%zu]' must be a token id", i);
        r->prompt_tokens[i] = (int32_t)json_integer_value(t);
    }
    r->q.prompt_tokens = r->prompt_tokens;
    r->q.n_prompt_tokens = n;
    return true;
}

/* "eos" for a stop (an end-of-generation token, a stop string or a complete
 * grammar: kiln does not tell them apart), "limit" for the length. */
static const char *stop_type(const srv_job *j) {
    switch (j->res.finish) {
    case ENG_FINISH_STOP: return "eos";
    case ENG_FINISH_LENGTH: return "limit";
    default: return "none";
    }
}

static json_t *final_obj(srv_job *j, json_t *content) {
    const eng_req_result *r = &j->res;
    double t_prompt = r->t_first > r->t_start && r->t_start > 0 ? r->t_first - r->t_start : 0;
    double t_gen = r->t_end > r->t_first && r->t_first > 0 ? r->t_end - r->t_first : 0;
    json_t *timings =
        json_pack("{s:I, s:f, s:I, s:f}", "prompt_n", (json_int_t)r->n_prompt, "prompt_ms", t_prompt * 1e3,
                  "predicted_n", (json_int_t)r->n_gen, "predicted_ms", t_gen * 1e3);
    return json_pack("{s:i, s:o, s:[], s:b, s:s, s:I, s:I, s:b, s:s, s:s, s:o}", "index", 0, "content",
                     content, "tokens", "stop", 1, "model", srv_job_model(j), "tokens_predicted",
                     (json_int_t)r->n_gen, "tokens_evaluated", (json_int_t)r->n_prompt, "truncated", 0,
                     "stop_type", stop_type(j), "stopping_word", "", "timings", timings);
}

static void llama_piece(srv_job *j, const char *text, size_t n, const eng_tok_event *ev, size_t nev) {
    (void)ev, (void)nev;
    srv_job_emit(j, json_pack("{s:i, s:o, s:[], s:b}", "index", 0, "content", srv_json_text(text, n),
                              "tokens", "stop", 0));
}

static void llama_end(srv_job *j) {
    if (j->res.finish == ENG_FINISH_ERROR || j->res.finish == ENG_FINISH_CANCELLED) {
        srv_error e;
        srv_job_error(j, &e);
        srv_job_emit(j, srv_openai_error_json(&e));
        return;
    }
    srv_job_emit(j, final_obj(j, json_string("")));
}

static json_t *llama_whole(srv_job *j) {
    return final_obj(j, srv_json_text(j->acc.p ? j->acc.p : "", j->acc.n));
}

const srv_gen_dialect srv_llama_completion = {
    .name = "llama.completion",
    .error_json = srv_openai_error_json,
    .sse = true,
    .stream_type = "text/event-stream",
    .id_prefix = "cmpl",
    .parse = parse_llama,
    .stream_piece = llama_piece,
    .stream_end = llama_end,
    .whole = llama_whole,
};
