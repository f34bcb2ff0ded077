/*
 * names.c — repository references, quantization labels in file names and
 * the name checks of the model store (see kiln/store.h for the rules).
 */
#include "kiln/store.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static bool is_alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* OWNER or NAME of a repository reference, n bytes at s. */
static bool repo_part_valid(const char *s, size_t n) {
    if (n == 0 || n > STORE_MAX_PART || !is_alnum(s[0])) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!is_alnum(c) && c != '.' && c != '_' && c != '-') return false;
        if (c == '.' && i + 1 < n && s[i + 1] == '.') return false;
    }
    return true;
}

bool store_quant_valid(const char *q) {
    size_t n = strlen(q);
    if (n == 0 || n > STORE_MAX_QUANT || !is_alnum(q[0])) return false;
    for (size_t i = 0; i < n; i++)
        if (!is_alnum(q[i]) && q[i] != '_' && q[i] != '-') return false;
    return true;
}

kn_status store_ref_parse(const char *s, store_ref *out, kn_err *err) {
    memset(out, 0, sizeof *out);
    if (!s || !*s) return kn_fail(err, KN_EINVAL, "empty model reference (expected OWNER/NAME[:QUANT])");
    const char *colon = strchr(s, ':');
    size_t rlen = colon ? (size_t)(colon - s) : strlen(s);
    const char *slash = memchr(s, '/', rlen);
    if (!slash || memchr(slash + 1, '/', rlen - (size_t)(slash + 1 - s)))
        return kn_fail(err, KN_EINVAL, "bad repository '%.*s': expected OWNER/NAME",
                       (int)(rlen > 200 ? 200 : rlen), s);
    size_t olen = (size_t)(slash - s), nlen = rlen - olen - 1;
    if (!repo_part_valid(s, olen) || !repo_part_valid(slash + 1, nlen))
        return kn_fail(err, KN_EINVAL,
                       "bad repository '%.*s': OWNER and NAME must be 1..%d characters of [A-Za-z0-9._-], "
                       "start with a letter or digit and contain no '..'",
                       (int)(rlen > 200 ? 200 : rlen), s, STORE_MAX_PART);
    memcpy(out->repo, s, rlen);
    out->repo[rlen] = 0;
    memcpy(out->name, slash + 1, nlen);
    out->name[nlen] = 0;
    const char *q = colon ? colon + 1 : STORE_DEFAULT_QUANT;
    if (!store_quant_valid(q))
        return kn_fail(
            err, KN_EINVAL,
            "bad quantization '%.40s': expected 1..%d characters of [A-Za-z0-9_-] (e.g. Q4_K_M, Q8_0, F16)",
            q, STORE_MAX_QUANT);
    size_t qn = strlen(q);
    for (size_t i = 0; i < qn; i++)
        out->quant[i] = (char)toupper((unsigned char)q[i]);
    out->quant[qn] = 0;
    return KN_OK;
}

/* ---- labels ---------------------------------------------------------------- */

/* The base name of a path and its length without a ".gguf" suffix. */
static const char *base_of(const char *file, size_t *n) {
    const char *b = strrchr(file, '/');
    b = b ? b + 1 : file;
    size_t len = strlen(b);
    if (len >= 5 && !strcasecmp(b + len - 5, ".gguf")) len -= 5;
    *n = len;
    return b;
}

/* Length of the alphanumeric run at s (bounded by end). */
static size_t alnum_run(const char *s, const char *end) {
    size_t k = 0;
    while (s + k < end && is_alnum(s[k]))
        k++;
    return k;
}

/* True when the k bytes at s form a label part: digits, or one of the suffix
 * letters of llama.cpp's type names. */
static bool is_part(const char *s, size_t k) {
    static const char *const PARTS[] = {"K", "S", "M", "L", "XS", "XXS", "XL", "NL"};
    if (k == 0) return false;
    bool digits = true;
    for (size_t i = 0; i < k; i++)
        if (s[i] < '0' || s[i] > '9') digits = false;
    if (digits) return true;
    for (size_t i = 0; i < sizeof PARTS / sizeof PARTS[0]; i++)
        if (strlen(PARTS[i]) == k && !strncasecmp(s, PARTS[i], k)) return true;
    return false;
}

/* True when a label may end at p: the end, a character other than
 * [A-Za-z0-9_], or '_' that does not start another label part. */
static bool right_delim(const char *p, const char *end) {
    if (p >= end) return true;
    if (is_alnum(*p)) return false;
    if (*p != '_') return true;
    return !is_part(p + 1, alnum_run(p + 1, end));
}

static bool left_delim(const char *b, const char *p) {
    return p == b || !is_alnum(p[-1]);
}

/* Length of the label starting at p, or 0. */
static size_t label_at(const char *p, const char *end) {
    /* labels that are not [IT]Q<n>_...: the floats and OCP microscaling (gpt-oss) */
    static const char *const FLOATS[] = {"BF16", "F16", "F32", "MXFP4_MOE", "MXFP4"};
    for (size_t i = 0; i < sizeof FLOATS / sizeof FLOATS[0]; i++) {
        size_t k = strlen(FLOATS[i]);
        if ((size_t)(end - p) >= k && !strncasecmp(p, FLOATS[i], k) && right_delim(p + k, end)) return k;
    }
    const char *q = p;
    if (q < end && (*q == 'I' || *q == 'i' || *q == 'T' || *q == 't')) q++;
    if (q >= end || (*q != 'Q' && *q != 'q')) return 0;
    q++;
    size_t d = 0;
    while (q + d < end && q[d] >= '0' && q[d] <= '9')
        d++;
    if (d == 0) return 0;
    q += d;
    while (q < end && *q == '_') {
        size_t k = alnum_run(q + 1, end);
        if (!is_part(q + 1, k)) break;
        q += 1 + k;
    }
    if (!right_delim(q, end)) return 0;
    return (size_t)(q - p);
}

bool store_quant_of_name(const char *file, char *out, size_t cap) {
    size_t n;
    const char *b = base_of(file, &n);
    const char *end = b + n;
    const char *best = NULL;
    size_t best_k = 0;
    for (const char *p = b; p < end; p++) {
        if (!left_delim(b, p)) continue;
        size_t k = label_at(p, end);
        if (k) {
            best = p;
            best_k = k;
            p += k - 1;
        }
    }
    if (!best || best_k + 1 > cap) return false;
    for (size_t i = 0; i < best_k; i++)
        out[i] = (char)toupper((unsigned char)best[i]);
    out[best_k] = 0;
    return true;
}

bool store_name_has_quant(const char *file, const char *quant) {
    size_t n, k = strlen(quant);
    const char *b = base_of(file, &n);
    const char *end = b + n;
    if (k == 0 || k > n) return false;
    for (const char *p = b; p + k <= end; p++)
        if (left_delim(b, p) && !strncasecmp(p, quant, k) && right_delim(p + k, end)) return true;
    return false;
}

bool store_name_skipped(const char *file) {
    size_t n;
    const char *b = base_of(file, &n);
    size_t full = strlen(b);
    if (full < 5 || strcasecmp(b + full - 5, ".gguf")) return true;
    if (!strncasecmp(b, "mmproj", 6)) return true;
    /* split shards: "-00001-of-00003" at the end of the stem */
    if (n >= 15) {
        const char *s = b + n - 15;
        bool shard = s[0] == '-' && !strncmp(s + 6, "-of-", 4);
        for (int i = 1; i <= 5 && shard; i++)
            shard = s[i] >= '0' && s[i] <= '9';
        for (int i = 10; i <= 14 && shard; i++)
            shard = s[i] >= '0' && s[i] <= '9';
        if (shard) return true;
    }
    return false;
}
