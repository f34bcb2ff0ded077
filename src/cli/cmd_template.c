/*
 * cmd_template.c — `kiln template`: render a chat template (the model's
 * tokenizer.chat_template, a built-in, or a .jinja file) for a JSON list of
 * messages and print the prompt exactly, with no added newline.
 */
#include "cli.h"
#include "kiln/gguf.h"
#include "kiln/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_JSON_FILE ((size_t)64 << 20)

static void usage(FILE *f) {
    fprintf(f,
            "usage: kiln template (-m FILE.gguf | --template FILE.jinja | --builtin NAME) --messages FILE.json\n"
            "                     [--tools FILE.json] [--vars FILE.json] [--bos TEXT] [--eos TEXT]\n"
            "                     [--now 2024-07-26T12:00:00] [--no-generation-prompt]\n"
            "\n"
            "Renders a chat template and prints the prompt to stdout (no newline added).\n"
            "  -m FILE.gguf           use the model's tokenizer.chat_template (a built-in when it has\n"
            "                         none or the engine cannot run it); BOS/EOS default to its tokens\n"
            "  --template FILE.jinja  use this template source\n"
            "  --builtin NAME         use a built-in: chatml llama2 llama3 mistral zephyr phi3 gemma\n"
            "                         qwen3 gemma4 harmony\n"
            "  --messages FILE.json   a JSON array of {\"role\", \"content\", ...} messages\n"
            "  --tools FILE.json      a JSON array of OpenAI function tools (the `tools` variable)\n"
            "  --vars FILE.json       a JSON object of extra template variables\n"
            "  --bos TEXT, --eos TEXT bos_token / eos_token (override the model's)\n"
            "  --now TIME             pin strftime_now to this local time (YYYY-MM-DD[THH:MM[:SS]])\n"
            "  --no-generation-prompt set add_generation_prompt to false (default true)\n"
            "A template error (raise_exception's message included) goes to stderr with exit status 1.\n");
}

static json_t *load_json(const char *path, const char *what) {
    char *buf;
    size_t len;
    if (!cli_read_file("template", path, MAX_JSON_FILE, &buf, &len)) return NULL;
    json_error_t je;
    json_t *j = json_loadb(buf, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    free(buf);
    if (!j) fprintf(stderr, "kiln template: %s: bad JSON for %s at line %d: %s\n", path, what, je.line, je.text);
    return j;
}

static bool parse_now(const char *s, struct tm *tm) {
    int Y, M, D, h = 0, m = 0, sec = 0, n = 0;
    memset(tm, 0, sizeof *tm);
    if (sscanf(s, "%4d-%2d-%2d%n", &Y, &M, &D, &n) != 3) return false;
    const char *r = s + n;
    if (*r == 'T' || *r == ' ') {
        int k = 0;
        if (sscanf(r + 1, "%2d:%2d%n", &h, &m, &k) != 2) return false;
        r += 1 + k;
        if (*r == ':') {
            if (sscanf(r + 1, "%2d%n", &sec, &k) != 1) return false;
            r += 1 + k;
        }
    }
    if (*r || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60 || h < 0 || m < 0 || sec < 0) return false;
    tm->tm_year = Y - 1900;
    tm->tm_mon = M - 1;
    tm->tm_mday = D;
    tm->tm_hour = h;
    tm->tm_min = m;
    tm->tm_sec = sec;
    tm->tm_isdst = -1;
    struct tm t2 = *tm;
    if (mktime(&t2) == (time_t)-1) return false; /* fills weekday and day of year */
    tm->tm_wday = t2.tm_wday;
    tm->tm_yday = t2.tm_yday;
    return true;
}

/* The text of token `key` (a token id) from tokenizer.ggml.tokens, malloc'd. */
static char *model_token(const gguf_ctx *g, const char *key) {
    uint64_t id;
    gguf_str s;
    if (gguf_get_u64(g, key, &id) != KN_OK) return NULL;
    if (gguf_get_arr_str(g, "tokenizer.ggml.tokens", id, &s) != KN_OK) return NULL;
    char *out = malloc(s.len + 1);
    if (!out) return NULL;
    memcpy(out, s.data, s.len);
    out[s.len] = 0;
    return out;
}

static bool gguf_has_token(void *ctx, const char *text) {
    const gguf_ctx *g = ctx;
    gguf_type et;
    uint64_t n;
    const void *data;
    if (gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data) != KN_OK || et != GGUF_TYPE_STRING) return false;
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        if (gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &s) == KN_OK && gguf_str_eq(s, text)) return true;
    }
    return false;
}

typedef struct opts {
    const char *model, *tpath, *builtin;    /* -m, --template, --builtin: exactly one */
    const char *mpath, *toolpath, *varpath; /* --messages, --tools, --vars */
    const char *bos, *eos, *now_s;
    struct tm now; /* --now, parsed */
    bool gen;      /* add_generation_prompt */
} opts;

/* Fills *o from argv. Returns -1 to go on, else the exit status (2). */
static int parse_opts(int argc, char **argv, opts *o) {
    *o = (opts){.gen = true};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) dst = &o->model;
        else if (!strcmp(a, "--template")) dst = &o->tpath;
        else if (!strcmp(a, "--builtin")) dst = &o->builtin;
        else if (!strcmp(a, "--messages")) dst = &o->mpath;
        else if (!strcmp(a, "--tools")) dst = &o->toolpath;
        else if (!strcmp(a, "--vars")) dst = &o->varpath;
        else if (!strcmp(a, "--bos")) dst = &o->bos;
        else if (!strcmp(a, "--eos")) dst = &o->eos;
        else if (!strcmp(a, "--now")) dst = &o->now_s;
        else if (!strcmp(a, "--no-generation-prompt")) { o->gen = false; continue; }
        else {
            fprintf(stderr, "kiln template: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (!(*dst = cli_flag_value("template", argc, argv, &i))) return 2;
    }
    if ((o->model != NULL) + (o->tpath != NULL) + (o->builtin != NULL) != 1 || !o->mpath) {
        fprintf(stderr, "kiln template: need exactly one of -m, --template, --builtin, and --messages\n");
        usage(stderr);
        return 2;
    }
    if (o->now_s && !parse_now(o->now_s, &o->now)) {
        fprintf(stderr, "kiln template: --now wants YYYY-MM-DD[THH:MM[:SS]], got '%s'\n", o->now_s);
        return 2;
    }
    return -1;
}

/* The template's variables from --messages, --tools and --vars. */
typedef struct inputs {
    json_t *msgs, *tools, *vars; /* owned; tools and vars may be NULL */
} inputs;

/* Loads and checks the JSON files of o. False after printing why. */
static bool load_inputs(const opts *o, inputs *in) {
    if (!(in->msgs = load_json(o->mpath, "--messages"))) return false;
    if (!json_is_array(in->msgs)) {
        fprintf(stderr, "kiln template: %s: --messages must be a JSON array\n", o->mpath);
        return false;
    }
    if (o->toolpath && !(in->tools = load_json(o->toolpath, "--tools"))) return false;
    if (in->tools && !json_is_array(in->tools)) {
        fprintf(stderr, "kiln template: %s: --tools must be a JSON array\n", o->toolpath);
        return false;
    }
    if (o->varpath && !(in->vars = load_json(o->varpath, "--vars"))) return false;
    if (in->vars && !json_is_object(in->vars)) {
        fprintf(stderr, "kiln template: %s: --vars must be a JSON object\n", o->varpath);
        return false;
    }
    return true;
}

/* A compiled template with what it may borrow from: keep all of it until
 * the rendering is done. */
typedef struct tmpl {
    tok_tmpl *t;
    gguf_ctx *g;     /* -m: the open model */
    char *src;       /* --template: the file's text */
    char *bos, *eos; /* -m: the model's BOS and EOS text (NULL when it has none) */
} tmpl;

/* -m: the model's tokenizer.chat_template, or the built-in for its
 * architecture; its BOS and EOS. */
static bool tmpl_from_model(const char *path, tmpl *tp) {
    kn_err err;
    if (gguf_open(path, &tp->g, &err) != KN_OK) {
        fprintf(stderr, "kiln template: %s: %s\n", path, err.msg);
        return false;
    }
    gguf_str ts = {0, NULL}, arch = {0, NULL};
    bool has_tmpl = gguf_get_str(tp->g, "tokenizer.chat_template", &ts) == KN_OK;
    char archbuf[64] = "";
    if (gguf_get_str(tp->g, "general.architecture", &arch) == KN_OK && arch.len < sizeof archbuf) {
        memcpy(archbuf, arch.data, arch.len);
        archbuf[arch.len] = 0;
    }
    const char *used = NULL;
    tp->t = tok_tmpl_for_model(has_tmpl ? ts.data : NULL, has_tmpl ? ts.len : 0, gguf_has_token, tp->g,
                               archbuf[0] ? archbuf : NULL, &used, &err);
    if (!tp->t) {
        fprintf(stderr, "kiln template: %s\n", err.msg);
        return false;
    }
    tp->bos = model_token(tp->g, "tokenizer.ggml.bos_token_id");
    tp->eos = model_token(tp->g, "tokenizer.ggml.eos_token_id");
    return true;
}

/* Compiles the template o names. Returns -1 on success, else the exit
 * status (1, or 2 for an unknown built-in) after printing why. */
static int tmpl_open(const opts *o, tmpl *tp) {
    kn_err err;
    if (o->model) return tmpl_from_model(o->model, tp) ? -1 : 1;
    if (o->builtin) {
        const char *bsrc = tok_tmpl_builtin(o->builtin);
        if (!bsrc) {
            fprintf(stderr, "kiln template: unknown built-in '%s'\n", o->builtin);
            return 2;
        }
        if (!(tp->t = tok_tmpl_create(bsrc, strlen(bsrc), &err))) {
            fprintf(stderr, "kiln template: %s\n", err.msg);
            return 1;
        }
        return -1;
    }
    size_t len;
    if (!cli_read_file("template", o->tpath, TOK_TMPL_MAX_SOURCE, &tp->src, &len)) return 1;
    if (!(tp->t = tok_tmpl_create(tp->src, len, &err))) {
        fprintf(stderr, "kiln template: %s: %s\n", o->tpath, err.msg);
        return 1;
    }
    return -1;
}

/* Renders and writes the prompt. Returns the exit status (0 or 1). */
static int render(const opts *o, const inputs *in, const tmpl *tp) {
    tok_tmpl_inputs ti = {
        .messages = in->msgs,
        .tools = in->tools,
        .extra = in->vars,
        .add_generation_prompt = o->gen,
        .bos_token = o->bos ? o->bos : tp->bos ? tp->bos : "",
        .eos_token = o->eos ? o->eos : tp->eos ? tp->eos : "",
        .now = o->now_s ? &o->now : NULL,
    };
    kn_err err;
    char *out = NULL;
    size_t olen;
    bool raised;
    int rc = 1;
    if (tok_tmpl_render(tp->t, &ti, &out, &olen, &raised, &err) != KN_OK)
        fprintf(stderr, "%s\n", err.msg);
    else if (fwrite(out, 1, olen, stdout) != olen || fflush(stdout) != 0)
        fprintf(stderr, "kiln template: write error\n");
    else
        rc = 0;
    free(out);
    return rc;
}

int cmd_template(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc >= 0) return rc;
    inputs in = {0};
    tmpl tp = {0};
    rc = 1;
    if (load_inputs(&o, &in) && (rc = tmpl_open(&o, &tp)) < 0) rc = render(&o, &in, &tp);
    tok_tmpl_destroy(tp.t);
    free(tp.src);
    free(tp.bos);
    free(tp.eos);
    json_decref(in.msgs);
    json_decref(in.tools);
    json_decref(in.vars);
    gguf_close(tp.g);
    return rc;
}
