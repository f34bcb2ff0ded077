/* testutil.c — see testutil.h. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

const char *tu_shared_path(char *buf, size_t cap, const char *rel) {
    const char *s = getenv("KILN_SHARED");
    snprintf(buf, cap, "%s/%s", s ? s : "../shared", rel);
    return buf;
}

const char *tu_kiln_bin(void) {
    const char *b = getenv("KILN_BIN");
    return b ? b : "build/kiln";
}

const char *tu_tmpdir(char *buf, size_t cap) {
    const char *t = getenv("TMPDIR");
    snprintf(buf, cap, "%s/kiln-test-XXXXXX", t ? t : "/tmp");
    if (!mkdtemp(buf)) return NULL;
    return buf;
}

void tu_rmdir(const char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
}

uint64_t tu_rng_u64(tu_rng *r) {
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float tu_rng_uniform(tu_rng *r) { return (float)(tu_rng_u64(r) >> 40) / (float)(1 << 24); }

float tu_rng_normal(tu_rng *r) {
    float u1 = tu_rng_uniform(r), u2 = tu_rng_uniform(r);
    if (u1 < 1e-7f) u1 = 1e-7f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

int tu_run(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = 0;
    if (out && cap) {
        size_t r;
        while (n + 1 < cap && (r = fread(out + n, 1, cap - 1 - n, p)) > 0) n += r;
        out[n] = 0;
    }
    char sink[4096];
    while (fread(sink, 1, sizeof sink, p) > 0) {
    }
    int st = pclose(p);
    if (st == -1) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int zoo_open(void **state, const char *model, const char *reference) {
    char path[1024];
    tu_zoo *z = calloc(1, sizeof *z);
    if (!z) return -1;
    kn_err err = {0};
    if (gguf_open(tu_shared_path(path, sizeof path, model), &z->g, &err) != KN_OK) {
        fprintf(stderr, "%s: %s\n", path, err.msg);
        free(z);
        return -1;
    }
    json_error_t jerr;
    z->ref = json_load_file(tu_shared_path(path, sizeof path, reference), 0, &jerr);
    if (!z->ref) {
        fprintf(stderr, "%s:%d: %s\n", path, jerr.line, jerr.text);
        gguf_close(z->g);
        free(z);
        return -1;
    }
    *state = z;
    return 0;
}

int tu_zoo_setup(void **state) {
    return zoo_open(state, "models/quant-zoo.gguf", "reference/quant-zoo.dequant.json");
}

int tu_zoo_iq_setup(void **state) {
    return zoo_open(state, "models/quant-zoo-iq.gguf", "reference/quant-zoo-iq.dequant.json");
}

int tu_zoo_teardown(void **state) {
    tu_zoo *z = *state;
    if (z) {
        json_decref(z->ref);
        gguf_close(z->g);
        free(z);
    }
    return 0;
}

int tu_compute_setup(void **state) {
    tu_compute *e = calloc(1, sizeof *e);
    if (!e) return -1;
    kn_cpu_level lvl;
    kn_err err = {0};
    if (kn_cpu_select(&lvl, &err) != KN_OK) {
        fprintf(stderr, "%s\n", err.msg);
        free(e);
        return -1;
    }
    tensor_ops_init(&e->ops, lvl);
    if (!(e->pool = kn_pool_create(2))) {
        free(e);
        return -1;
    }
    fprintf(stderr, "kernel set: %s\n", kn_cpu_level_name(lvl));
    *state = e;
    return 0;
}

int tu_compute_teardown(void **state) {
    tu_compute *e = *state;
    if (e) {
        kn_pool_destroy(e->pool);
        free(e);
    }
    return 0;
}
