/*
 * l2_record.c — the L2 record codec (format in l2_record.h): keys, the
 * 48-byte header with its XXH3 checksum, zstd payloads, and every check a
 * record must pass before its value is served. Knows no store.
 */
#define XXH_STATIC_LINKING_ONLY
#include "l2_record.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static const uint8_t MAGIC[4] = {'K', 'L', 'C', '1'};

void rc_rec_key(uint8_t out[REC_KEY_LEN], uint64_t model, rc_key k) {
    rec_put_be64(out, model);
    rec_put_be64(out + 8, k.hi);
    rec_put_be64(out + 16, k.lo);
}

void rc_rec_key_hex(const uint8_t key[REC_KEY_LEN], char out[2 * REC_KEY_LEN + 2]) {
    static const char H[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < REC_KEY_LEN; i++) {
        if (i == 8) *o++ = ':';
        *o++ = H[key[i] >> 4];
        *o++ = H[key[i] & 15];
    }
    *o = 0;
}

static uint64_t checksum(const uint8_t *hdr, const void *payload, size_t n) {
    XXH3_state_t st;
    XXH3_INITSTATE(&st);
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, hdr, 40);
    XXH3_64bits_update(&st, payload, n);
    return XXH3_64bits_digest(&st);
}

const char *rc_rec_parse(const void *rec, size_t n, rc_type t, const uint8_t key[REC_KEY_LEN],
                         rc_rec_hdr *h) {
    const uint8_t *p = rec;
    if (n < REC_HDR_LEN) return "shorter than its header";
    if (memcmp(p, MAGIC, 4)) return "bad magic";
    if (p[4] != REC_VERSION) return "unknown version";
    if (p[5] != (uint8_t)t) return "type does not match its database";
    h->flags = (unsigned)rec_get_le(p + 6, 2);
    h->raw_len = (uint32_t)rec_get_le(p + 8, 4);
    h->stored_len = (uint32_t)rec_get_le(p + 12, 4);
    h->created_ms = (int64_t)rec_get_le(p + 16, 8);
    h->expiry_ms = (int64_t)rec_get_le(p + 24, 8);
    h->model = rec_get_le(p + 32, 8);
    h->sum = rec_get_le(p + 40, 8);
    if (h->flags & ~REC_FLAG_RAW) return "unknown flags";
    if ((uint64_t)h->stored_len != n - REC_HDR_LEN) return "stored length does not match the value size";
    if (h->raw_len > REC_RAW_MAX) return "raw length out of range";
    if ((h->flags & REC_FLAG_RAW) && h->raw_len != h->stored_len) return "raw record with two lengths";
    if (h->model != rec_get_be64(key)) return "model tag does not match its key";
    return NULL;
}

rc_rec_state rc_rec_decode(const void *rec, size_t n, rc_type t, const uint8_t key[REC_KEY_LEN],
                           int64_t now_ms, rc_rec_hdr *h, void **out, size_t *out_len, const char **why) {
    if ((*why = rc_rec_parse(rec, n, t, key, h))) return REC_CORRUPT;
    if (h->expiry_ms <= now_ms) return REC_EXPIRED;
    const uint8_t *payload = (const uint8_t *)rec + REC_HDR_LEN;
    if (checksum(rec, payload, h->stored_len) != h->sum) {
        *why = "checksum mismatch";
        return REC_CORRUPT;
    }
    uint8_t *buf = malloc(h->raw_len ? h->raw_len : 1);
    if (!buf) return REC_NOMEM;
    if (h->flags & REC_FLAG_RAW) {
        memcpy(buf, payload, h->raw_len);
    } else {
        unsigned long long fcs = ZSTD_getFrameContentSize(payload, h->stored_len);
        size_t got = fcs == h->raw_len ? ZSTD_decompress(buf, h->raw_len, payload, h->stored_len) : 0;
        if (fcs != h->raw_len || ZSTD_isError(got) || got != h->raw_len) {
            free(buf);
            *why = "zstd frame does not decompress to its raw length";
            return REC_CORRUPT;
        }
    }
    if (out) {
        *out = buf;
        *out_len = h->raw_len;
    } else {
        free(buf);
    }
    return REC_OK;
}

uint8_t *rc_rec_encode(ZSTD_CCtx *cctx, rc_type t, uint64_t model, const void *val, size_t len,
                       int64_t created_ms, int64_t expiry_ms, size_t *rec_len) {
    size_t bound = ZSTD_compressBound(len);
    uint8_t *rec = malloc(REC_HDR_LEN + (bound > len ? bound : len));
    if (!rec) return NULL;
    size_t z = len ? ZSTD_compressCCtx(cctx, rec + REC_HDR_LEN, bound, val, len, REC_ZSTD_LEVEL) : 0;
    unsigned flags = 0;
    if (!len || ZSTD_isError(z) || z >= len) {
        if (len) memcpy(rec + REC_HDR_LEN, val, len);
        z = len;
        flags = REC_FLAG_RAW;
    }
    memcpy(rec, MAGIC, 4);
    rec[4] = REC_VERSION;
    rec[5] = (uint8_t)t;
    rec_put_le(rec + 6, flags, 2);
    rec_put_le(rec + 8, len, 4);
    rec_put_le(rec + 12, z, 4);
    rec_put_le(rec + 16, (uint64_t)created_ms, 8);
    rec_put_le(rec + 24, (uint64_t)expiry_ms, 8);
    rec_put_le(rec + 32, model, 8);
    rec_put_le(rec + 40, checksum(rec, rec + REC_HDR_LEN, z), 8);
    *rec_len = REC_HDR_LEN + z;
    return rec;
}
