/*
 * fuzz_gguf.c — libFuzzer target for the GGUF reader: opens the input with
 * gguf_open_mem and, when it is accepted, walks every key and tensor through
 * the public getters (so every pointer the reader hands out is touched).
 * Seeds: tests/fuzz/corpus/gguf/ (written by tests/unit/gguf/test_gguf.c).
 */
#include "kiln/gguf.h"
#include "kiln/tensor.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static volatile uint64_t sink;

static void touch(const void *p, uint64_t n) {
    if (!n) return;
    const uint8_t *b = p;
    sink += b[0] + b[n - 1] + b[n / 2];
}

static void walk(const gguf_ctx *g) {
    char name[256];
    sink += gguf_version(g) + gguf_alignment(g) + gguf_data_offset(g) + gguf_file_size(g);
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        gguf_str k = gguf_kv_key(g, i);
        touch(k.data, k.len);
        gguf_type t = gguf_kv_type(g, i);
        if (k.len < sizeof name && !memchr(k.data, 0, k.len)) {
            memcpy(name, k.data, k.len);
            name[k.len] = 0;
            if (gguf_find_key(g, name) != i) __builtin_trap();
            uint64_t u;
            int64_t s;
            uint32_t u32;
            double d;
            float f;
            bool b;
            gguf_str str;
            sink += gguf_get_u64(g, name, &u) + gguf_get_i64(g, name, &s) + gguf_get_u32(g, name, &u32);
            sink += gguf_get_f64(g, name, &d) + gguf_get_f32(g, name, &f) + gguf_get_bool(g, name, &b);
            if (gguf_get_str(g, name, &str) == KN_OK) touch(str.data, str.len);
        }
        if (t == GGUF_TYPE_ARRAY) {
            gguf_type et;
            uint64_t n;
            const void *data;
            if (gguf_kv_get_arr(g, i, &et, &n, &data) != KN_OK) __builtin_trap();
            if (et == GGUF_TYPE_STRING) {
                for (uint64_t j = 0; j < n; j++) {
                    gguf_str s;
                    if (gguf_kv_arr_str(g, i, j, &s) != KN_OK) __builtin_trap();
                    touch(s.data, s.len);
                }
            } else {
                touch(data, n * gguf_type_size(et));
                for (uint64_t j = 0; j < n && j < 64; j++) {
                    int64_t iv;
                    double dv;
                    sink += gguf_arr_get_i64(g, i, j, &iv) + gguf_arr_get_f64(g, i, j, &dv);
                }
            }
        } else {
            int64_t iv;
            uint64_t uv;
            double fv;
            gguf_str sv = {0, NULL};
            if (gguf_kv_scalar(g, i, &iv, &uv, &fv, &sv) != KN_OK) __builtin_trap();
            touch(sv.data, sv.len);
        }
    }
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor_info *t = gguf_tensor(g, i);
        const q_traits *tr = q_get_traits(t->type);
        if (!tr || t->nbytes != t->nelements / (uint64_t)tr->blck_size * tr->type_size) __builtin_trap();
        touch(t->data, t->nbytes);
        touch(t->name.data, t->name.len);
        if (t->name.len < sizeof name && !memchr(t->name.data, 0, t->name.len)) {
            memcpy(name, t->name.data, t->name.len);
            name[t->name.len] = 0;
            if (gguf_find_tensor(g, name) != t) __builtin_trap();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_ctx *g = NULL;
    kn_err err;
    if (gguf_open_mem(data, size, &g, &err) == KN_OK) {
        walk(g);
        gguf_close(g);
    } else if (g || !err.msg[0]) {
        __builtin_trap(); /* failures must leave no ctx and say why */
    }
    return 0;
}
