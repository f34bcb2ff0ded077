/* metrics.c — registry, families, series (lock-free hot path and lookups),
 * Prometheus text exposition and the process collector. See metrics.h. */
#include "kiln/metrics.h"

#include "kiln/core.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

typedef enum met_type { MET_COUNTER, MET_GAUGE, MET_HISTOGRAM } met_type;

struct met_series {
    _Atomic uint64_t val;      /* double bits: counter/gauge value, histogram sum */
    const met_family *fam;
    met_series *next;          /* creation order; set before publication */
    uint64_t hash;
    const char **labels;       /* [fam->n_labels], inside this allocation */
    _Atomic uint64_t buckets[]; /* histograms: [n_bounds + 1], non-cumulative */
};

/* Open addressing, linear probing, load factor <= 1/2. Slots go from NULL to
 * a series once and never change; a full table is replaced by a copy twice
 * its size, and the old one is kept (on `retired`) until the family dies so
 * that lock-free readers still probing it stay safe. */
typedef struct met_table {
    size_t cap; /* power of two */
    struct met_table *retired;
    _Atomic(met_series *) slots[];
} met_table;

struct met_family {
    met_type type;
    char *name, *help;
    int n_labels;
    char **label_names;
    int n_bounds;
    double *bounds;
    met_family *next; /* registration order */

    pthread_mutex_t mu; /* guards creation of series and the fields below */
    _Atomic(met_table *) table;
    size_t n_series;  /* counted against MET_MAX_SERIES (not the overflow series) */
    size_t n_entries; /* all series, the overflow one included */
    met_series *head, *tail; /* every series, in creation order */
    /* Set once under mu, read without it, so that hostile label values stop
     * taking the mutex once the family is full or the overflow series exists. */
    _Atomic(met_series *) overflow;
    _Atomic bool full; /* n_series reached MET_MAX_SERIES */
};

struct met_registry {
    pthread_mutex_t mu; /* guards the family list and the process fields */
    met_family *head, *tail;
    bool process;
    double start_time_s;
};

static const char *const PROCESS_NAMES[] = {
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_cpu_seconds_total",
    "process_start_time_seconds",
};

/* ---- small helpers --------------------------------------------------------------- */

static inline uint64_t d2u(double d) {
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}
static inline double u2d(uint64_t u) {
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static void atomic_add_double(_Atomic uint64_t *p, double v) {
    uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(p, &old, d2u(u2d(old) + v), memory_order_relaxed,
                                                  memory_order_relaxed)) {
    }
}

static const char *type_name(met_type t) {
    return t == MET_COUNTER ? "counter" : t == MET_GAUGE ? "gauge" : "histogram";
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

/* snake case: [a-z_][a-z0-9_]* */
static bool valid_snake(const char *s) {
    if (!s || !*s) return false;
    if (!((*s >= 'a' && *s <= 'z') || *s == '_')) return false;
    for (const char *p = s + 1; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) return false;
    return true;
}

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static bool valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int len;
        unsigned cp, min;
        if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F, min = 0x80;
        else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
        else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07, min = 0x10000;
        else return false;
        if (n - i < (size_t)len) return false;
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += (size_t)len;
    }
    return true;
}

/* The sample names a family exports. */
static int family_names(const char *name, met_type t, char out[4][160]) {
    snprintf(out[0], 160, "%s", name);
    if (t != MET_HISTOGRAM) return 1;
    snprintf(out[1], 160, "%s_bucket", name);
    snprintf(out[2], 160, "%s_sum", name);
    snprintf(out[3], 160, "%s_count", name);
    return 4;
}

/* ---- registry ------------------------------------------------------------------- */

met_registry *met_registry_create(void) {
    met_registry *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        free(r);
        return NULL;
    }
    return r;
}

static void family_free(met_family *f) {
    if (!f) return;
    met_series *s = f->head;
    while (s) {
        met_series *n = s->next;
        kn_free_aligned(s);
        s = n;
    }
    met_table *t = atomic_load(&f->table);
    while (t) {
        met_table *n = t->retired;
        free(t);
        t = n;
    }
    if (f->label_names)
        for (int i = 0; i < f->n_labels; i++) free(f->label_names[i]);
    free(f->label_names);
    free(f->bounds);
    free(f->name);
    free(f->help);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

void met_registry_destroy(met_registry *r) {
    if (!r) return;
    met_family *f = r->head;
    while (f) {
        met_family *n = f->next;
        family_free(f);
        f = n;
    }
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* ---- series tables ----------------------------------------------------------------- */

static uint64_t hash_values(int n, const char *const *vals) {
    uint64_t h = 0x6b696c6e; /* "kiln" */
    for (int i = 0; i < n; i++) {
        const char *v = vals && vals[i] ? vals[i] : "";
        h = XXH3_64bits_withSeed(v, strlen(v), h);
    }
    return h;
}

static bool labels_equal(const met_series *s, int n, const char *const *vals) {
    for (int i = 0; i < n; i++) {
        const char *v = vals && vals[i] ? vals[i] : "";
        if (strcmp(s->labels[i], v) != 0) return false;
    }
    return true;
}

static met_series *table_find(const met_table *t, uint64_t h, int n, const char *const *vals) {
    size_t mask = t->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        met_series *s = atomic_load_explicit(&t->slots[i], memory_order_acquire);
        if (!s) return NULL;
        if (s->hash == h && labels_equal(s, n, vals)) return s;
    }
}

static void table_put(met_table *t, met_series *s) {
    size_t mask = t->cap - 1;
    size_t i = s->hash & mask;
    while (atomic_load_explicit(&t->slots[i], memory_order_relaxed)) i = (i + 1) & mask;
    atomic_store_explicit(&t->slots[i], s, memory_order_release);
}

static met_table *table_new(size_t cap) {
    met_table *t = calloc(1, sizeof *t + cap * sizeof(t->slots[0]));
    if (!t) return NULL;
    t->cap = cap;
    for (size_t i = 0; i < cap; i++) atomic_init(&t->slots[i], NULL);
    return t;
}

/* Under f->mu: makes room for one more entry. */
static bool table_reserve(met_family *f, size_t n_entries) {
    met_table *t = atomic_load_explicit(&f->table, memory_order_relaxed);
    if (2 * n_entries <= t->cap) return true;
    met_table *nt = table_new(t->cap * 2);
    if (!nt) return false;
    for (size_t i = 0; i < t->cap; i++) {
        met_series *s = atomic_load_explicit(&t->slots[i], memory_order_relaxed);
        if (s) table_put(nt, s);
    }
    nt->retired = t;
    atomic_store_explicit(&f->table, nt, memory_order_release);
    return true;
}

/* Under f->mu: allocates a series for vals, inserts it and appends it to the
 * creation list. NULL when out of memory. */
static met_series *make_series(met_family *f, uint64_t h, const char *const *vals) {
    int n = f->n_labels;
    size_t nb = f->type == MET_HISTOGRAM ? (size_t)f->n_bounds + 1 : 0;
    size_t size = sizeof(met_series) + nb * sizeof(uint64_t) + (size_t)n * sizeof(char *);
    for (int i = 0; i < n; i++) size += strlen(vals && vals[i] ? vals[i] : "") + 1;
    if (!table_reserve(f, f->n_entries + 1)) return NULL;
    met_series *s = kn_alloc_aligned(size); /* own cache lines: no false sharing */
    if (!s) return NULL;
    memset(s, 0, size);
    atomic_init(&s->val, d2u(0.0));
    for (size_t i = 0; i < nb; i++) atomic_init(&s->buckets[i], 0);
    s->fam = f;
    s->hash = h;
    s->labels = (const char **)(void *)((char *)s + sizeof(met_series) + nb * sizeof(uint64_t));
    char *p = (char *)(s->labels + n);
    for (int i = 0; i < n; i++) {
        const char *v = vals && vals[i] ? vals[i] : "";
        size_t l = strlen(v) + 1;
        memcpy(p, v, l);
        s->labels[i] = p;
        p += l;
    }
    if (f->tail) f->tail->next = s;
    else f->head = s;
    f->tail = s;
    table_put(atomic_load_explicit(&f->table, memory_order_relaxed), s);
    f->n_entries++;
    return s;
}

/* Under f->mu. */
static met_series *overflow_series(met_family *f) {
    met_series *ov = atomic_load_explicit(&f->overflow, memory_order_relaxed);
    if (ov) return ov;
    const char *vals[MET_MAX_LABELS];
    for (int i = 0; i < f->n_labels; i++) vals[i] = MET_OVERFLOW_VALUE;
    uint64_t h = hash_values(f->n_labels, vals);
    met_series *s = table_find(atomic_load_explicit(&f->table, memory_order_relaxed), h, f->n_labels, vals);
    if (!s) s = make_series(f, h, vals);
    if (s) {
        KN_WARN("metrics: %s: more than %d label combinations or an invalid label value; "
                "further ones are counted under the label value \"%s\"",
                f->name, MET_MAX_SERIES, MET_OVERFLOW_VALUE);
        atomic_store_explicit(&f->overflow, s, memory_order_release);
    }
    return s;
}

met_series *met_get(met_family *f, const char *const *vals) {
    if (!f) return NULL;
    int n = f->n_labels;
    bool valid = true;
    for (int i = 0; i < n && valid; i++) {
        const char *v = vals && vals[i] ? vals[i] : "";
        size_t l = strnlen(v, MET_MAX_LABEL_VALUE + 1);
        valid = l <= MET_MAX_LABEL_VALUE && valid_utf8((const unsigned char *)v, l);
    }
    met_series *s = NULL;
    uint64_t h = 0;
    if (valid) {
        h = hash_values(n, vals);
        s = table_find(atomic_load_explicit(&f->table, memory_order_acquire), h, n, vals);
        if (s) return s;
    }
    if (!valid || atomic_load_explicit(&f->full, memory_order_relaxed)) {
        s = atomic_load_explicit(&f->overflow, memory_order_acquire);
        if (s) return s;
    }
    pthread_mutex_lock(&f->mu);
    if (!valid) {
        s = overflow_series(f);
    } else {
        s = table_find(atomic_load_explicit(&f->table, memory_order_relaxed), h, n, vals);
        if (!s) {
            if (f->n_series >= MET_MAX_SERIES) {
                s = overflow_series(f);
            } else {
                s = make_series(f, h, vals);
                if (s && ++f->n_series >= MET_MAX_SERIES) atomic_store_explicit(&f->full, true, memory_order_relaxed);
            }
        }
    }
    pthread_mutex_unlock(&f->mu);
    return s;
}

/* ---- families -------------------------------------------------------------------------- */

static bool same_shape(const met_family *f, met_type t, int n_labels, const char *const *labels,
                       const double *bounds, int n_bounds) {
    if (f->type != t || f->n_labels != n_labels) return false;
    for (int i = 0; i < n_labels; i++)
        if (strcmp(f->label_names[i], labels[i]) != 0) return false;
    if (t == MET_HISTOGRAM) {
        if (f->n_bounds != n_bounds) return false;
        for (int i = 0; i < n_bounds; i++)
            if (f->bounds[i] != bounds[i]) return false;
    }
    return true;
}

static bool check_family(met_type t, const char *name, const char *help, int n_labels,
                         const char *const *labels, const double *bounds, int n_bounds) {
    const char *tn = type_name(t);
    if (!name || !valid_snake(name) || strlen(name) > 120) {
        KN_ERROR("metrics: %s name \"%s\" is invalid: use [a-z_][a-z0-9_]*, at most 120 bytes", tn,
                 name ? name : "(null)");
        return false;
    }
    if (t == MET_COUNTER && !ends_with(name, "_total")) {
        KN_ERROR("metrics: counter %s must end in _total", name);
        return false;
    }
    if (t != MET_COUNTER && ends_with(name, "_total")) {
        KN_ERROR("metrics: %s %s must not end in _total (only counters do)", tn, name);
        return false;
    }
    if (t == MET_HISTOGRAM &&
        (ends_with(name, "_bucket") || ends_with(name, "_sum") || ends_with(name, "_count"))) {
        KN_ERROR("metrics: histogram %s must not end in _bucket, _sum or _count", name);
        return false;
    }
    if (!help || !*help || !valid_utf8((const unsigned char *)help, strlen(help))) {
        KN_ERROR("metrics: %s needs a help text in UTF-8", name);
        return false;
    }
    if (n_labels < 0 || n_labels > MET_MAX_LABELS || (n_labels > 0 && !labels)) {
        KN_ERROR("metrics: %s: %d labels (0 to %d allowed)", name, n_labels, MET_MAX_LABELS);
        return false;
    }
    for (int i = 0; i < n_labels; i++) {
        const char *l = labels[i];
        if (!l || !valid_snake(l) || strncmp(l, "__", 2) == 0 || strlen(l) > 120) {
            KN_ERROR("metrics: %s: label name \"%s\" is invalid: use [a-z_][a-z0-9_]*, not starting with __",
                     name, l ? l : "(null)");
            return false;
        }
        if (t == MET_HISTOGRAM && strcmp(l, "le") == 0) {
            KN_ERROR("metrics: histogram %s: the label name \"le\" is reserved", name);
            return false;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(labels[j], l) == 0) {
                KN_ERROR("metrics: %s: label \"%s\" appears twice", name, l);
                return false;
            }
    }
    if (t == MET_HISTOGRAM) {
        if (!bounds || n_bounds < 1 || n_bounds > MET_MAX_BOUNDS) {
            KN_ERROR("metrics: histogram %s: %d bucket bounds (1 to %d allowed)", name, n_bounds, MET_MAX_BOUNDS);
            return false;
        }
        for (int i = 0; i < n_bounds; i++)
            if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) {
                KN_ERROR("metrics: histogram %s: bucket bound %d (%g) must be finite and above the previous one",
                         name, i, bounds[i]);
                return false;
            }
    }
    return true;
}

static met_family *family_new(met_type t, const char *name, const char *help, int n_labels,
                              const char *const *labels, const double *bounds, int n_bounds) {
    met_family *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    if (pthread_mutex_init(&f->mu, NULL) != 0) {
        free(f);
        return NULL;
    }
    f->type = t;
    f->n_labels = n_labels;
    f->name = strdup(name);
    f->help = strdup(help);
    if (!f->name || !f->help) goto fail;
    if (n_labels > 0) {
        f->label_names = calloc((size_t)n_labels, sizeof(char *));
        if (!f->label_names) goto fail;
        for (int i = 0; i < n_labels; i++)
            if (!(f->label_names[i] = strdup(labels[i]))) goto fail;
    }
    if (t == MET_HISTOGRAM) {
        f->n_bounds = n_bounds;
        f->bounds = malloc((size_t)n_bounds * sizeof(double));
        if (!f->bounds) goto fail;
        memcpy(f->bounds, bounds, (size_t)n_bounds * sizeof(double));
    }
    atomic_init(&f->overflow, NULL);
    atomic_init(&f->full, false);
    met_table *tab = table_new(n_labels > 0 ? 16 : 2);
    if (!tab) goto fail;
    atomic_init(&f->table, tab);
    if (n_labels == 0) { /* the one series exists from the start */
        if (!make_series(f, hash_values(0, NULL), NULL)) goto fail;
        f->n_series = 1;
    }
    return f;
fail:
    family_free(f);
    return NULL;
}

static met_family *add_family(met_registry *r, met_type t, const char *name, const char *help,
                              int n_labels, const char *const *labels, const double *bounds,
                              int n_bounds) {
    if (!r) return NULL;
    if (!check_family(t, name, help, n_labels, labels, bounds, n_bounds)) return NULL;
    char mine[4][160], theirs[4][160];
    int n_mine = family_names(name, t, mine);
    for (int i = 0; i < n_mine; i++)
        for (size_t k = 0; k < sizeof PROCESS_NAMES / sizeof PROCESS_NAMES[0]; k++)
            if (strcmp(mine[i], PROCESS_NAMES[k]) == 0) {
                KN_ERROR("metrics: %s is reserved for the process collector", mine[i]);
                return NULL;
            }
    pthread_mutex_lock(&r->mu);
    met_family *f = NULL;
    for (met_family *o = r->head; o; o = o->next) {
        if (strcmp(o->name, name) == 0) {
            if (same_shape(o, t, n_labels, labels, bounds, n_bounds)) {
                f = o;
            } else {
                KN_ERROR("metrics: %s is already registered with another type, labels or buckets", name);
            }
            goto out;
        }
        int n_theirs = family_names(o->name, o->type, theirs);
        for (int i = 0; i < n_mine; i++)
            for (int j = 0; j < n_theirs; j++)
                if (strcmp(mine[i], theirs[j]) == 0) {
                    KN_ERROR("metrics: %s %s collides with the series %s of %s %s", type_name(t), name,
                             theirs[j], type_name(o->type), o->name);
                    goto out;
                }
    }
    f = family_new(t, name, help, n_labels, labels, bounds, n_bounds);
    if (!f) {
        KN_ERROR("metrics: %s: out of memory", name);
        goto out;
    }
    if (r->tail) r->tail->next = f;
    else r->head = f;
    r->tail = f;
out:
    pthread_mutex_unlock(&r->mu);
    return f;
}

met_family *met_counter(met_registry *r, const char *name, const char *help, int n_labels,
                        const char *const *label_names) {
    return add_family(r, MET_COUNTER, name, help, n_labels, label_names, NULL, 0);
}

met_family *met_gauge(met_registry *r, const char *name, const char *help, int n_labels,
                      const char *const *label_names) {
    return add_family(r, MET_GAUGE, name, help, n_labels, label_names, NULL, 0);
}

met_family *met_histogram(met_registry *r, const char *name, const char *help, int n_labels,
                          const char *const *label_names, const double *bounds, int n_bounds) {
    return add_family(r, MET_HISTOGRAM, name, help, n_labels, label_names, bounds, n_bounds);
}

/* ---- hot path ---------------------------------------------------------------------------- */

void met_add(met_series *s, double v) {
    if (!s) return;
    KN_ASSERT(s->fam->type == MET_COUNTER);
    if (!(v >= 0)) return; /* negative or NaN */
    atomic_add_double(&s->val, v);
}

void met_inc(met_series *s) {
    met_add(s, 1.0);
}

void met_set(met_series *s, double v) {
    if (!s) return;
    KN_ASSERT(s->fam->type == MET_GAUGE);
    atomic_store_explicit(&s->val, d2u(v), memory_order_relaxed);
}

void met_gauge_set_all(met_family *f, double v) {
    if (!f) return;
    KN_ASSERT(f->type == MET_GAUGE);
    pthread_mutex_lock(&f->mu); /* the list only grows under mu */
    for (met_series *s = f->head; s; s = s->next) atomic_store_explicit(&s->val, d2u(v), memory_order_relaxed);
    pthread_mutex_unlock(&f->mu);
}

void met_gauge_add(met_series *s, double v) {
    if (!s) return;
    KN_ASSERT(s->fam->type == MET_GAUGE);
    atomic_add_double(&s->val, v);
}

void met_observe(met_series *s, double v) {
    if (!s) return;
    const met_family *f = s->fam;
    KN_ASSERT(f->type == MET_HISTOGRAM);
    if (isnan(v)) return;
    /* lower bound: the first bucket whose upper bound is >= v */
    int lo = 0, hi = f->n_bounds;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (f->bounds[mid] < v) lo = mid + 1;
        else hi = mid;
    }
    atomic_fetch_add_explicit(&s->buckets[lo], 1, memory_order_relaxed);
    atomic_add_double(&s->val, v);
}

double met_value(const met_series *s) {
    if (!s) return NAN;
    return u2d(atomic_load_explicit(&((met_series *)s)->val, memory_order_relaxed));
}

uint64_t met_hist_count(const met_series *s, uint64_t *buckets) {
    if (!s || s->fam->type != MET_HISTOGRAM) return 0;
    uint64_t n = 0;
    for (int i = 0; i <= s->fam->n_bounds; i++) {
        uint64_t c = atomic_load_explicit(&((met_series *)s)->buckets[i], memory_order_relaxed);
        if (buckets) buckets[i] = c;
        n += c;
    }
    return n;
}

/* ---- exposition ----------------------------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_puts(sbuf *b, const char *s) {
    sb_put(b, s, strlen(s));
}

/* Shortest of %.15g..%.17g that reads back exactly. */
static void fmt_num(char out[40], double v) {
    if (isnan(v)) {
        strcpy(out, "NaN");
        return;
    }
    if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, 40, "%.*g", prec, v);
        if (strtod(out, NULL) == v) return;
    }
}

static void sb_num(sbuf *b, double v) {
    char t[40];
    fmt_num(t, v);
    sb_puts(b, t);
}

static void sb_u64(sbuf *b, uint64_t v) {
    char t[24];
    snprintf(t, sizeof t, "%llu", (unsigned long long)v);
    sb_puts(b, t);
}

/* Escapes backslash and newline, and double quote when `quote`. */
static void sb_escaped(sbuf *b, const char *s, bool quote) {
    const char *run = s;
    for (const char *p = s; *p; p++) {
        const char *rep = *p == '\\' ? "\\\\" : *p == '\n' ? "\\n" : (quote && *p == '"') ? "\\\"" : NULL;
        if (!rep) continue;
        sb_put(b, run, (size_t)(p - run));
        sb_puts(b, rep);
        run = p + 1;
    }
    sb_puts(b, run);
}

/* {a="x",b="y"[,le="..."]} or nothing. */
static void sb_labels(sbuf *b, const met_family *f, const met_series *s, const char *le) {
    if (f->n_labels == 0 && !le) return;
    sb_puts(b, "{");
    for (int i = 0; i < f->n_labels; i++) {
        if (i) sb_puts(b, ",");
        sb_puts(b, f->label_names[i]);
        sb_puts(b, "=\"");
        sb_escaped(b, s->labels[i], true);
        sb_puts(b, "\"");
    }
    if (le) {
        if (f->n_labels) sb_puts(b, ",");
        sb_puts(b, "le=\"");
        sb_puts(b, le);
        sb_puts(b, "\"");
    }
    sb_puts(b, "}");
}

static void sb_header(sbuf *b, const char *name, const char *help, const char *type) {
    sb_puts(b, "# HELP ");
    sb_puts(b, name);
    sb_puts(b, " ");
    sb_escaped(b, help, false);
    sb_puts(b, "\n# TYPE ");
    sb_puts(b, name);
    sb_puts(b, " ");
    sb_puts(b, type);
    sb_puts(b, "\n");
}

static void render_family(sbuf *b, met_family *f) {
    sb_header(b, f->name, f->help, type_name(f->type));
    pthread_mutex_lock(&f->mu);
    for (const met_series *s = f->head; s; s = s->next) {
        if (f->type != MET_HISTOGRAM) {
            sb_puts(b, f->name);
            sb_labels(b, f, s, NULL);
            sb_puts(b, " ");
            sb_num(b, met_value(s));
            sb_puts(b, "\n");
            continue;
        }
        uint64_t counts[MET_MAX_BOUNDS + 1];
        met_hist_count(s, counts);
        uint64_t cum = 0;
        for (int i = 0; i <= f->n_bounds; i++) {
            char le[40];
            if (i < f->n_bounds) fmt_num(le, f->bounds[i]);
            else strcpy(le, "+Inf");
            cum += counts[i];
            sb_puts(b, f->name);
            sb_puts(b, "_bucket");
            sb_labels(b, f, s, le);
            sb_puts(b, " ");
            sb_u64(b, cum);
            sb_puts(b, "\n");
        }
        sb_puts(b, f->name);
        sb_puts(b, "_sum");
        sb_labels(b, f, s, NULL);
        sb_puts(b, " ");
        sb_num(b, met_value(s));
        sb_puts(b, "\n");
        sb_puts(b, f->name);
        sb_puts(b, "_count");
        sb_labels(b, f, s, NULL);
        sb_puts(b, " ");
        sb_u64(b, cum); /* equals the +Inf bucket by construction */
        sb_puts(b, "\n");
    }
    pthread_mutex_unlock(&f->mu);
}

static void render_gauge(sbuf *b, const char *name, const char *help, const char *type, double v) {
    sb_header(b, name, help, type);
    sb_puts(b, name);
    sb_puts(b, " ");
    sb_num(b, v);
    sb_puts(b, "\n");
}

static void render_process(sbuf *b, double start_time_s) {
    long page = sysconf(_SC_PAGESIZE);
    unsigned long long size = 0, resident = 0;
    FILE *fp = fopen("/proc/self/statm", "r");
    if (fp) {
        if (fscanf(fp, "%llu %llu", &size, &resident) != 2) size = resident = 0;
        fclose(fp);
    }
    struct rusage ru;
    double cpu = 0;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
              (double)ru.ru_stime.tv_usec * 1e-6;
    render_gauge(b, PROCESS_NAMES[0], "Resident memory size in bytes.", "gauge",
                 (double)resident * (double)(page > 0 ? page : 4096));
    render_gauge(b, PROCESS_NAMES[1], "Virtual memory size in bytes.", "gauge",
                 (double)size * (double)(page > 0 ? page : 4096));
    render_gauge(b, PROCESS_NAMES[2], "Total user and system CPU time spent in seconds.", "counter", cpu);
    render_gauge(b, PROCESS_NAMES[3], "Start time of the process since unix epoch in seconds.", "gauge",
                 start_time_s);
}

char *met_render(met_registry *r, size_t *len) {
    if (len) *len = 0;
    if (!r) return NULL;
    sbuf b = {0};
    sb_put(&b, "", 0); /* an empty registry still renders "" */
    pthread_mutex_lock(&r->mu);
    for (met_family *f = r->head; f; f = f->next) render_family(&b, f);
    bool process = r->process;
    double start = r->start_time_s;
    pthread_mutex_unlock(&r->mu);
    if (process) render_process(&b, start);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (len) *len = b.len;
    return b.p;
}

/* ---- process collector ---------------------------------------------------------------------- */

/* Unix time of the process start: /proc/stat's btime plus field 22
 * (starttime, clock ticks since boot) of /proc/self/stat. */
static bool process_start_time(double *out) {
    char *stat = NULL, *self = NULL;
    size_t n;
    bool ok = false;
    if (kn_read_file("/proc/stat", 1 << 20, &stat, &n, NULL) != KN_OK) goto done;
    if (kn_read_file("/proc/self/stat", 1 << 16, &self, &n, NULL) != KN_OK) goto done;
    const char *bt = strstr(stat, "\nbtime ");
    const char *rp = strrchr(self, ')'); /* the command name may hold spaces and parens */
    if (!bt || !rp) goto done;
    unsigned long long btime = strtoull(bt + 7, NULL, 10);
    /* rp + 1 is the space before field 3 (state); starttime is field 22 */
    const char *p = rp + 1;
    for (int field = 3; field < 22 && p; field++) p = strchr(p + 1, ' '); /* -> space before field+1 */
    if (!p) goto done;
    unsigned long long ticks = strtoull(p + 1, NULL, 10);
    long hz = sysconf(_SC_CLK_TCK);
    if (btime == 0 || hz <= 0) goto done;
    *out = (double)btime + (double)ticks / (double)hz;
    ok = true;
done:
    free(stat);
    free(self);
    return ok;
}

void met_registry_add_process_metrics(met_registry *r) {
    if (!r) return;
    double start;
    if (!process_start_time(&start)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        start = (double)ts.tv_sec;
        KN_DEBUG("metrics: /proc unreadable; process_start_time_seconds is the collector's start");
    }
    pthread_mutex_lock(&r->mu);
    if (!r->process) {
        r->process = true;
        r->start_time_s = start;
    }
    pthread_mutex_unlock(&r->mu);
}
