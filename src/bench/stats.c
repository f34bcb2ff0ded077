/*
 * stats.c — percentiles and moments of a sample (bench_stats_compute).
 */
#include "kiln/bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Linear interpolation between order statistics: rank q*(n-1). */
static double pct(const double *s, size_t n, double q) {
    double r = q * (double)(n - 1);
    size_t lo = (size_t)r;
    if (lo >= n - 1) return s[n - 1];
    double f = r - (double)lo;
    return s[lo] + (s[lo + 1] - s[lo]) * f;
}

void bench_stats_compute(double *v, size_t n, bench_stats *out) {
    memset(out, 0, sizeof *out);
    if (n == 0) return;
    qsort(v, n, sizeof *v, cmp_double);
    out->n = n;
    out->min = v[0];
    out->max = v[n - 1];
    out->p50 = pct(v, n, 0.50);
    out->p75 = pct(v, n, 0.75);
    out->p90 = pct(v, n, 0.90);
    out->p95 = pct(v, n, 0.95);
    out->p99 = pct(v, n, 0.99);
    out->p999 = pct(v, n, 0.999);
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += v[i];
    out->mean = sum / (double)n;
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (v[i] - out->mean) * (v[i] - out->mean);
    out->stddev = n > 1 ? sqrt(ss / (double)(n - 1)) : 0.0;
}
