/*
 * dataset.c — the prompts of a benchmark run: a JSONL file
 * ({"prompt", "max_tokens"} per line) or seeded synthetic prompts.
 */
#include "kiln/bench.h"

#include <stdlib.h>
#include <string.h>

/* Common short English words, so that any tokenizer gives ~1-1.5 tokens a word. */
static const char *const WORDS[] = {
    "the", "of", "and", "a", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are", "as",
    "with", "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by", "word", "but",
    "not", "what", "all", "were", "we", "when", "your", "can", "said", "there", "use", "an", "each",
    "which", "she", "do", "how", "their", "if", "will", "up", "other", "about", "out", "many", "then",
    "them", "these", "so", "some", "her", "would", "make", "like", "him", "into", "time", "has", "look",
    "two", "more", "write", "go", "see", "number", "no", "way", "could", "people", "my", "than", "first",
    "water", "been", "call", "who", "oil", "its", "now", "find", "long", "down", "day", "did", "get",
    "come", "made", "may", "part", "little", "girl", "boy", "dog", "cat", "tree", "happy", "big", "sun",
};

static uint64_t rng_next(uint64_t *s) {
    /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void bench_dataset_free(bench_dataset *d) {
    if (!d) return;
    for (size_t i = 0; i < d->n; i++) free(d->items[i].text);
    free(d->items);
    d->items = NULL;
    d->n = 0;
}

kn_status bench_dataset_synth(size_t n, int words, int max_tokens, uint64_t seed, bench_dataset *out, kn_err *err) {
    memset(out, 0, sizeof *out);
    if (n == 0 || words < 1 || words > 1000000 || max_tokens < 1)
        return kn_fail(err, KN_EINVAL, "synthetic prompts need n >= 1, 1..1000000 words and max_tokens >= 1");
    const size_t nw = sizeof WORDS / sizeof WORDS[0];
    out->items = calloc(n, sizeof *out->items);
    if (!out->items) return kn_fail(err, KN_ENOMEM, "out of memory for %zu prompts", n);
    out->n = n;
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) {
        size_t cap = (size_t)words * 8 + 1, len = 0; /* longest word is 6 + space */
        char *t = malloc(cap);
        if (!t) {
            bench_dataset_free(out);
            return kn_fail(err, KN_ENOMEM, "out of memory for a prompt of %d words", words);
        }
        for (int w = 0; w < words; w++) {
            const char *word = WORDS[rng_next(&s) % nw];
            size_t wl = strlen(word);
            if (w) t[len++] = ' ';
            memcpy(t + len, word, wl);
            len += wl;
        }
        t[len] = 0;
        out->items[i].text = t;
        out->items[i].max_tokens = max_tokens;
    }
    return KN_OK;
}

kn_status bench_dataset_load(const char *path, int default_max_tokens, bench_dataset *out, kn_err *err) {
    memset(out, 0, sizeof *out);
    char *buf = NULL;
    size_t len = 0;
    kn_status st = kn_read_file(path, BENCH_MAX_DATASET, &buf, &len, err);
    if (st != KN_OK) return st;
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) lines += buf[i] == '\n';
    out->items = calloc(lines, sizeof *out->items);
    if (!out->items) {
        free(buf);
        return kn_fail(err, KN_ENOMEM, "%s: out of memory for %zu lines", path, lines);
    }
    size_t lineno = 0;
    for (char *p = buf, *end = buf + len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        lineno++;
        char *q = p;
        while (q < le && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
        if (q < le) {
            json_error_t je;
            json_t *o = json_loadb(p, (size_t)(le - p), 0, &je);
            json_t *pr = json_is_object(o) ? json_object_get(o, "prompt") : NULL;
            json_t *mt = json_is_object(o) ? json_object_get(o, "max_tokens") : NULL;
            const char *why = NULL;
            if (!o) why = je.text;
            else if (!json_is_object(o)) why = "not a JSON object";
            else if (!json_is_string(pr)) why = "\"prompt\" must be a string";
            else if (mt && !(json_is_integer(mt) && json_integer_value(mt) >= 1 && json_integer_value(mt) <= 1000000))
                why = "\"max_tokens\" must be an integer in 1..1000000";
            if (why) {
                st = kn_fail(err, KN_EFORMAT, "%s:%zu: %s", path, lineno, why);
                json_decref(o);
                goto fail;
            }
            bench_prompt *it = &out->items[out->n];
            it->text = strdup(json_string_value(pr));
            it->max_tokens = mt ? (int)json_integer_value(mt) : default_max_tokens;
            json_decref(o);
            if (!it->text) {
                st = kn_fail(err, KN_ENOMEM, "%s:%zu: out of memory", path, lineno);
                goto fail;
            }
            out->n++;
        }
        p = nl ? nl + 1 : end;
    }
    free(buf);
    if (out->n == 0) {
        bench_dataset_free(out);
        return kn_fail(err, KN_EFORMAT, "%s: no prompts (expected one {\"prompt\": ...} per line)", path);
    }
    return KN_OK;
fail:
    free(buf);
    bench_dataset_free(out);
    return st;
}
