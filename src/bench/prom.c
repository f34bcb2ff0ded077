/*
 * prom.c — reads one metric's value out of a Prometheus text exposition page
 * (GET /metrics), for the shared-prefix and spec scenarios. See bench.h for
 * the series-selection rule. Only what those scenarios need: sample lines
 * `name{labels} value [timestamp]`; HELP/TYPE/comment lines are skipped.
 */
#include "kiln/bench.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LABEL_MAX 256 /* longest label value kept (longer ones never match) */

static bool name_char(char c, bool first) {
    return isalpha((unsigned char)c) || c == '_' || c == ':' || (!first && isdigit((unsigned char)c));
}

/* Parses `{k="v",...}` at *pp (just after '{'), keeping the value of label
 * "model" in model[LABEL_MAX + 1] (empty when absent or too long). Leaves
 * *pp after the '}'. False on malformed text. */
static bool parse_labels(const char **pp, const char *end, char *model) {
    const char *p = *pp;
    model[0] = 0;
    for (;;) {
        while (p < end && *p == ' ') p++;
        if (p < end && *p == '}') {
            *pp = p + 1;
            return true;
        }
        const char *k = p;
        while (p < end && name_char(*p, p == k)) p++;
        size_t kl = (size_t)(p - k);
        if (kl == 0 || p + 1 >= end || p[0] != '=' || p[1] != '"') return false;
        p += 2;
        bool is_model = kl == 5 && !memcmp(k, "model", 5);
        size_t vl = 0;
        bool too_long = false;
        while (p < end && *p != '"') {
            char c = *p++;
            if (c == '\\') {
                if (p >= end) return false;
                c = *p++;
                if (c == 'n') c = '\n';
            }
            if (is_model) {
                if (vl < LABEL_MAX) model[vl++] = c;
                else too_long = true;
            }
        }
        if (p >= end) return false;
        p++; /* closing quote */
        if (is_model) model[too_long ? 0 : vl] = 0;
        while (p < end && *p == ' ') p++;
        if (p < end && *p == ',') p++;
    }
}

bool bench_metric_value(const char *page, const char *name, const char *model, double *out) {
    if (!page || !name || !*name) return false;
    size_t nl = strlen(name);
    int n_series = 0;
    bool exact = false;
    double single = 0, match = 0;
    char label[LABEL_MAX + 1], num[64];
    for (const char *p = page; *p;) {
        const char *eol = strchr(p, '\n');
        const char *end = eol ? eol : p + strlen(p);
        const char *q = p;
        p = eol ? eol + 1 : end;
        while (q < end && (*q == ' ' || *q == '\t')) q++;
        if (q >= end || *q == '#') continue;
        if ((size_t)(end - q) <= nl || memcmp(q, name, nl) || name_char(q[nl], false)) continue;
        q += nl;
        label[0] = 0;
        if (*q == '{') {
            q++;
            if (!parse_labels(&q, end, label)) continue;
        }
        while (q < end && (*q == ' ' || *q == '\t')) q++;
        size_t vl = 0;
        while (q + vl < end && q[vl] != ' ' && q[vl] != '\t' && q[vl] != '\r') vl++;
        if (vl == 0 || vl >= sizeof num) continue;
        memcpy(num, q, vl);
        num[vl] = 0;
        char *ep = NULL;
        double v = strtod(num, &ep);
        if (ep != num + vl || !isfinite(v)) continue;
        n_series++;
        single = v;
        if (model && label[0] && !strcmp(label, model) && !exact) {
            exact = true;
            match = v;
        }
    }
    if (exact) *out = match;
    else if (n_series == 1) *out = single;
    else return false;
    return true;
}
