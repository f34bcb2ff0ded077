/* window.c — rolling-window quantiles (met_window_*, see kiln/metrics.h).
 *
 * A ring of `cap` atomic 64-bit slots. A writer takes a ticket with one
 * fetch-add on `head` and stores its packed sample in slot ticket % cap.
 * Slot layout: bits 63..24 = timestamp in ms + 1 (0 marks an empty slot),
 * bits 23..0 = the float32 bits of the value >> 8, rounded to nearest. */
#include "kiln/metrics.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define TS_MAX ((UINT64_C(1) << 40) - 2) /* largest storable ms timestamp */

struct met_window {
    double window_s;
    size_t cap;
    _Atomic uint64_t head;
    _Atomic uint64_t slots[];
};

met_window *met_window_create(double window_s, size_t capacity) {
    if (!(window_s > 0) || !isfinite(window_s) || capacity < 1 || capacity > (size_t)1 << 24) return NULL;
    met_window *w = malloc(sizeof *w + capacity * sizeof(w->slots[0]));
    if (!w) return NULL;
    w->window_s = window_s;
    w->cap = capacity;
    atomic_init(&w->head, 0);
    for (size_t i = 0; i < capacity; i++) atomic_init(&w->slots[i], 0);
    return w;
}

void met_window_destroy(met_window *w) {
    free(w);
}

static uint64_t to_ms(double s) {
    if (!(s > 0)) return 0;
    double ms = s * 1000.0 + 0.5;
    return ms >= (double)TS_MAX ? TS_MAX : (uint64_t)ms;
}

void met_window_add(met_window *w, double now_s, double value) {
    if (!w || isnan(value)) return;
    float f = (float)value;
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    uint64_t v24 = (uint64_t)((bits + 0x80u) >> 8); /* no overflow: NaN excluded */
    uint64_t slot = ((to_ms(now_s) + 1) << 24) | v24;
    uint64_t t = atomic_fetch_add_explicit(&w->head, 1, memory_order_relaxed);
    atomic_store_explicit(&w->slots[t % w->cap], slot, memory_order_release);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

size_t met_window_quantiles(met_window *w, double now_s, const double *qs, size_t n_q, double *out) {
    for (size_t i = 0; i < n_q; i++) out[i] = NAN;
    if (!w) return 0;
    double *v = malloc(w->cap * sizeof(double));
    if (!v) return 0;
    uint64_t now_ms = to_ms(now_s), win_ms = to_ms(w->window_s);
    uint64_t oldest = now_ms > win_ms ? now_ms - win_ms : 0;
    size_t n = 0;
    for (size_t i = 0; i < w->cap; i++) {
        uint64_t slot = atomic_load_explicit(&w->slots[i], memory_order_acquire);
        if (!slot) continue;
        uint64_t ts = (slot >> 24) - 1;
        if (ts < oldest) continue;
        uint32_t bits = (uint32_t)(slot & 0xFFFFFFu) << 8;
        float f;
        memcpy(&f, &bits, sizeof f);
        v[n++] = (double)f;
    }
    if (n > 0) {
        qsort(v, n, sizeof(double), cmp_double);
        for (size_t i = 0; i < n_q; i++) {
            double q = qs[i];
            if (isnan(q)) continue;
            q = q < 0 ? 0 : q > 1 ? 1 : q;
            double h = (double)(n - 1) * q;
            size_t lo = (size_t)floor(h);
            if (lo >= n - 1) {
                out[i] = v[n - 1];
            } else {
                out[i] = v[lo] + (h - (double)lo) * (v[lo + 1] - v[lo]);
            }
        }
    }
    free(v);
    return n;
}
