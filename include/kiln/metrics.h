/*
 * kiln/metrics.h — counters, gauges and histograms with Prometheus text
 * exposition (format 0.0.4), a process collector, and rolling-window
 * quantiles for the SLA.
 *
 * Owns: a met_registry owns its families; a family owns its series. All of
 * them live until met_registry_destroy, so met_family and met_series pointers
 * may be cached freely (e.g. in a per-model struct) and used from any thread.
 * A met_window is a separate object with its own create/destroy pair.
 *
 * Threads: every function may be called concurrently from many threads,
 * except met_registry_destroy / met_window_destroy (no other call may run on
 * that object then).
 *  - Hot path (met_add, met_inc, met_set, met_gauge_add, met_observe,
 *    met_window_add): lock-free atomics, no allocation, no lock. Each accepts a
 *    NULL series/window and does nothing, so callers need no checks.
 *  - met_get: a lock-free probe of a read-mostly hash table finds an existing
 *    series; only creating a new series takes the family's mutex and
 *    allocates. Cache the result when the label values are fixed.
 *  - Registration and met_render take mutexes; they are not hot.
 *
 * Errors: registration functions return NULL and log (kn_log, level error) a
 * message naming the problem: an invalid name (snake case [a-z_][a-z0-9_]*,
 * stricter than Prometheus so that promtool's lint passes: no capitals, no
 * ':'; counters must end in "_total", gauges and histograms must not;
 * histograms must not end in _bucket/_sum/_count), an invalid or reserved
 * label name ([a-z_][a-z0-9_]*, not starting with "__", not "le" for
 * histograms, no duplicates, at most MET_MAX_LABELS), empty or non-UTF-8
 * help, bad bounds (not finite or not strictly increasing, 1 to
 * MET_MAX_BOUNDS of them), or a name that collides with another family
 * (including a histogram's _bucket/_sum/_count series, and the process
 * collector's names). Registering the same
 * name again with the same type, labels and bounds returns the existing
 * family (so independent modules may each register what they use). A NULL
 * family gives NULL series, and NULL series are no-ops, so a registration
 * mistake loses that metric but never crashes the server.
 *
 * Invariants:
 *  - A family has at most MET_MAX_SERIES label combinations. Label values that
 *    would create one more, and label values that are longer than
 *    MET_MAX_LABEL_VALUE bytes or not valid UTF-8, all map to one shared
 *    overflow series whose every label value is MET_OVERFLOW_VALUE (logged
 *    once per family). Hostile label values therefore cannot grow memory
 *    without bound nor break the exposition.
 *  - A family without labels has exactly one series, created at registration,
 *    so it is exported (as 0) before its first update.
 *  - Counters only go up: met_add ignores negative and NaN values.
 *    Histograms ignore NaN observations. Bucket upper bounds are inclusive
 *    (v <= le), as in Prometheus.
 *  - Using a series with a function of another metric type (met_observe on a
 *    counter...) is a programmer error: KN_ASSERT.
 *
 * Exposition (met_render): families in registration order, series in creation
 * order; "# HELP" (backslash and newline escaped) and "# TYPE" lines, then one
 * line per sample. Label values escape backslash, double quote and newline.
 * Histograms export cumulative name_bucket{...,le="b"} lines ending with
 * le="+Inf", then name_sum and name_count; name_count always equals the +Inf
 * bucket. Numbers use the shortest text that reads back to the same double;
 * infinities and NaN as +Inf, -Inf, NaN.
 */
#ifndef KILN_METRICS_H
#define KILN_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define MET_MAX_LABELS 8
#define MET_MAX_BOUNDS 64
#define MET_MAX_SERIES 10000       /* label combinations per family */
#define MET_MAX_LABEL_VALUE 256    /* bytes */
#define MET_OVERFLOW_VALUE "__overflow__"

/* ---- bucket sets that fit CPU inference ------------------------------------ */

/* Request, time-to-first-token, queue-wait and prefill durations in seconds:
 * from 5 ms (a cached short prompt) to 2 minutes (a long CPU generation), with
 * a boundary at 2 s, the default p95 SLA. */
static const double MET_BUCKETS_LATENCY_S[] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120,
};
/* Inter-token latency in seconds: 1 ms (small model, AVX-512) to 2 s (a large
 * model on a few cores, or a step that also prefills). */
static const double MET_BUCKETS_ITL_S[] = {
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075,
    0.1,   0.15,   0.2,   0.3,  0.5,  0.75,  1,    2,
};
/* Sequences per batched step. */
static const double MET_BUCKETS_BATCH[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};

#define MET_COUNT(arr) ((int)(sizeof(arr) / sizeof((arr)[0])))

/* ---- registry and families ---------------------------------------------------- */

typedef struct met_registry met_registry;
typedef struct met_family met_family;
typedef struct met_series met_series;

/* NULL on allocation failure. */
met_registry *met_registry_create(void);
/* Frees the registry, its families and series. Accepts NULL. */
void met_registry_destroy(met_registry *r);

/* Registers (or returns the identical existing) family. name and help are
 * copied; label_names (n_labels entries, may be NULL when n_labels is 0) are
 * copied. The family belongs to the registry. NULL on error (logged). */
met_family *met_counter(met_registry *r, const char *name, const char *help, int n_labels,
                        const char *const *label_names);
met_family *met_gauge(met_registry *r, const char *name, const char *help, int n_labels,
                      const char *const *label_names);
/* bounds: n_bounds finite, strictly increasing upper bounds (copied); the
 * +Inf bucket is implicit. E.g. MET_BUCKETS_LATENCY_S,
 * MET_COUNT(MET_BUCKETS_LATENCY_S). */
met_family *met_histogram(met_registry *r, const char *name, const char *help, int n_labels,
                          const char *const *label_names, const double *bounds, int n_bounds);

/* Makes met_render also export the process collector:
 * process_resident_memory_bytes and process_virtual_memory_bytes (read from
 * /proc/self/statm at each render), process_cpu_seconds_total (getrusage)
 * and process_start_time_seconds (Unix time, computed once here from
 * /proc/self/stat and /proc/stat's btime). Idempotent. */
void met_registry_add_process_metrics(met_registry *r);

/* ---- series ------------------------------------------------------------------- */

/* The series for these label values (n_labels strings in the family's label
 * order; NULL entries count as ""; label_values may be NULL when the family
 * has no labels). Finds or creates it; the values are copied. Returns the
 * shared overflow series when the family is full or a value is invalid (see
 * the top comment), and NULL only when f is NULL or memory runs out. The
 * series belongs to the family. */
met_series *met_get(met_family *f, const char *const *label_values);

/* Counters: adds v (v >= 0; negative or NaN v is ignored). */
void met_add(met_series *s, double v);
/* Counters: adds 1. */
void met_inc(met_series *s);
/* Gauges: sets the value / adds v (may be negative). */
void met_set(met_series *s, double v);
void met_gauge_add(met_series *s, double v);
/* Gauges: sets every series the family has to v (e.g. the per-model gauges of
 * a scrape, so that a model no longer loaded reads 0, not its last value). */
void met_gauge_set_all(met_family *f, double v);
/* Histograms: records one observation (NaN is ignored). */
void met_observe(met_series *s, double v);

/* Reads back (tests, /health): a counter's or gauge's value, a histogram's sum
 * of observations; NaN when s is NULL. */
double met_value(const met_series *s);
/* Histograms: the number of observations; when buckets is non-NULL it gets the
 * n_bounds + 1 per-bucket (non-cumulative) counts, the last one for +Inf.
 * 0 when s is NULL or not a histogram. */
uint64_t met_hist_count(const met_series *s, uint64_t *buckets);

/* ---- exposition ------------------------------------------------------------------ */

/* The whole registry in Prometheus text format 0.0.4 as a malloc'd,
 * NUL-terminated string the caller frees; *len (if non-NULL) gets its length
 * without the NUL. NULL on allocation failure. Content type:
 * MET_CONTENT_TYPE. */
char *met_render(met_registry *r, size_t *len);
#define MET_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* ---- rolling-window quantiles ------------------------------------------------------ */

/* The last `capacity` samples, of which those at most window_s seconds old
 * count. Each sample is one atomic 64-bit slot: a 40-bit timestamp in
 * milliseconds (no wrap for 34 years of the caller's clock) and the value as
 * a float32 rounded to 16 significant bits (relative error <= 2^-16, ample
 * for latency percentiles). Adding is lock-free (one fetch-add and one
 * store); when more than `capacity` samples arrive within the window, the
 * oldest are overwritten, so quantiles describe the most recent ones. */
typedef struct met_window met_window;

/* window_s > 0, 1 <= capacity <= 1<<24 (8 bytes a slot; e.g. 300 s and 65536
 * slots, 512 KiB, hold 5 minutes at over 200 requests/s). NULL on bad
 * arguments or no memory. */
met_window *met_window_create(double window_s, size_t capacity);
void met_window_destroy(met_window *w); /* accepts NULL */

/* now_s: the caller's clock in seconds (e.g. kn_now_s()), >= 0 and
 * non-decreasing across calls up to small races between threads. NaN values
 * are ignored. Accepts NULL w. */
void met_window_add(met_window *w, double now_s, double value);

/* For each qs[i] in [0, 1], out[i] gets the quantile of the samples with
 * timestamp >= now_s - window_s, by linear interpolation between closest
 * ranks (numpy's default: h = (n-1)q, x[floor h] + (h - floor h)(x[floor h +
 * 1] - x[floor h]) over the sorted samples). Returns the number of samples in
 * the window; when it is 0 (or on allocation failure, or NULL w), every
 * out[i] is NaN. Copies and sorts: allocates, not for the hot path. */
size_t met_window_quantiles(met_window *w, double now_s, const double *qs, size_t n_q, double *out);

#endif
