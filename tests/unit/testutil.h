/*
 * testutil.h — small helpers shared by the cmocka unit tests: where the
 * shared reference data lives, a seeded RNG, running the kiln binary, and
 * temporary files. Include after <cmocka.h>'s prerequisites.
 */
#ifndef KILN_TESTUTIL_H
#define KILN_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>

#include "kiln/gguf.h"
#include "kiln/tensor.h"

/* $KILN_SHARED/<rel> in buf (the shared/ directory beside the repo). */
const char *tu_shared_path(char *buf, size_t cap, const char *rel);
/* $KILN_BIN: the kiln binary under test. */
const char *tu_kiln_bin(void);
/* A fresh directory under $TMPDIR, removed by tu_rmdir. */
const char *tu_tmpdir(char *buf, size_t cap);
void tu_rmdir(const char *dir);

/* Deterministic RNG (splitmix64). */
typedef struct tu_rng { uint64_t s; } tu_rng;
uint64_t tu_rng_u64(tu_rng *r);
float tu_rng_uniform(tu_rng *r);  /* [0, 1) */
float tu_rng_normal(tu_rng *r);   /* N(0, 1) */

/* Runs a shell command; captures stdout (up to cap-1 bytes, NUL-terminated)
 * when out is non-NULL. Returns the exit status (or -1). */
int tu_run(const char *cmd, char *out, size_t cap);

/* ../shared/models/quant-zoo.gguf with llama.cpp's dequantization of it
 * (reference/quant-zoo.dequant.json), as a cmocka group/test fixture:
 * *state becomes a tu_zoo. tu_zoo_iq_setup does the same for
 * quant-zoo-iq.gguf (the i-quants, TQ1_0/TQ2_0 and MXFP4) and
 * reference/quant-zoo-iq.dequant.json; tu_zoo_teardown frees either. */
typedef struct tu_zoo {
    gguf_ctx *g;
    json_t *ref;
} tu_zoo;
int tu_zoo_setup(void **state);
int tu_zoo_iq_setup(void **state);
int tu_zoo_teardown(void **state);

/* The selected kernel set (KILN_CPU) and a 2-thread pool, as a cmocka
 * group fixture for tests that run the forward pass: *state becomes a
 * tu_compute. The setup logs the kernel set. */
typedef struct tu_compute {
    tensor_ops ops;
    kn_pool *pool;
} tu_compute;
int tu_compute_setup(void **state);
int tu_compute_teardown(void **state);

#endif
