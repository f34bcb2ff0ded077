/*
 * cmd_template.c — `kiln template`: render a chat template (the model's
 * tokenizer.chat_template, a built-in, or a .jinja file) for a JSON list of
 * messages and print the prompt exactly, with no added newline.
 */
#include "cli.h"
#include "gguf/gguf.h"
#include "tokenizer/chat_template.h"

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
    kn_err err;
    if (kn_read_file(path, MAX_JSON_FILE, &buf, &len, &err) != KN_OK) {
        fprintf(stderr, "kiln template: %s\n", err.msg);
        return NULL;
    }
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

int cmd_template(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *model = NULL, *tpath = NULL, *builtin = NULL, *mpath = NULL, *toolpath = NULL, *varpath = NULL;
    const char *bos = NULL, *eos = NULL, *now_s = NULL;
    bool gen = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) dst = &model;
        else if (!strcmp(a, "--template")) dst = &tpath;
        else if (!strcmp(a, "--builtin")) dst = &builtin;
        else if (!strcmp(a, "--messages")) dst = &mpath;
        else if (!strcmp(a, "--tools")) dst = &toolpath;
        else if (!strcmp(a, "--vars")) dst = &varpath;
        else if (!strcmp(a, "--bos")) dst = &bos;
        else if (!strcmp(a, "--eos")) dst = &eos;
        else if (!strcmp(a, "--now")) dst = &now_s;
        else if (!strcmp(a, "--no-generation-prompt")) { gen = false; continue; }
        else {
            fprintf(stderr, "kiln template: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (!(*dst = cli_flag_value("template", argc, argv, &i))) return 2;
    }
    if ((model != NULL) + (tpath != NULL) + (builtin != NULL) != 1 || !mpath) {
        fprintf(stderr, "kiln template: need exactly one of -m, --template, --builtin, and --messages\n");
        usage(stderr);
        return 2;
    }
    struct tm now;
    if (now_s && !parse_now(now_s, &now)) {
        fprintf(stderr, "kiln template: --now wants YYYY-MM-DD[THH:MM[:SS]], got '%s'\n", now_s);
        return 2;
    }

    int rc = 1;
    kn_err err;
    gguf_ctx *g = NULL;
    char *src = NULL, *mbos = NULL, *meos = NULL, *out = NULL;
    tok_tmpl *t = NULL;
    json_t *msgs = NULL, *tools = NULL, *vars = NULL;

    if (!(msgs = load_json(mpath, "--messages"))) goto done;
    if (!json_is_array(msgs)) {
        fprintf(stderr, "kiln template: %s: --messages must be a JSON array\n", mpath);
        goto done;
    }
    if (toolpath && !(tools = load_json(toolpath, "--tools"))) goto done;
    if (tools && !json_is_array(tools)) {
        fprintf(stderr, "kiln template: %s: --tools must be a JSON array\n", toolpath);
        goto done;
    }
    if (varpath && !(vars = load_json(varpath, "--vars"))) goto done;
    if (vars && !json_is_object(vars)) {
        fprintf(stderr, "kiln template: %s: --vars must be a JSON object\n", varpath);
        goto done;
    }

    if (model) {
        if (gguf_open(model, &g, &err) != KN_OK) {
            fprintf(stderr, "kiln template: %s: %s\n", model, err.msg);
            goto done;
        }
        gguf_str ts = {0, NULL}, arch = {0, NULL};
        bool has_tmpl = gguf_get_str(g, "tokenizer.chat_template", &ts) == KN_OK;
        char archbuf[64] = "";
        if (gguf_get_str(g, "general.architecture", &arch) == KN_OK && arch.len < sizeof archbuf) {
            memcpy(archbuf, arch.data, arch.len);
            archbuf[arch.len] = 0;
        }
        const char *used = NULL;
        t = tok_tmpl_for_model(has_tmpl ? ts.data : NULL, has_tmpl ? ts.len : 0, gguf_has_token, g,
                               archbuf[0] ? archbuf : NULL, &used, &err);
        if (!t) {
            fprintf(stderr, "kiln template: %s\n", err.msg);
            goto done;
        }
        mbos = model_token(g, "tokenizer.ggml.bos_token_id");
        meos = model_token(g, "tokenizer.ggml.eos_token_id");
    } else if (builtin) {
        const char *bsrc = tok_tmpl_builtin(builtin);
        if (!bsrc) {
            fprintf(stderr, "kiln template: unknown built-in '%s'\n", builtin);
            rc = 2;
            goto done;
        }
        if (!(t = tok_tmpl_create(bsrc, strlen(bsrc), &err))) {
            fprintf(stderr, "kiln template: %s\n", err.msg);
            goto done;
        }
    } else {
        size_t len;
        if (kn_read_file(tpath, TOK_TMPL_MAX_SOURCE, &src, &len, &err) != KN_OK) {
            fprintf(stderr, "kiln template: %s\n", err.msg);
            goto done;
        }
        if (!(t = tok_tmpl_create(src, len, &err))) {
            fprintf(stderr, "kiln template: %s: %s\n", tpath, err.msg);
            goto done;
        }
    }

    tok_tmpl_inputs in = {
        .messages = msgs,
        .tools = tools,
        .extra = vars,
        .add_generation_prompt = gen,
        .bos_token = bos ? bos : mbos ? mbos : "",
        .eos_token = eos ? eos : meos ? meos : "",
        .now = now_s ? &now : NULL,
    };
    size_t olen;
    bool raised;
    if (tok_tmpl_render(t, &in, &out, &olen, &raised, &err) != KN_OK) {
        fprintf(stderr, "%s\n", err.msg);
        goto done;
    }
    if (fwrite(out, 1, olen, stdout) != olen || fflush(stdout) != 0) {
        fprintf(stderr, "kiln template: write error\n");
        goto done;
    }
    rc = 0;
done:
    free(out);
    tok_tmpl_destroy(t);
    free(src);
    free(mbos);
    free(meos);
    json_decref(msgs);
    json_decref(tools);
    json_decref(vars);
    gguf_close(g);
    return rc;
}
