/*
 * config_yaml.c — the YAML side of `kiln serve`'s settings: reading a
 * config file (at most 1 MiB, one flat mapping of scalars; libyaml events,
 * so that every error names its line) and writing the settings in effect
 * back as YAML that the loader reads (srv_config_dump). The format is in
 * kiln/server.h.
 */
#include "config_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

/* ---- loading ---------------------------------------------------------------- */

static unsigned long line_of(const yaml_event_t *ev) { return (unsigned long)ev->start_mark.line + 1; }

static const char *event_what(yaml_event_type_t t) {
    switch (t) {
    case YAML_MAPPING_START_EVENT: return "a mapping";
    case YAML_SEQUENCE_START_EVENT: return "a sequence";
    case YAML_ALIAS_EVENT: return "an alias";
    case YAML_SCALAR_EVENT: return "a scalar";
    default: return "not a value";
    }
}

/* A plain scalar that YAML reads as null. */
static bool is_null_scalar(const yaml_event_t *ev) {
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return false;
    const char *v = (const char *)ev->data.scalar.value;
    return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL");
}

/* Parses the YAML text in buf into tmp. */
static kn_status yaml_apply(srv_config *tmp, const char *path, const char *buf, size_t len, kn_err *err) {
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) return kn_fail(err, KN_ENOMEM, "%s: out of memory", path);
    yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);

    kn_status st = KN_OK;
    unsigned long seen_line[CFG_N_KEYS] = {0};
    enum { S_STREAM, S_DOC, S_TOP, S_KEY, S_VALUE, S_DOC_END, S_AFTER } state = S_STREAM;
    int key_idx = -1;
    unsigned long key_line = 0;
    char key_text[CFG_SHOW + 1] = {0};
    bool done = false;

    while (!done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            if (p.error == YAML_MEMORY_ERROR) {
                st = kn_fail(err, KN_ENOMEM, "%s: out of memory", path);
            } else if (p.context) {
                st = kn_fail(err, KN_EFORMAT, "%s:%lu:%lu: malformed YAML: %s (%s at line %lu)", path,
                             (unsigned long)p.problem_mark.line + 1, (unsigned long)p.problem_mark.column + 1,
                             p.problem ? p.problem : "error", p.context, (unsigned long)p.context_mark.line + 1);
            } else {
                st = kn_fail(err, KN_EFORMAT, "%s:%lu:%lu: malformed YAML: %s", path,
                             (unsigned long)p.problem_mark.line + 1, (unsigned long)p.problem_mark.column + 1,
                             p.problem ? p.problem : "error");
            }
            break;
        }
        yaml_event_type_t t = ev.type;
        switch (state) {
        case S_STREAM: /* STREAM-START */
            state = S_DOC;
            break;
        case S_DOC:
            if (t == YAML_STREAM_END_EVENT)
                done = true; /* an empty file: nothing to set */
            else if (t == YAML_DOCUMENT_START_EVENT)
                state = S_TOP;
            break;
        case S_TOP:
            if (t == YAML_MAPPING_START_EVENT) {
                state = S_KEY;
            } else if (t == YAML_SCALAR_EVENT && is_null_scalar(&ev)) {
                state = S_DOC_END; /* "---" alone: an empty document */
            } else {
                st = kn_fail(err, KN_EFORMAT, "%s:%lu: the top level must be a mapping of settings, not %s",
                             path, line_of(&ev), event_what(t));
            }
            break;
        case S_KEY:
            if (t == YAML_MAPPING_END_EVENT) {
                state = S_DOC_END;
            } else if (t != YAML_SCALAR_EVENT) {
                st = kn_fail(err, KN_EFORMAT, "%s:%lu: a key must be a scalar, not %s", path, line_of(&ev),
                             event_what(t));
            } else {
                const char *k = (const char *)ev.data.scalar.value;
                size_t kl = ev.data.scalar.length;
                snprintf(key_text, sizeof key_text, "%.*s", cfg_shown(kl), k);
                key_line = line_of(&ev);
                key_idx = strlen(k) == kl ? srv_cfg_key_find_n(k, kl, false) : -1;
                if (key_idx < 0) {
                    char known[512];
                    size_t n = 0;
                    for (int i = 0; i < CFG_N_KEYS && n < sizeof known; i++)
                        if (!srv_cfg_keys[i].flag_only)
                            n += (size_t)snprintf(known + n, sizeof known - n, "%s%s", n ? ", " : "", srv_cfg_keys[i].name);
                    st = kn_fail(err, KN_ENOTFOUND, "%s:%lu: unknown key '%s' (known: %s)", path, key_line,
                                 key_text, known);
                } else if (seen_line[key_idx]) {
                    st = kn_fail(err, KN_EFORMAT, "%s:%lu: key '%s' is set twice (first at line %lu)", path,
                                 key_line, key_text, seen_line[key_idx]);
                } else {
                    seen_line[key_idx] = key_line;
                    state = S_VALUE;
                }
            }
            break;
        case S_VALUE:
            if (t != YAML_SCALAR_EVENT) {
                st = kn_fail(err, KN_EFORMAT, "%s:%lu: key '%s': the value must be a scalar, not %s", path,
                             line_of(&ev), key_text, event_what(t));
            } else if (is_null_scalar(&ev)) {
                st = kn_fail(err, KN_EINVAL, "%s:%lu: key '%s' has no value", path, line_of(&ev), key_text);
            } else if (strlen((const char *)ev.data.scalar.value) != ev.data.scalar.length) {
                st = kn_fail(err, KN_EINVAL, "%s:%lu: key '%s': the value contains a NUL byte", path,
                             line_of(&ev), key_text);
            } else {
                st = srv_cfg_set_idx(tmp, key_idx, (const char *)ev.data.scalar.value, key_text, err);
                if (st) kn_err_prefix(err, "%s:%lu", path, line_of(&ev));
                state = S_KEY;
            }
            break;
        case S_DOC_END: /* DOCUMENT-END */
            state = S_AFTER;
            break;
        case S_AFTER:
            if (t == YAML_STREAM_END_EVENT)
                done = true;
            else
                st = kn_fail(err, KN_EFORMAT, "%s:%lu: more than one YAML document", path, line_of(&ev));
            break;
        }
        yaml_event_delete(&ev);
        if (st) break;
    }
    yaml_parser_delete(&p);
    return st;
}

/* Reads a config file (at most CFG_MAX_FILE bytes) into *buf (caller frees). */
kn_status srv_cfg_read_file(const char *path, char **buf, size_t *len, kn_err *err) {
    *buf = NULL;
    *len = 0;
    /* kn_read_file refuses a file of exactly its limit: allow one byte more
     * so that the limit is "at most 1 MiB", and say so. */
    kn_status st = kn_read_file(path, CFG_MAX_FILE + 1, buf, len, err);
    if (st == KN_ERANGE)
        return kn_fail(err, KN_ERANGE, "%s: larger than the limit of %u bytes (1 MiB) for a config file", path,
                       CFG_MAX_FILE);
    return st;
}

/* Applies YAML text (read from path) on top of c, all or nothing. */
kn_status srv_cfg_load_yaml_buf(srv_config *c, const char *path, const char *buf, size_t len, kn_err *err) {
    srv_config tmp;
    kn_status st = srv_cfg_copy(&tmp, c, err);
    if (!st) st = yaml_apply(&tmp, path, buf, len, err);
    if (st) {
        srv_config_free(&tmp);
        return st;
    }
    srv_cfg_commit(c, &tmp);
    return KN_OK;
}

kn_status srv_config_load_yaml(srv_config *c, const char *path, kn_err *err) {
    char *buf;
    size_t len;
    kn_status st = srv_cfg_read_file(path, &buf, &len, err);
    if (st) return st;
    st = srv_cfg_load_yaml_buf(c, path, buf, len, err);
    free(buf);
    return st;
}

/* ---- dump ------------------------------------------------------------------ */

/* v with the largest exact k/m/g suffix. */
static void dump_bytes(FILE *f, long long v) {
    static const struct {
        int sh;
        char suf;
    } S[] = {{30, 'g'}, {20, 'm'}, {10, 'k'}};
    for (size_t i = 0; i < sizeof S / sizeof S[0]; i++) {
        long long u = 1LL << S[i].sh;
        if (v != 0 && v % u == 0) {
            fprintf(f, "%lld%c", v / u, S[i].suf);
            return;
        }
    }
    fprintf(f, "%lld", v);
}

/* A YAML double-quoted scalar. */
static void dump_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\x%02x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

char *srv_config_dump(const srv_config *c) {
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    if (!f) return NULL;
    fprintf(f, "# kiln serve: settings in effect (flags > environment > config file > profile %s > defaults)\n",
            c->profile ? c->profile : "?");
    for (int i = 0; i < CFG_N_KEYS; i++) {
        const key_def *k = &srv_cfg_keys[i];
        if (k->flag_only) continue;
        switch (k->kind) {
        case K_STR: {
            const char *v = *str_field_c(c, k);
            if (k->secret)
                fprintf(f, "# %s: %s\n", k->name, v ? "(set)" : "(none)");
            else if (!v)
                fprintf(f, "# %s: (none)\n", k->name);
            else {
                fprintf(f, "%s: ", k->name);
                dump_str(f, v);
                fputc('\n', f);
            }
            break;
        }
        case K_INT: fprintf(f, "%s: %d\n", k->name, *int_field_c(c, k)); break;
        case K_I64:
            fprintf(f, "%s: ", k->name);
            dump_bytes(f, (long long)*(const int64_t *)((const char *)c + k->off));
            fputc('\n', f);
            break;
        case K_BOOL: fprintf(f, "%s: %s\n", k->name, *(const bool *)((const char *)c + k->off) ? "true" : "false"); break;
        }
    }
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad) {
        free(text);
        return NULL;
    }
    return text;
}
