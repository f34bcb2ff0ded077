/*
 * l2_record.h — private to src/cache: the bytes of one L2 entry, whatever
 * store keeps them (l2_record.c). A backend stores the record under the
 * entry's key and gets back the value, its expiry, or why the record cannot
 * be trusted.
 *
 * Key (REC_KEY_LEN = 24 bytes): model tag (8, big endian) || rc_key hi (8,
 * big endian) || rc_key lo (8, big endian). Big endian, so that the records
 * of one model are adjacent in a sorted store.
 *
 * Record: a 48-byte header (integers little endian)
 *     magic "KLC1" (4) | version 1 (1) | type (1: rc_type) | flags (2)
 *     raw_len (4) | stored_len (4) | created_ms (8) | expiry_ms (8)
 *     model tag (8) | checksum (8): XXH3-64 over the header's first 40
 *     bytes and the stored payload
 * followed by the payload: a zstd frame (level 3) of raw_len bytes, or,
 * when flags bit 0 (REC_FLAG_RAW) is set, the raw value (zstd did not
 * shrink it; raw_len = stored_len). A sound record has stored_len = its
 * size - 48, raw_len <= REC_RAW_MAX (256 MiB), no other flag bit, and the
 * type and model tag of the store and key it was found under. A record
 * whose magic, version, lengths, checksum or zstd frame do not check out is
 * corrupt; what a backend does with it (delete, log, count) is its own
 * business.
 *
 * Pure functions: no locks, no I/O, no globals.
 */
#ifndef KILN_CACHE_L2_RECORD_H
#define KILN_CACHE_L2_RECORD_H

#include "cache_internal.h"

#include <zstd.h>

#define REC_HDR_LEN 48
#define REC_KEY_LEN 24 /* model tag || rc_key hi || rc_key lo, big endian */
#define REC_VERSION 1
#define REC_FLAG_RAW 1u          /* payload stored uncompressed */
#define REC_RAW_MAX (256u << 20) /* largest value accepted or read back */
#define REC_ZSTD_LEVEL 3

/* Byte order helpers: big endian 64-bit (keys), little endian n bytes
 * (1..8: header fields, "meta" values). */
static inline void rec_put_be64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}
static inline uint64_t rec_get_be64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}
static inline void rec_put_le(uint8_t *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++, v >>= 8)
        p[i] = (uint8_t)v;
}
static inline uint64_t rec_get_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* The header's fields. */
typedef struct rc_rec_hdr {
    unsigned flags;
    uint32_t raw_len, stored_len;
    int64_t created_ms, expiry_ms;
    uint64_t model, sum;
} rc_rec_hdr;

typedef enum rc_rec_state { REC_OK, REC_EXPIRED, REC_CORRUPT, REC_NOMEM } rc_rec_state;

/* The key of (model, k). */
void rc_rec_key(uint8_t out[REC_KEY_LEN], uint64_t model, rc_key k);

/* A key as hex for log lines: the model tag, ':', then the rc_key. */
void rc_rec_key_hex(const uint8_t key[REC_KEY_LEN], char out[2 * REC_KEY_LEN + 2]);

/* Parses and checks the header of the record rec (n bytes) found under key
 * in type t's store: NULL when sound (*h filled), else why not. Does not
 * look at the payload. */
const char *rc_rec_parse(const void *rec, size_t n, rc_type t, const uint8_t key[REC_KEY_LEN], rc_rec_hdr *h);

/* Classifies the record rec (n bytes) under key in type t's store at
 * now_ms: REC_CORRUPT (*why says why), REC_EXPIRED, REC_NOMEM or REC_OK.
 * On REC_OK with out non-NULL, *out is the value (malloc'd, the caller
 * frees) and *out_len its length. *h is filled whenever the header parsed. */
rc_rec_state rc_rec_decode(const void *rec, size_t n, rc_type t, const uint8_t key[REC_KEY_LEN],
                           int64_t now_ms, rc_rec_hdr *h, void **out, size_t *out_len, const char **why);

/* The record of value val (len bytes, at most REC_RAW_MAX) of type t and
 * model, created at created_ms, to expire at expiry_ms: compressed with
 * cctx when that shrinks it, else raw. Returns the record (malloc'd, the
 * caller frees; *rec_len its size), or NULL out of memory. */
uint8_t *rc_rec_encode(ZSTD_CCtx *cctx, rc_type t, uint64_t model, const void *val, size_t len,
                       int64_t created_ms, int64_t expiry_ms, size_t *rec_len);

#endif
