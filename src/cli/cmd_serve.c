/*
 * cmd_serve.c — `kiln serve`: the HTTP server over a model directory or one
 * model file, until SIGTERM/SIGINT, then a graceful shutdown.
 */
#include "cli.h"
#include "kiln/engine.h"
#include "kiln/model.h"
#include "kiln/runtime.h"
#include "kiln/server.h"
#include "kiln/tokenizer.h"

#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: kiln serve (-m FILE.gguf | --models DIR) [options]\n\n"
            "Serves GGUF models over HTTP with OpenAI-compatible (/v1/chat/completions, /v1/completions,\n"
            "/v1/embeddings, /v1/models), Ollama-compatible (/api/generate, /api/chat, /api/embed, /api/tags,\n"
            "/api/ps, /api/show, /api/version) and kiln routes (/health, /metrics, /tokenize, /detokenize,\n"
            "/cache/stats, /cache/clear).\n"
            "Stops on SIGTERM or SIGINT: stops accepting, finishes the requests in flight (up to the grace\n"
            "period), then unloads the models.\n\n"
            "Settings come from, in increasing precedence: defaults, --config FILE (YAML, the keys are the\n"
            "long flag names, e.g. `ctx-size: 2048`), the environment (KILN_HOST, KILN_PORT, KILN_MODELS,\n"
            "KILN_API_KEY, KILN_PROFILE, MODEL_UNLOAD_TIMEOUT, CLEANUP_CHECK_INTERVAL), then the flags.\n\n"
            "Boolean flags, marked [B] below, are switches: --flag alone means true. To set one either way, give\n"
            "--flag B or --flag=B, where B is true or false (also yes/no, on/off, 1/0); a word after a boolean\n"
            "flag that is not one of these is an error.\n\n"
            "options:\n"
            "      --models DIR        serve every DIR/<name>.gguf as <name>, loaded on first use (default ./models)\n"
            "  -m, --model FILE        serve this one file (loaded at startup; requests may omit \"model\")\n"
            "      --default-model N   the model for requests that name none\n"
            "      --host H            address to listen on (default 127.0.0.1; a public address without\n"
            "                          --api-key is warned about)\n"
            "      --port P            port (default 8080; 0 = any free port, logged at startup)\n"
            "  -t, --threads N         compute threads per model (default: online CPUs)\n"
            "  -c, --ctx-size N        context of EACH sequence (prompt + generated tokens), like Ollama's\n"
            "                          num_ctx; not a total split across slots as in llama-server\n"
            "                          (default 0 = the model's context_length, reduced to fit memory)\n"
            "  -np, --parallel N       sequences decoded together per model (default 4)\n"
            "  -b, --batch-size N      tokens per forward step: decode tokens plus prompt chunks (default 512)\n"
            "      --kv-tokens N       the KV pool of a model in positions (default 0 = parallel x ctx-size plus\n"
            "                          --cache-ram); a smaller pool is shared, and preempts when it runs out\n"
            "      --kv-block-size N   positions per KV block: 16, 32 (default), 64, 128 or 256\n"
            "      --cache-ram MIB     KV room for cached prompt prefixes beyond the slots (default 1024),\n"
            "                          taken only from memory the budget has left\n"
            "      --kv-type T         KV cache type: f16 (default) or q8_0 (8-bit, 59%% of the memory)\n"
            "      --spec MODE         speculative decoding for requests that do not choose: none, ngram\n"
            "                          (prompt lookup; default) or draft (needs -md)\n"
            "      --draft-max N       draft tokens verified per step (default 8; 0 = off)\n"
            "  -md, --model-draft FILE a draft model with the same vocabulary, for --spec draft\n"
            "      --chat-template NAME|JINJA  every model's chat template: a built-in (chatml, llama3, qwen3,\n"
            "                          harmony, ...; see `kiln template --help`) or Jinja source\n"
            "      --chat-template-file FILE   the same, read from FILE (a Hugging Face chat template)\n"
            "      --api-key KEY       require 'Authorization: Bearer KEY' on every route but /health\n"
            "      --config FILE       YAML settings file\n"
            "      --max-body BYTES    request body limit (default 8m; k/m/g suffixes)\n"
            "      --queue-len N       requests that may wait for a slot; more get 503 (default 64)\n"
            "      --queue-timeout S   longest wait for a slot before 503 (default 60)\n"
            "      --grace-period S    shutdown waits this long for requests in flight (default 30)\n"
            "      --conn-limit N      open connections (default 1024)\n"
            "      --conn-timeout S    idle connection timeout (default 60)\n"
            "      --send-timeout S    a client that reads nothing of its answer for S seconds is disconnected and\n"
            "                          its sequence cancelled (default 120)\n"
            "      --read-timeout S    the request body must arrive within S seconds of the headers (default 60)\n"
            "      --cors-origin LIST  let browsers on these origins call the API: \"*\" or a comma list of\n"
            "                          scheme://host[:port] (default: CORS off)\n"
            "      --log-prompts [B]   log prompt and completion text (default false: logs carry no request text)\n"
            "request limits (each breach is a 400 naming the field and the flag):\n"
            "      --limit-messages N  chat messages per request (default 1024)\n"
            "      --limit-max-tokens N  max_tokens/num_predict a request may ask; also caps a request that sets\n"
            "                          none (default 32768)\n"
            "      --limit-embed-inputs N  embedding inputs per request (default and most 2048)\n"
            "      --limit-stops N     stop strings per request (default and most 16)\n"
            "      --limit-logit-bias N  logit_bias entries per request (default 1024)\n"
            "      --limit-json-depth N  nesting of arrays and objects in a body (default 64)\n"
            "      --sla-p95-ms MS     end-to-end p95 target for the SLA verdict in /health (default 2000)\n"
            "      --sla-window S      window of the rolling latency percentiles in /health (default 300)\n"
            "model manager:\n"
            "      --memory-budget B   bytes all loaded models may take (k/m/g; default 90%% of the cgroup\n"
            "                          limit, else of MemAvailable); idle models are unloaded to make room\n"
            "      --unload-timeout S  seconds an idle model stays loaded (env MODEL_UNLOAD_TIMEOUT; default 300;\n"
            "                          -1 = never); requests may set Ollama's keep_alive\n"
            "      --cleanup-interval S  seconds between checks for expired models (env CLEANUP_CHECK_INTERVAL;\n"
            "                          default 30)\n"
            "      --preload NAMES     load these models at startup (comma-separated)\n"
            "      --pin NAMES         never unload these models\n"
            "      --alias A=T,...     extra model names\n"
            "      --profile P         latency | throughput | balanced (default) | memory: sets slots, batch\n"
            "                          wait, context, KV type, speculation and cache room; any flag still\n"
            "                          overrides (see --print-config)\n"
            "      --batch-wait-ms MS  how long an idle engine waits for more requests to batch (default 2)\n"
            "      --cpu-range LIST    CPUs to run on, e.g. 0-3 or 0,2,4-5\n"
            "      --print-config [B]  print the settings in effect (YAML) and exit\n"
            "  -n, --n-predict N       generation limit when a request sets none (default -1 = until the\n"
            "                          context is full or the model stops)\n"
            "      --mmap [B]          compute from the file mapping (less memory, slower decode; default false)\n"
            "response and embedding cache (deterministic answers and embeddings, answered X-Cache: hit|miss|bypass):\n"
            "      --response-cache [B]   cache completions that are greedy or seeded (default true)\n"
            "      --embedding-cache [B]  cache embeddings per input (default true)\n"
            "      --cache-mib N       memory tier (L1) in MiB, split between the two (default 512; 0 = none)\n"
            "      --cache-policy P    L1 eviction: lru (default), lfu, fifo or random\n"
            "      --cache-ttl-response S / --cache-ttl-embedding S  lifetimes (default 3600 / 86400)\n"
            "      --cache-compress [B]   zstd for L1 values over 1 KiB (default true)\n"
            "      --cache-dir DIR     disk tier (L2, LMDB; default $XDG_CACHE_HOME/kiln or ~/.cache/kiln);\n"
            "                          never inside the models directory\n"
            "      --cache-disk-size B L2 size limit, oldest entries evicted above it (default 10g; 0 = no L2)\n"
            "OpenAI Responses store (previous_response_id, GET /v1/responses/ID; oldest evicted first):\n"
            "      --responses-max N   stored responses kept (default 1000; 0 = store none)\n"
            "      --responses-mib N   their size in all, in MiB (default 64)\n"
            "      --responses-ttl S   seconds a stored response is kept (default 3600)\n");
}

/* The settings of kiln serve (srv_config_from_args). Returns -1 to go on
 * serving, else the exit status: 2 for bad settings, and --print-config's
 * (the settings printed, then 0). *cfg is to be freed whatever it returns. */
static int load_config(int argc, char **argv, srv_config *cfg) {
    kn_err err = {0};
    if (srv_config_from_args(cfg, argc, argv, &err) != KN_OK) {
        fprintf(stderr, "kiln serve: %s (see kiln serve --help)\n", err.msg);
        return 2;
    }
    if (!cfg->print_config) return -1;
    char *dump = srv_config_dump(cfg);
    if (dump) fputs(dump, stdout);
    free(dump);
    return dump ? 0 : 1;
}

/* The model registry's options from the settings. False (with a message)
 * when the KV type is not one the model layer knows. */
static bool runtime_opts(const srv_config *cfg, rt_opts *ro) {
    model_kv_type kv_type = MODEL_KV_F16;
    if (cfg->kv_type && !model_kv_type_parse(cfg->kv_type, &kv_type)) {
        fprintf(stderr, "kiln serve: --kv-type expects f16 or q8_0, got '%s'\n", cfg->kv_type);
        return false;
    }
    eng_spec_mode spec = ENG_SPEC_NONE;
    eng_spec_parse(cfg->spec, &spec); /* validated with the config */
    if (spec == ENG_SPEC_DRAFT && !cfg->model_draft)
        KN_WARN("--spec draft without -md/--model-draft: requests use prompt-lookup drafting");
    if (cfg->chat_template && cfg->chat_template_file) {
        fprintf(stderr, "kiln serve: give --chat-template or --chat-template-file, not both\n");
        return false;
    }
    *ro = (rt_opts){
        .threads = cfg->threads, .n_ctx = cfg->ctx, .n_slots = cfg->parallel, .max_batch = cfg->batch,
        .queue_len = cfg->queue_len, .queue_timeout_s = cfg->queue_timeout_s, .kv_type = kv_type,
        .mmap_weights = cfg->mmap_weights, .memory_budget = (uint64_t)cfg->memory_budget,
        .keep_alive_s = cfg->unload_timeout_s, .cleanup_interval_s = cfg->cleanup_interval_s,
        .load_wait_s = cfg->queue_timeout_s, .aliases = cfg->aliases, .pins = cfg->pin,
        .batch_wait_ms = cfg->batch_wait_ms, .block_size = cfg->kv_block_size,
        .kv_blocks = cfg->kv_tokens > 0 ? (cfg->kv_tokens + cfg->kv_block_size - 1) / cfg->kv_block_size : 0,
        .cache_bytes = (uint64_t)cfg->cache_ram_mib << 20, .spec = spec, .spec_max = cfg->draft_max,
        .draft_path = cfg->model_draft, .chat_template = cfg->chat_template};
    return true;
}

/* Pins the process to --cpu-range (before any thread starts: every thread
 * inherits the mask). False (with a message) when it cannot. */
static bool apply_cpu_range(const srv_config *cfg) {
    if (!cfg->cpu_range) return true;
    cpu_set_t set;
    int n_cpus = 0;
    kn_err err = {0};
    if (srv_config_cpu_set(cfg, &set, &n_cpus, &err) != KN_OK || sched_setaffinity(0, sizeof set, &set) != 0) {
        fprintf(stderr, "kiln serve: --cpu-range %s: %s\n", cfg->cpu_range, err.msg[0] ? err.msg : "cannot set");
        return false;
    }
    KN_INFO("running on CPUs %s (%d)", cfg->cpu_range, n_cpus);
    return true;
}

/* Loads what must be loaded before the server says it is ready: the one
 * file of -m, then every --preload name. False (with a message) when one
 * fails; the server is then drained at once. */
static bool load_startup_models(srv_server *srv, const srv_config *cfg) {
    rt_registry *reg = srv_registry(srv);
    const char *dm = srv_default_model(srv);
    kn_err err = {0};
    rt_model *m = NULL;
    if (dm && cfg->model_file) { /* one file: load it now; /health says "loading" meanwhile */
        if (rt_acquire(reg, dm, NULL, &m, &err) != KN_OK) {
            fprintf(stderr, "kiln serve: cannot load %s: %s\n", cfg->model_file, err.msg);
            srv_drain(srv, 0);
            return false;
        }
        rt_release(reg, m);
    }
    const char *cur = cfg->preload, *item;
    size_t len;
    while (cur && srv_config_list_next(&cur, &item, &len)) {
        char name[300];
        snprintf(name, sizeof name, "%.*s", (int)len, item);
        if (rt_acquire(reg, name, NULL, &m, &err) != KN_OK) {
            fprintf(stderr, "kiln serve: --preload %s: %s\n", name, err.msg);
            srv_drain(srv, 0);
            return false;
        }
        rt_release(reg, m);
    }
    return true;
}

/* What a person starting the server reads on stdout: the URL and a curl
 * line to try (with the key and the default model when there are). */
static void print_banner(const char *url, const srv_config *cfg, const char *dm) {
    printf("kiln is serving on %s\n", url);
    printf("try:\n  curl %s/v1/chat/completions -H 'Content-Type: application/json'%s%s%s -d '{%s%s%s\"messages\": "
           "[{\"role\": \"user\", \"content\": \"Tell me a story\"}], \"max_tokens\": 64}'\n",
           url, cfg->api_key ? " -H 'Authorization: Bearer " : "", cfg->api_key ? cfg->api_key : "",
           cfg->api_key ? "'" : "", dm ? "\"model\": \"" : "", dm ? dm : "", dm ? "\", " : "");
    printf("stop with Ctrl-C (or SIGTERM)\n");
    fflush(stdout);
}

/* Starts the server srv on its port, loads the startup models, says it is
 * ready, and serves until SIGINT/SIGTERM (blocked in sigs), then drains.
 * Returns the exit status. */
static int serve(srv_server *srv, const srv_config *cfg, kn_cpu_level lvl, sigset_t *sigs) {
    rt_registry *reg = srv_registry(srv);
    kn_err err = {0};
    if (rt_registry_count(reg) == 0) KN_WARN("no .gguf files in %s; every model request will get 404", cfg->models_dir);
    if (cfg->default_model && !rt_registry_has(reg, cfg->default_model)) {
        char names[400];
        rt_registry_names(reg, names, sizeof names);
        fprintf(stderr, "kiln serve: --default-model '%s' is not among the models (%s)\n", cfg->default_model,
                names[0] ? names : "none");
        return 1;
    }
    int port = 0;
    if (srv_start(srv, &port, &err) != KN_OK) {
        fprintf(stderr, "kiln serve: %s\n", err.msg);
        return 1;
    }
    bool v6 = strchr(cfg->host, ':') != NULL;
    char url[300];
    snprintf(url, sizeof url, "http://%s%s%s:%d", v6 ? "[" : "", cfg->host, v6 ? "]" : "", port);
    KN_INFO("listening on %s (%zu models, kernel set %s, %d threads per model, %d slots)", url,
            rt_registry_count(reg), kn_cpu_level_name(lvl), cfg->threads, cfg->parallel);
    if (!load_startup_models(srv, cfg)) return 1;
    srv_set_ready(srv);
    print_banner(url, cfg, srv_default_model(srv));
    KN_INFO("ready");

    int sig = 0;
    sigwait(sigs, &sig);
    KN_INFO("shutdown: received %s", sig == SIGINT ? "SIGINT" : "SIGTERM");
    srv_drain(srv, cfg->grace_s);
    return 0;
}

int cmd_serve(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    /* Models and KV pools come and go (TTL unloads, eviction under the
     * budget): with glibc's adaptive threshold, a freed multi-MiB buffer
     * raises the threshold and later ones stay in the heap, so the RSS of a
     * server that unloaded a model never comes back down. A fixed 1 MiB
     * threshold maps every large buffer and gives it back on free. */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    srv_config cfg;
    int rc = load_config(argc, argv, &cfg);
    if (rc >= 0) {
        srv_config_free(&cfg);
        return rc;
    }
    rc = 1;
    srv_server *srv = NULL;
    kn_err err = {0};
    kn_cpu_level lvl;
    tensor_ops ops;
    rt_opts ro;
    char *tmpl_src = NULL;
    if (kn_cpu_select(&lvl, &err) != KN_OK) {
        fprintf(stderr, "kiln serve: %s\n", err.msg);
        goto done;
    }
    tensor_ops_init(&ops, lvl);
    if (!runtime_opts(&cfg, &ro) || !apply_cpu_range(&cfg)) goto done;
    if (cfg.chat_template_file) {
        size_t tlen = 0;
        if (kn_read_file(cfg.chat_template_file, TOK_TMPL_MAX_SOURCE, &tmpl_src, &tlen, &err) != KN_OK) {
            fprintf(stderr, "kiln serve: --chat-template-file %s: %s\n", cfg.chat_template_file, err.msg);
            goto done;
        }
        ro.chat_template = tmpl_src;
    }
    if (ro.chat_template) {
        /* a template that does not parse is a startup error, not a per-model one */
        const char *b = tok_tmpl_builtin(ro.chat_template);
        tok_tmpl *t = tok_tmpl_create(b ? b : ro.chat_template, strlen(b ? b : ro.chat_template), &err);
        if (!t) {
            fprintf(stderr, "kiln serve: the chat template does not parse: %s\n", err.msg);
            goto done;
        }
        tok_tmpl_destroy(t);
        KN_INFO("chat template for every model: %s", b ? ro.chat_template : cfg.chat_template_file ? cfg.chat_template_file : "given source");
    }
    /* signals are taken by this thread only (sigwait in serve): block them
     * before any thread starts, so that every thread inherits the mask */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (srv_create(&cfg, &ro, &ops, &srv, &err) != KN_OK) {
        fprintf(stderr, "kiln serve: %s\n", err.msg);
        goto done;
    }
    rc = serve(srv, &cfg, lvl, &sigs);
done:
    srv_destroy(srv);
    if (rc == 0) KN_INFO("shutdown: done");
    srv_config_free(&cfg);
    free(tmpl_src);
    return rc;
}
