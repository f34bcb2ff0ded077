/*
 * gguf.c — GGUF v2/v3 reader over mmap (or a caller's buffer) and a
 * streaming writer. See gguf.h for the format and the invariants.
 *
 * The reader parses the header in one pass with a bounds-checked cursor:
 * every count and length is compared with the bytes left before anything is
 * allocated for it, so a hostile file can make us allocate at most a small
 * multiple of its own size. Keys and tensors are then indexed by name
 * (sorted arrays of indices) for uniqueness checks and O(log n) lookups, and
 * tensors are sorted by offset to reject overlapping data.
 */
#include "kiln/gguf.h"

#include "kiln/tensor.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c assumes a little-endian host"
#endif

/* ------------------------------------------------------------------------ */
/* value types                                                              */

static const char *const TYPE_NAMES[GGUF_TYPE_COUNT] = {
    [GGUF_TYPE_UINT8] = "u8",    [GGUF_TYPE_INT8] = "i8",     [GGUF_TYPE_UINT16] = "u16",
    [GGUF_TYPE_INT16] = "i16",   [GGUF_TYPE_UINT32] = "u32",  [GGUF_TYPE_INT32] = "i32",
    [GGUF_TYPE_FLOAT32] = "f32", [GGUF_TYPE_BOOL] = "bool",   [GGUF_TYPE_STRING] = "string",
    [GGUF_TYPE_ARRAY] = "array", [GGUF_TYPE_UINT64] = "u64",  [GGUF_TYPE_INT64] = "i64",
    [GGUF_TYPE_FLOAT64] = "f64",
};

/* Bytes of one scalar value; 0 for string/array. */
static const uint8_t TYPE_SIZE[GGUF_TYPE_COUNT] = {
    [GGUF_TYPE_UINT8] = 1,   [GGUF_TYPE_INT8] = 1,   [GGUF_TYPE_UINT16] = 2, [GGUF_TYPE_INT16] = 2,
    [GGUF_TYPE_UINT32] = 4,  [GGUF_TYPE_INT32] = 4,  [GGUF_TYPE_FLOAT32] = 4, [GGUF_TYPE_BOOL] = 1,
    [GGUF_TYPE_STRING] = 0,  [GGUF_TYPE_ARRAY] = 0,  [GGUF_TYPE_UINT64] = 8, [GGUF_TYPE_INT64] = 8,
    [GGUF_TYPE_FLOAT64] = 8,
};

const char *gguf_type_name(gguf_type t) {
    if ((unsigned)t >= GGUF_TYPE_COUNT) return "?";
    return TYPE_NAMES[t];
}

size_t gguf_type_size(gguf_type t) {
    if ((unsigned)t >= GGUF_TYPE_COUNT) return 0;
    return TYPE_SIZE[t];
}

bool gguf_str_eq(gguf_str s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.data, c, n) == 0);
}

static int str_cmp(gguf_str a, gguf_str b) {
    uint64_t n = a.len < b.len ? a.len : b.len;
    int r = n ? memcmp(a.data, b.data, n) : 0;
    if (r) return r;
    return a.len < b.len ? -1 : a.len > b.len ? 1 : 0;
}

static int str_cmp_c(gguf_str a, const char *c) {
    gguf_str b = {strlen(c), c};
    return str_cmp(a, b);
}

/* A printable, bounded copy of a name for error messages. */
static const char *printable(gguf_str s, char *buf, size_t cap) {
    size_t n = 0;
    for (uint64_t i = 0; i < s.len && n + 4 < cap; i++) {
        unsigned char ch = (unsigned char)s.data[i];
        buf[n++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    if (s.len > n && n + 4 <= cap) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = 0;
    return buf;
}

/* ------------------------------------------------------------------------ */
/* reader                                                                   */

typedef struct gguf_kv {
    gguf_str key;
    gguf_type type;
    gguf_type elem_type; /* arrays */
    uint64_t n;          /* arrays: element count */
    const uint8_t *val;  /* scalars: the value; non-string arrays: first element */
    gguf_str sval;       /* strings */
    gguf_str *strs;      /* string arrays: [n] owned index into the mapping */
    const uint8_t *raw;  /* the encoded value (after the type field) */
    uint64_t raw_len;
} gguf_kv;

struct gguf_ctx {
    const uint8_t *base;
    uint64_t size;
    bool mapped; /* base is our mmap */
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    int64_t n_kv;
    gguf_kv *kv;          /* [n_kv] owned */
    int64_t *kv_sorted;   /* [n_kv] owned: indices sorted by key */
    int64_t n_tensors;
    gguf_tensor_info *tensors; /* [n_tensors] owned */
    int64_t *t_sorted;         /* [n_tensors] owned: indices sorted by name */
};

typedef struct cursor {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos;
} cursor;

static uint64_t cur_left(const cursor *c) { return c->size - c->pos; }

static kn_status rd(cursor *c, void *out, uint64_t n, const char *what, kn_err *err) {
    if (n > cur_left(c))
        return kn_fail(err, KN_EFORMAT, "truncated file: %s at offset %llu needs %llu bytes, %llu left", what,
                       (unsigned long long)c->pos, (unsigned long long)n, (unsigned long long)cur_left(c));
    memcpy(out, c->base + c->pos, n);
    c->pos += n;
    return KN_OK;
}

static kn_status rd_str(cursor *c, gguf_str *out, const char *what, kn_err *err) {
    uint64_t len = 0;
    kn_status st = rd(c, &len, 8, what, err);
    if (st) return st;
    if (len > cur_left(c))
        return kn_fail(err, KN_EFORMAT, "%s at offset %llu: string length %llu exceeds the %llu bytes left in the file",
                       what, (unsigned long long)(c->pos - 8), (unsigned long long)len,
                       (unsigned long long)cur_left(c));
    out->len = len;
    out->data = (const char *)(c->base + c->pos);
    c->pos += len;
    return KN_OK;
}

/* Sorting helpers: qsort has no context argument, so sort pairs. */
typedef struct sort_item {
    gguf_str name;
    uint64_t off, end;
    int64_t idx;
} sort_item;

static int cmp_name(const void *a, const void *b) {
    const sort_item *x = a, *y = b;
    int r = str_cmp(x->name, y->name);
    if (r) return r;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int cmp_off(const void *a, const void *b) {
    const sort_item *x = a, *y = b;
    if (x->off != y->off) return x->off < y->off ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static kn_status parse_kv(gguf_ctx *ctx, cursor *c, gguf_kv *kv, kn_err *err) {
    char nb[96];
    kn_status st = rd_str(c, &kv->key, "key", err);
    if (st) return st;
    uint32_t t = 0;
    if ((st = rd(c, &t, 4, "value type", err))) {
        kn_err_prefix(err, "key '%s'", printable(kv->key, nb, sizeof nb));
        return st;
    }
    if (t >= GGUF_TYPE_COUNT)
        return kn_fail(err, KN_EFORMAT, "key '%s': unknown value type %u", printable(kv->key, nb, sizeof nb), t);
    kv->type = (gguf_type)t;
    kv->raw = c->base + c->pos;
    uint64_t start = c->pos;
    if (t == GGUF_TYPE_STRING) {
        st = rd_str(c, &kv->sval, "string value", err);
    } else if (t == GGUF_TYPE_ARRAY) {
        uint32_t et = 0;
        uint64_t n = 0;
        if ((st = rd(c, &et, 4, "array element type", err)) || (st = rd(c, &n, 8, "array length", err))) goto out;
        if (et == GGUF_TYPE_ARRAY) {
            st = kn_fail(err, KN_EFORMAT, "arrays of arrays are not supported");
            goto out;
        }
        if (et >= GGUF_TYPE_COUNT) {
            st = kn_fail(err, KN_EFORMAT, "unknown array element type %u", et);
            goto out;
        }
        kv->elem_type = (gguf_type)et;
        kv->n = n;
        if (et == GGUF_TYPE_STRING) {
            /* Each string takes at least its 8-byte length. */
            if (n > cur_left(c) / 8) {
                st = kn_fail(err, KN_EFORMAT, "array of %llu strings cannot fit in the %llu bytes left in the file",
                             (unsigned long long)n, (unsigned long long)cur_left(c));
                goto out;
            }
            if (n) {
                kv->strs = malloc((size_t)n * sizeof *kv->strs);
                if (!kv->strs) {
                    st = kn_fail(err, KN_ENOMEM, "out of memory for %llu strings", (unsigned long long)n);
                    goto out;
                }
            }
            for (uint64_t i = 0; i < n; i++) {
                if ((st = rd_str(c, &kv->strs[i], "array string", err))) {
                    kn_err_prefix(err, "element %llu", (unsigned long long)i);
                    goto out;
                }
            }
        } else {
            uint64_t bytes;
            if (!kn_mul_u64(n, TYPE_SIZE[et], &bytes) || bytes > cur_left(c)) {
                st = kn_fail(err, KN_EFORMAT, "array of %llu %s values exceeds the %llu bytes left in the file",
                             (unsigned long long)n, TYPE_NAMES[et], (unsigned long long)cur_left(c));
                goto out;
            }
            kv->val = c->base + c->pos;
            c->pos += bytes;
        }
    } else {
        kv->val = c->base + c->pos;
        uint8_t tmp[8];
        st = rd(c, tmp, TYPE_SIZE[t], "value", err);
    }
out:
    if (st) {
        kn_err_prefix(err, "key '%s'", printable(kv->key, nb, sizeof nb));
        return st;
    }
    kv->raw_len = c->pos - start;
    (void)ctx;
    return KN_OK;
}

/* Sorts items by name and writes their indices in that order to sorted[n];
 * a name that appears twice is an error ("duplicate WHAT 'NAME'"). Frees
 * items. */
static kn_status index_by_name(sort_item *items, int64_t n, int64_t *sorted, const char *what, kn_err *err) {
    char nb[96];
    kn_status st = KN_OK;
    qsort(items, (size_t)n, sizeof *items, cmp_name);
    for (int64_t i = 0; i < n && !st; i++) {
        if (i && str_cmp(items[i].name, items[i - 1].name) == 0)
            st = kn_fail(err, KN_EFORMAT, "duplicate %s '%s'", what, printable(items[i].name, nb, sizeof nb));
        else
            sorted[i] = items[i].idx;
    }
    free(items);
    return st;
}

/* The header: magic, version, and the tensor and key counts, each bounded
 * by the bytes left (a key takes at least 8 (length) + 4 (type) + 1 bytes;
 * a tensor info at least 8 + 4 + 8 + 4 + 8). */
static kn_status parse_header(gguf_ctx *ctx, cursor *c, uint64_t *n_tensors, uint64_t *n_kv, kn_err *err) {
    kn_status st;
    uint32_t magic = 0, version = 0;
    if (ctx->size < 4) return kn_fail(err, KN_EFORMAT, "not a GGUF file: only %llu bytes", (unsigned long long)ctx->size);
    memcpy(&magic, ctx->base, 4);
    if (magic != GGUF_MAGIC) {
        char m[5] = {0};
        for (int i = 0; i < 4; i++) {
            unsigned char ch = ctx->base[i];
            m[i] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
        }
        return kn_fail(err, KN_EFORMAT, "not a GGUF file: bad magic \"%s\" (0x%08x), expected \"GGUF\"", m, magic);
    }
    c->pos = 4;
    if ((st = rd(c, &version, 4, "version", err))) return st;
    if (version == 1) return kn_fail(err, KN_EUNSUPPORTED, "GGUF version 1 is not supported (only versions 2 and 3)");
    if (version != 2 && version != 3) {
        if (version == 0x02000000u || version == 0x03000000u)
            return kn_fail(err, KN_EUNSUPPORTED, "big-endian GGUF files are not supported");
        return kn_fail(err, KN_EUNSUPPORTED, "unsupported GGUF version %u (only versions 2 and 3)", version);
    }
    ctx->version = version;
    if ((st = rd(c, n_tensors, 8, "tensor count", err)) || (st = rd(c, n_kv, 8, "key count", err))) return st;
    if (*n_kv > cur_left(c) / 13)
        return kn_fail(err, KN_EFORMAT, "key count %llu cannot fit in the %llu bytes left in the file",
                       (unsigned long long)*n_kv, (unsigned long long)cur_left(c));
    if (*n_tensors > cur_left(c) / 32)
        return kn_fail(err, KN_EFORMAT, "tensor count %llu cannot fit in the %llu bytes left in the file",
                       (unsigned long long)*n_tensors, (unsigned long long)cur_left(c));
    return KN_OK;
}

/* The n_kv key-value pairs, then ctx->kv_sorted: the keys by name, which
 * must be unique. */
static kn_status parse_kvs(gguf_ctx *ctx, cursor *c, uint64_t n_kv, kn_err *err) {
    kn_status st;
    if (!n_kv) return KN_OK;
    ctx->kv = calloc((size_t)n_kv, sizeof *ctx->kv);
    ctx->kv_sorted = malloc((size_t)n_kv * sizeof *ctx->kv_sorted);
    if (!ctx->kv || !ctx->kv_sorted)
        return kn_fail(err, KN_ENOMEM, "out of memory for %llu keys", (unsigned long long)n_kv);
    for (uint64_t i = 0; i < n_kv; i++) {
        ctx->n_kv = (int64_t)i + 1; /* so that close frees what was allocated */
        if ((st = parse_kv(ctx, c, &ctx->kv[i], err))) return st;
    }
    ctx->n_kv = (int64_t)n_kv;

    sort_item *items = malloc((size_t)n_kv * sizeof *items);
    if (!items) return kn_fail(err, KN_ENOMEM, "out of memory");
    for (uint64_t i = 0; i < n_kv; i++) items[i] = (sort_item){ctx->kv[i].key, 0, 0, (int64_t)i};
    return index_by_name(items, (int64_t)n_kv, ctx->kv_sorted, "key", err);
}

/* ctx->alignment: general.alignment (a u32 power of two) when present,
 * else the default. */
static kn_status parse_alignment(gguf_ctx *ctx, kn_err *err) {
    ctx->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t ai = gguf_find_key(ctx, "general.alignment");
    if (ai < 0) return KN_OK;
    if (ctx->kv[ai].type != GGUF_TYPE_UINT32)
        return kn_fail(err, KN_EFORMAT, "general.alignment has type %s, expected u32",
                       gguf_type_name(ctx->kv[ai].type));
    uint32_t a;
    memcpy(&a, ctx->kv[ai].val, 4);
    if (a == 0 || (a & (a - 1)))
        return kn_fail(err, KN_EFORMAT, "general.alignment %u is not a power of two", a);
    ctx->alignment = a;
    return KN_OK;
}

/* Tensor info i: name, dimensions, type and offset; its element count and
 * byte size, checked for overflow and whole blocks. Errors name the tensor. */
static kn_status parse_tensor_info(cursor *c, gguf_tensor_info *ti, uint64_t i, kn_err *err) {
    char nb[96];
    kn_status st;
    if ((st = rd_str(c, &ti->name, "tensor name", err))) {
        kn_err_prefix(err, "tensor %llu", (unsigned long long)i);
        return st;
    }
    const char *nm = printable(ti->name, nb, sizeof nb);
    if ((st = rd(c, &ti->n_dims, 4, "dimension count", err))) goto fail;
    if (ti->n_dims == 0 || ti->n_dims > GGUF_MAX_DIMS) {
        st = kn_fail(err, KN_EFORMAT, "%u dimensions (must be 1..%d)", ti->n_dims, GGUF_MAX_DIMS);
        goto fail;
    }
    for (int d = 0; d < GGUF_MAX_DIMS; d++) ti->ne[d] = 1;
    for (uint32_t d = 0; d < ti->n_dims; d++) {
        if ((st = rd(c, &ti->ne[d], 8, "dimension", err))) goto fail;
        if (ti->ne[d] > (uint64_t)INT64_MAX) {
            st = kn_fail(err, KN_EFORMAT, "dimension %u is too large (%llu)", d,
                         (unsigned long long)ti->ne[d]);
            goto fail;
        }
    }
    if ((st = rd(c, &ti->type, 4, "type", err)) || (st = rd(c, &ti->offset, 8, "offset", err))) goto fail;
    const q_traits *tr = q_get_traits(ti->type);
    if (!tr || !tr->name || tr->blck_size <= 0 || tr->type_size == 0) {
        st = kn_fail(err, KN_EFORMAT, "unknown tensor type %u", ti->type);
        goto fail;
    }
    uint64_t ne = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        if (!kn_mul_u64(ne, ti->ne[d], &ne) || ne > (uint64_t)INT64_MAX) {
            st = kn_fail(err, KN_EFORMAT, "shape [%llu, %llu, %llu, %llu]: element count overflows",
                         (unsigned long long)ti->ne[0], (unsigned long long)ti->ne[1],
                         (unsigned long long)ti->ne[2], (unsigned long long)ti->ne[3]);
            goto fail;
        }
    }
    ti->nelements = ne;
    if (ti->ne[0] % (uint64_t)tr->blck_size) {
        st = kn_fail(err, KN_EFORMAT, "row length %llu is not a multiple of the %s block size %lld",
                     (unsigned long long)ti->ne[0], tr->name, (long long)tr->blck_size);
        goto fail;
    }
    if (!kn_mul_u64(ne / (uint64_t)tr->blck_size, tr->type_size, &ti->nbytes)) {
        st = kn_fail(err, KN_EFORMAT, "byte size overflows");
        goto fail;
    }
    return KN_OK;
fail:
    kn_err_prefix(err, "tensor '%s'", nm);
    return st;
}

/* The n_tensors tensor infos into ctx->tensors. */
static kn_status parse_tensor_infos(gguf_ctx *ctx, cursor *c, uint64_t n_tensors, kn_err *err) {
    kn_status st;
    if (n_tensors) {
        ctx->tensors = calloc((size_t)n_tensors, sizeof *ctx->tensors);
        ctx->t_sorted = malloc((size_t)n_tensors * sizeof *ctx->t_sorted);
        if (!ctx->tensors || !ctx->t_sorted)
            return kn_fail(err, KN_ENOMEM, "out of memory for %llu tensors", (unsigned long long)n_tensors);
    }
    ctx->n_tensors = (int64_t)n_tensors;
    for (uint64_t i = 0; i < n_tensors; i++)
        if ((st = parse_tensor_info(c, &ctx->tensors[i], i, err))) return st;
    return KN_OK;
}

/* The data section starts at the first multiple of the alignment after the
 * header (hdr_end); every tensor's offset is aligned and its bytes lie
 * inside the file. Sets ctx->data_offset and each tensor's data. */
static kn_status place_tensors(gguf_ctx *ctx, uint64_t hdr_end, kn_err *err) {
    char nb[96];
    uint64_t a = ctx->alignment;
    uint64_t data = hdr_end + (a - hdr_end % a) % a;
    if (data < hdr_end) return kn_fail(err, KN_EFORMAT, "data offset overflows");
    ctx->data_offset = data;
    for (int64_t i = 0; i < ctx->n_tensors; i++) {
        gguf_tensor_info *ti = &ctx->tensors[i];
        const char *nm = printable(ti->name, nb, sizeof nb);
        if (ti->offset % a)
            return kn_fail(err, KN_EFORMAT, "tensor '%s': data offset %llu is not a multiple of the alignment %u", nm,
                           (unsigned long long)ti->offset, ctx->alignment);
        uint64_t beg, end;
        if (!kn_add_u64(data, ti->offset, &beg) || !kn_add_u64(beg, ti->nbytes, &end))
            return kn_fail(err, KN_EFORMAT, "tensor '%s': data offset %llu + %llu bytes overflows", nm,
                           (unsigned long long)ti->offset, (unsigned long long)ti->nbytes);
        if (end > ctx->size)
            return kn_fail(err, KN_EFORMAT,
                           "truncated file: tensor '%s': data [%llu, %llu) extends past end of file (size %llu)", nm,
                           (unsigned long long)beg, (unsigned long long)end, (unsigned long long)ctx->size);
        ti->data = ctx->base + beg;
    }
    return KN_OK;
}

/* No two tensors' bytes overlap; then ctx->t_sorted: the tensors by name,
 * which must be unique. */
static kn_status index_tensors(gguf_ctx *ctx, kn_err *err) {
    char nb[96];
    kn_status st;
    const uint64_t data = ctx->data_offset;
    if (!ctx->n_tensors) return KN_OK;
    sort_item *items = malloc((size_t)ctx->n_tensors * sizeof *items);
    if (!items) return kn_fail(err, KN_ENOMEM, "out of memory");
    for (int64_t i = 0; i < ctx->n_tensors; i++) {
        const gguf_tensor_info *ti = &ctx->tensors[i];
        items[i] = (sort_item){ti->name, ti->offset, ti->offset + ti->nbytes, i};
    }
    qsort(items, (size_t)ctx->n_tensors, sizeof *items, cmp_off);
    /* Sorted by start: a tensor overlaps an earlier one iff it starts
     * before the furthest end seen so far. Empty tensors overlap nothing. */
    int64_t far = -1; /* index into items of the non-empty tensor ending furthest */
    for (int64_t i = 0; i < ctx->n_tensors; i++) {
        if (items[i].off == items[i].end) continue;
        if (far >= 0 && items[i].off < items[far].end) {
            char nb2[96];
            st = kn_fail(
                err, KN_EFORMAT, "tensor '%s': data [%llu, %llu) overlaps tensor '%s' at [%llu, %llu)",
                printable(items[i].name, nb, sizeof nb), (unsigned long long)(data + items[i].off),
                (unsigned long long)(data + items[i].end), printable(items[far].name, nb2, sizeof nb2),
                (unsigned long long)(data + items[far].off), (unsigned long long)(data + items[far].end));
            free(items);
            return st;
        }
        if (far < 0 || items[i].end > items[far].end) far = i;
    }
    return index_by_name(items, ctx->n_tensors, ctx->t_sorted, "tensor name", err);
}

/* Reads and checks the whole header of the file at ctx->base, in file
 * order; every step bounds what it reads by what is left. On failure ctx
 * holds what was allocated so far (gguf_close frees it). */
static kn_status parse(gguf_ctx *ctx, kn_err *err) {
    cursor c = {ctx->base, ctx->size, 0};
    uint64_t n_tensors = 0, n_kv = 0;
    kn_status st;
    if ((st = parse_header(ctx, &c, &n_tensors, &n_kv, err)) || (st = parse_kvs(ctx, &c, n_kv, err)) ||
        (st = parse_alignment(ctx, err)) || (st = parse_tensor_infos(ctx, &c, n_tensors, err)) ||
        (st = place_tensors(ctx, c.pos, err)))
        return st;
    return index_tensors(ctx, err);
}

static kn_status open_common(const void *data, size_t size, bool mapped, gguf_ctx **out, kn_err *err) {
    gguf_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        if (mapped) munmap((void *)data, size);
        return kn_fail(err, KN_ENOMEM, "out of memory");
    }
    ctx->base = data;
    ctx->size = size;
    ctx->mapped = mapped;
    kn_status st = parse(ctx, err);
    if (st) {
        gguf_close(ctx);
        return st;
    }
    *out = ctx;
    return KN_OK;
}

kn_status gguf_open_mem(const void *data, size_t size, gguf_ctx **out, kn_err *err) {
    *out = NULL;
    if (!data && size) return kn_fail(err, KN_EINVAL, "NULL buffer");
    static const uint8_t empty[1];
    return open_common(data ? data : empty, size, false, out, err);
}

kn_status gguf_open(const char *path, gguf_ctx **out, kn_err *err) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return kn_fail(err, KN_EIO, "cannot open: %s", strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return kn_fail(err, KN_EIO, "cannot stat: %s", strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return kn_fail(err, KN_EIO, "not a regular file");
    }
    if (sb.st_size == 0) {
        close(fd);
        return kn_fail(err, KN_EFORMAT, "not a GGUF file: the file is empty");
    }
    size_t size = (size_t)sb.st_size;
    void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED) return kn_fail(err, KN_EIO, "mmap failed: %s", strerror(e));
    return open_common(m, size, true, out, err);
}

void gguf_close(gguf_ctx *ctx) {
    if (!ctx) return;
    for (int64_t i = 0; i < ctx->n_kv; i++) free(ctx->kv[i].strs);
    free(ctx->kv);
    free(ctx->kv_sorted);
    free(ctx->tensors);
    free(ctx->t_sorted);
    if (ctx->mapped) munmap((void *)ctx->base, ctx->size);
    free(ctx);
}

uint32_t gguf_version(const gguf_ctx *ctx) { return ctx->version; }
uint64_t gguf_file_size(const gguf_ctx *ctx) { return ctx->size; }
uint32_t gguf_alignment(const gguf_ctx *ctx) { return ctx->alignment; }
uint64_t gguf_data_offset(const gguf_ctx *ctx) { return ctx->data_offset; }

int64_t gguf_n_kv(const gguf_ctx *ctx) { return ctx->n_kv; }

int64_t gguf_find_key(const gguf_ctx *ctx, const char *key) {
    int64_t lo = 0, hi = ctx->n_kv;
    gguf_str k = {strlen(key), key};
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int r = str_cmp(ctx->kv[ctx->kv_sorted[mid]].key, k);
        if (r == 0) return ctx->kv_sorted[mid];
        if (r < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

gguf_str gguf_kv_key(const gguf_ctx *ctx, int64_t i) {
    KN_ASSERT(i >= 0 && i < ctx->n_kv);
    return ctx->kv[i].key;
}

gguf_type gguf_kv_type(const gguf_ctx *ctx, int64_t i) {
    KN_ASSERT(i >= 0 && i < ctx->n_kv);
    return ctx->kv[i].type;
}

/* Reads a scalar integer/bool of type t at p as either signed or unsigned. */
static bool read_int(gguf_type t, const uint8_t *p, int64_t *iv, uint64_t *uv, bool *neg) {
    *neg = false;
    switch (t) {
    case GGUF_TYPE_UINT8: *uv = p[0]; break;
    case GGUF_TYPE_BOOL: *uv = p[0] != 0; break;
    case GGUF_TYPE_INT8: { int8_t v; memcpy(&v, p, 1); *iv = v; *neg = v < 0; *uv = (uint64_t)v; break; }
    case GGUF_TYPE_UINT16: { uint16_t v; memcpy(&v, p, 2); *uv = v; break; }
    case GGUF_TYPE_INT16: { int16_t v; memcpy(&v, p, 2); *iv = v; *neg = v < 0; *uv = (uint64_t)v; break; }
    case GGUF_TYPE_UINT32: { uint32_t v; memcpy(&v, p, 4); *uv = v; break; }
    case GGUF_TYPE_INT32: { int32_t v; memcpy(&v, p, 4); *iv = v; *neg = v < 0; *uv = (uint64_t)v; break; }
    case GGUF_TYPE_UINT64: { uint64_t v; memcpy(&v, p, 8); *uv = v; break; }
    case GGUF_TYPE_INT64: { int64_t v; memcpy(&v, p, 8); *iv = v; *neg = v < 0; *uv = (uint64_t)v; break; }
    default: return false;
    }
    if (!*neg) *iv = (int64_t)*uv; /* only meaningful when *uv <= INT64_MAX */
    return true;
}

static bool is_int_type(gguf_type t) {
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_INT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_INT16 ||
           t == GGUF_TYPE_UINT32 || t == GGUF_TYPE_INT32 || t == GGUF_TYPE_UINT64 || t == GGUF_TYPE_INT64;
}

static const gguf_kv *find_kv(const gguf_ctx *ctx, const char *key) {
    int64_t i = gguf_find_key(ctx, key);
    return i < 0 ? NULL : &ctx->kv[i];
}

static kn_status get_int(const gguf_ctx *ctx, const char *key, int64_t *iv, uint64_t *uv, bool *neg) {
    const gguf_kv *kv = find_kv(ctx, key);
    if (!kv) return KN_ENOTFOUND;
    if (!is_int_type(kv->type)) return KN_ETYPE;
    read_int(kv->type, kv->val, iv, uv, neg);
    return KN_OK;
}

kn_status gguf_get_u64(const gguf_ctx *ctx, const char *key, uint64_t *out) {
    int64_t iv; uint64_t uv; bool neg;
    kn_status st = get_int(ctx, key, &iv, &uv, &neg);
    if (st) return st;
    if (neg) return KN_ERANGE;
    *out = uv;
    return KN_OK;
}

kn_status gguf_get_i64(const gguf_ctx *ctx, const char *key, int64_t *out) {
    int64_t iv; uint64_t uv; bool neg;
    kn_status st = get_int(ctx, key, &iv, &uv, &neg);
    if (st) return st;
    if (!neg && uv > (uint64_t)INT64_MAX) return KN_ERANGE;
    *out = iv;
    return KN_OK;
}

kn_status gguf_get_u32(const gguf_ctx *ctx, const char *key, uint32_t *out) {
    uint64_t v;
    kn_status st = gguf_get_u64(ctx, key, &v);
    if (st) return st;
    if (v > UINT32_MAX) return KN_ERANGE;
    *out = (uint32_t)v;
    return KN_OK;
}

kn_status gguf_get_f64(const gguf_ctx *ctx, const char *key, double *out) {
    const gguf_kv *kv = find_kv(ctx, key);
    if (!kv) return KN_ENOTFOUND;
    if (kv->type == GGUF_TYPE_FLOAT32) {
        float f;
        memcpy(&f, kv->val, 4);
        *out = f;
    } else if (kv->type == GGUF_TYPE_FLOAT64) {
        memcpy(out, kv->val, 8);
    } else {
        return KN_ETYPE;
    }
    return KN_OK;
}

kn_status gguf_get_f32(const gguf_ctx *ctx, const char *key, float *out) {
    double d;
    kn_status st = gguf_get_f64(ctx, key, &d);
    if (st) return st;
    *out = (float)d;
    return KN_OK;
}

kn_status gguf_get_bool(const gguf_ctx *ctx, const char *key, bool *out) {
    const gguf_kv *kv = find_kv(ctx, key);
    if (!kv) return KN_ENOTFOUND;
    if (kv->type != GGUF_TYPE_BOOL) return KN_ETYPE;
    *out = kv->val[0] != 0;
    return KN_OK;
}

kn_status gguf_get_str(const gguf_ctx *ctx, const char *key, gguf_str *out) {
    const gguf_kv *kv = find_kv(ctx, key);
    if (!kv) return KN_ENOTFOUND;
    if (kv->type != GGUF_TYPE_STRING) return KN_ETYPE;
    *out = kv->sval;
    return KN_OK;
}

kn_status gguf_kv_get_arr(const gguf_ctx *ctx, int64_t i, gguf_type *elem_type, uint64_t *n, const void **data) {
    if (i < 0 || i >= ctx->n_kv) return KN_ENOTFOUND;
    const gguf_kv *kv = &ctx->kv[i];
    if (kv->type != GGUF_TYPE_ARRAY) return KN_ETYPE;
    if (elem_type) *elem_type = kv->elem_type;
    if (n) *n = kv->n;
    if (data) *data = kv->elem_type == GGUF_TYPE_STRING ? NULL : kv->val;
    return KN_OK;
}

kn_status gguf_kv_arr_str(const gguf_ctx *ctx, int64_t i, uint64_t j, gguf_str *out) {
    if (i < 0 || i >= ctx->n_kv) return KN_ENOTFOUND;
    const gguf_kv *kv = &ctx->kv[i];
    if (kv->type != GGUF_TYPE_ARRAY || kv->elem_type != GGUF_TYPE_STRING) return KN_ETYPE;
    if (j >= kv->n) return KN_ERANGE;
    *out = kv->strs[j];
    return KN_OK;
}

kn_status gguf_get_arr(const gguf_ctx *ctx, const char *key, gguf_type *elem_type, uint64_t *n, const void **data) {
    int64_t i = gguf_find_key(ctx, key);
    if (i < 0) return KN_ENOTFOUND;
    return gguf_kv_get_arr(ctx, i, elem_type, n, data);
}

kn_status gguf_get_arr_str(const gguf_ctx *ctx, const char *key, uint64_t i, gguf_str *out) {
    int64_t k = gguf_find_key(ctx, key);
    if (k < 0) return KN_ENOTFOUND;
    return gguf_kv_arr_str(ctx, k, i, out);
}

kn_status gguf_arr_get_i64(const gguf_ctx *ctx, int64_t i, uint64_t j, int64_t *out) {
    if (i < 0 || i >= ctx->n_kv) return KN_ENOTFOUND;
    const gguf_kv *kv = &ctx->kv[i];
    if (kv->type != GGUF_TYPE_ARRAY || !(is_int_type(kv->elem_type) || kv->elem_type == GGUF_TYPE_BOOL))
        return KN_ETYPE;
    if (j >= kv->n) return KN_ERANGE;
    int64_t iv; uint64_t uv; bool neg;
    read_int(kv->elem_type, kv->val + j * TYPE_SIZE[kv->elem_type], &iv, &uv, &neg);
    if (!neg && uv > (uint64_t)INT64_MAX) return KN_ERANGE;
    *out = iv;
    return KN_OK;
}

kn_status gguf_arr_get_f64(const gguf_ctx *ctx, int64_t i, uint64_t j, double *out) {
    if (i < 0 || i >= ctx->n_kv) return KN_ENOTFOUND;
    const gguf_kv *kv = &ctx->kv[i];
    if (kv->type != GGUF_TYPE_ARRAY) return KN_ETYPE;
    if (j >= kv->n) return KN_ERANGE;
    const uint8_t *p = kv->val + j * (uint64_t)TYPE_SIZE[kv->elem_type];
    if (kv->elem_type == GGUF_TYPE_FLOAT32) {
        float f;
        memcpy(&f, p, 4);
        *out = f;
    } else if (kv->elem_type == GGUF_TYPE_FLOAT64) {
        memcpy(out, p, 8);
    } else {
        return KN_ETYPE;
    }
    return KN_OK;
}

kn_status gguf_kv_scalar(const gguf_ctx *ctx, int64_t i, int64_t *iv, uint64_t *uv, double *fv, gguf_str *sv) {
    if (i < 0 || i >= ctx->n_kv) return KN_ENOTFOUND;
    const gguf_kv *kv = &ctx->kv[i];
    switch (kv->type) {
    case GGUF_TYPE_STRING:
        if (sv) *sv = kv->sval;
        return KN_OK;
    case GGUF_TYPE_FLOAT32: {
        float f;
        memcpy(&f, kv->val, 4);
        if (fv) *fv = f;
        return KN_OK;
    }
    case GGUF_TYPE_FLOAT64:
        if (fv) memcpy(fv, kv->val, 8);
        return KN_OK;
    case GGUF_TYPE_ARRAY:
        return KN_ETYPE;
    default: {
        int64_t i64; uint64_t u64; bool neg;
        if (!read_int(kv->type, kv->val, &i64, &u64, &neg)) return KN_ETYPE;
        if (iv) *iv = i64;
        if (uv) *uv = u64;
        return KN_OK;
    }
    }
}

int64_t gguf_n_tensors(const gguf_ctx *ctx) { return ctx->n_tensors; }

const gguf_tensor_info *gguf_tensor(const gguf_ctx *ctx, int64_t i) {
    if (i < 0 || i >= ctx->n_tensors) return NULL;
    return &ctx->tensors[i];
}

const gguf_tensor_info *gguf_find_tensor(const gguf_ctx *ctx, const char *name) {
    int64_t lo = 0, hi = ctx->n_tensors;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int r = str_cmp_c(ctx->tensors[ctx->t_sorted[mid]].name, name);
        if (r == 0) return &ctx->tensors[ctx->t_sorted[mid]];
        if (r < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* writer                                                                   */

typedef struct wkv {
    char *key;
    gguf_type type;
    uint8_t *val; /* encoded value (what follows the type field) */
    size_t val_len;
} wkv;

typedef struct wtensor {
    char *name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    uint32_t type;
    uint64_t nbytes;
    uint64_t offset;
    const void *data; /* borrowed */
} wtensor;

struct gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    /* streaming state */
    FILE *f;
    char *path, *tmp_path;
    uint32_t alignment;
    size_t cur;          /* tensor being written */
    uint64_t cur_done;   /* its bytes written so far */
    uint64_t pos;        /* bytes written into the data section */
    bool failed;
};

gguf_writer *gguf_writer_create(void) { return calloc(1, sizeof(gguf_writer)); }

void gguf_writer_destroy(gguf_writer *w) {
    if (!w) return;
    if (w->f) {
        fclose(w->f);
        if (w->tmp_path) unlink(w->tmp_path);
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    free(w->kv);
    for (size_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->t);
    free(w->path);
    free(w->tmp_path);
    free(w);
}

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* Takes ownership of val. */
static kn_status set_raw(gguf_writer *w, const char *key, gguf_type type, uint8_t *val, size_t len) {
    if (!key || w->f) {
        free(val);
        return KN_EINVAL;
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        if (!strcmp(w->kv[i].key, key)) {
            free(w->kv[i].val);
            w->kv[i].type = type;
            w->kv[i].val = val;
            w->kv[i].val_len = len;
            return KN_OK;
        }
    }
    if (w->n_kv == w->cap_kv) {
        size_t nc = w->cap_kv ? w->cap_kv * 2 : 16;
        wkv *nk = realloc(w->kv, nc * sizeof *nk);
        if (!nk) {
            free(val);
            return KN_ENOMEM;
        }
        w->kv = nk;
        w->cap_kv = nc;
    }
    char *k = dup_str(key);
    if (!k) {
        free(val);
        return KN_ENOMEM;
    }
    w->kv[w->n_kv++] = (wkv){k, type, val, len};
    return KN_OK;
}

static kn_status set_scalar(gguf_writer *w, const char *key, gguf_type t, const void *v) {
    size_t n = TYPE_SIZE[t];
    uint8_t *b = malloc(n);
    if (!b) return KN_ENOMEM;
    memcpy(b, v, n);
    return set_raw(w, key, t, b, n);
}

kn_status gguf_writer_set_u8(gguf_writer *w, const char *key, uint8_t v) { return set_scalar(w, key, GGUF_TYPE_UINT8, &v); }
kn_status gguf_writer_set_i8(gguf_writer *w, const char *key, int8_t v) { return set_scalar(w, key, GGUF_TYPE_INT8, &v); }
kn_status gguf_writer_set_u16(gguf_writer *w, const char *key, uint16_t v) { return set_scalar(w, key, GGUF_TYPE_UINT16, &v); }
kn_status gguf_writer_set_i16(gguf_writer *w, const char *key, int16_t v) { return set_scalar(w, key, GGUF_TYPE_INT16, &v); }
kn_status gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v) { return set_scalar(w, key, GGUF_TYPE_UINT32, &v); }
kn_status gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v) { return set_scalar(w, key, GGUF_TYPE_INT32, &v); }
kn_status gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v) { return set_scalar(w, key, GGUF_TYPE_UINT64, &v); }
kn_status gguf_writer_set_i64(gguf_writer *w, const char *key, int64_t v) { return set_scalar(w, key, GGUF_TYPE_INT64, &v); }
kn_status gguf_writer_set_f32(gguf_writer *w, const char *key, float v) { return set_scalar(w, key, GGUF_TYPE_FLOAT32, &v); }
kn_status gguf_writer_set_f64(gguf_writer *w, const char *key, double v) { return set_scalar(w, key, GGUF_TYPE_FLOAT64, &v); }
kn_status gguf_writer_set_bool(gguf_writer *w, const char *key, bool v) {
    uint8_t b = v ? 1 : 0;
    return set_scalar(w, key, GGUF_TYPE_BOOL, &b);
}

kn_status gguf_writer_set_str(gguf_writer *w, const char *key, const char *v) {
    if (!v) return KN_EINVAL;
    uint64_t n = strlen(v);
    uint8_t *b = malloc(8 + n);
    if (!b) return KN_ENOMEM;
    memcpy(b, &n, 8);
    memcpy(b + 8, v, n);
    return set_raw(w, key, GGUF_TYPE_STRING, b, 8 + n);
}

kn_status gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_type elem_type, const void *data, uint64_t n) {
    if ((unsigned)elem_type >= GGUF_TYPE_COUNT || TYPE_SIZE[elem_type] == 0) return KN_EINVAL;
    uint64_t bytes;
    if (!kn_mul_u64(n, TYPE_SIZE[elem_type], &bytes) || bytes > SIZE_MAX - 12) return KN_ERANGE;
    if (bytes && !data) return KN_EINVAL;
    uint8_t *b = malloc(12 + (size_t)bytes);
    if (!b) return KN_ENOMEM;
    uint32_t et = elem_type;
    memcpy(b, &et, 4);
    memcpy(b + 4, &n, 8);
    if (bytes) memcpy(b + 12, data, (size_t)bytes);
    return set_raw(w, key, GGUF_TYPE_ARRAY, b, 12 + (size_t)bytes);
}

kn_status gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n) {
    size_t total = 12;
    for (uint64_t i = 0; i < n; i++) {
        if (!v[i]) return KN_EINVAL;
        size_t l = strlen(v[i]);
        if (total > SIZE_MAX - 8 - l) return KN_ERANGE;
        total += 8 + l;
    }
    uint8_t *b = malloc(total);
    if (!b) return KN_ENOMEM;
    uint32_t et = GGUF_TYPE_STRING;
    memcpy(b, &et, 4);
    memcpy(b + 4, &n, 8);
    size_t p = 12;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t l = strlen(v[i]);
        memcpy(b + p, &l, 8);
        memcpy(b + p + 8, v[i], l);
        p += 8 + l;
    }
    return set_raw(w, key, GGUF_TYPE_ARRAY, b, total);
}

kn_status gguf_writer_copy_kv(gguf_writer *w, const gguf_ctx *src, int64_t i) {
    if (i < 0 || i >= src->n_kv) return KN_EINVAL;
    const gguf_kv *kv = &src->kv[i];
    if (kv->key.len > 1u << 20 || memchr(kv->key.data, 0, kv->key.len)) return KN_EINVAL;
    char *key = malloc(kv->key.len + 1);
    uint8_t *b = malloc(kv->raw_len ? kv->raw_len : 1);
    if (!key || !b) {
        free(key);
        free(b);
        return KN_ENOMEM;
    }
    memcpy(key, kv->key.data, kv->key.len);
    key[kv->key.len] = 0;
    memcpy(b, kv->raw, kv->raw_len);
    kn_status st = set_raw(w, key, kv->type, b, kv->raw_len);
    free(key);
    return st;
}

int64_t gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                               const void *data, kn_err *err) {
    if (w->f) {
        kn_fail(err, KN_EINVAL, "tensor '%s': cannot add tensors after the file was opened", name);
        return -1;
    }
    if (n_dims == 0 || n_dims > GGUF_MAX_DIMS) {
        kn_fail(err, KN_EINVAL, "tensor '%s': %u dimensions (must be 1..%d)", name, n_dims, GGUF_MAX_DIMS);
        return -1;
    }
    const q_traits *tr = q_get_traits(type);
    if (!tr || !tr->name || tr->blck_size <= 0 || tr->type_size == 0) {
        kn_fail(err, KN_EINVAL, "tensor '%s': unknown tensor type %u", name, type);
        return -1;
    }
    wtensor t = {0};
    t.n_dims = n_dims;
    t.type = type;
    t.data = data;
    uint64_t n = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        if (t.ne[d] > (uint64_t)INT64_MAX || !kn_mul_u64(n, t.ne[d], &n) || n > (uint64_t)INT64_MAX) {
            kn_fail(err, KN_ERANGE, "tensor '%s': element count overflows", name);
            return -1;
        }
    }
    if (t.ne[0] % (uint64_t)tr->blck_size) {
        kn_fail(err, KN_EINVAL, "tensor '%s': row length %llu is not a multiple of the %s block size %lld", name,
                (unsigned long long)t.ne[0], tr->name, (long long)tr->blck_size);
        return -1;
    }
    if (!kn_mul_u64(n / (uint64_t)tr->blck_size, tr->type_size, &t.nbytes)) {
        kn_fail(err, KN_ERANGE, "tensor '%s': byte size overflows", name);
        return -1;
    }
    for (size_t i = 0; i < w->n_t; i++) {
        if (!strcmp(w->t[i].name, name)) {
            kn_fail(err, KN_EINVAL, "duplicate tensor name '%s'", name);
            return -1;
        }
    }
    if (w->n_t == w->cap_t) {
        size_t nc = w->cap_t ? w->cap_t * 2 : 64;
        wtensor *nt = realloc(w->t, nc * sizeof *nt);
        if (!nt) {
            kn_fail(err, KN_ENOMEM, "out of memory");
            return -1;
        }
        w->t = nt;
        w->cap_t = nc;
    }
    t.name = dup_str(name);
    if (!t.name) {
        kn_fail(err, KN_ENOMEM, "out of memory");
        return -1;
    }
    w->t[w->n_t] = t;
    return (int64_t)w->n_t++;
}

static bool wr(gguf_writer *w, const void *p, size_t n) {
    if (w->failed) return false;
    if (n && fwrite(p, 1, n, w->f) != n) w->failed = true;
    return !w->failed;
}

static bool wr_zeros(gguf_writer *w, uint64_t n) {
    static const uint8_t z[256];
    while (n) {
        size_t k = n < sizeof z ? (size_t)n : sizeof z;
        if (!wr(w, z, k)) return false;
        n -= k;
    }
    return true;
}

static uint64_t pad_to(uint64_t x, uint64_t a) { return (a - x % a) % a; }

kn_status gguf_writer_open(gguf_writer *w, const char *path, kn_err *err) {
    if (w->f) return kn_fail(err, KN_EINVAL, "writer is already open");
    w->alignment = GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment")) continue;
        uint32_t a = 0;
        if (w->kv[i].type != GGUF_TYPE_UINT32)
            return kn_fail(err, KN_EINVAL, "general.alignment has type %s, expected u32", gguf_type_name(w->kv[i].type));
        memcpy(&a, w->kv[i].val, 4);
        if (a == 0 || (a & (a - 1))) return kn_fail(err, KN_EINVAL, "general.alignment %u is not a power of two", a);
        w->alignment = a;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        w->t[i].offset = off;
        if (!kn_add_u64(off, w->t[i].nbytes, &off) || !kn_add_u64(off, pad_to(off, w->alignment), &off))
            return kn_fail(err, KN_ERANGE, "data section size overflows");
    }
    free(w->path);
    free(w->tmp_path);
    w->path = dup_str(path);
    size_t pl = strlen(path);
    w->tmp_path = malloc(pl + 8);
    if (!w->path || !w->tmp_path) return kn_fail(err, KN_ENOMEM, "out of memory");
    memcpy(w->tmp_path, path, pl);
    memcpy(w->tmp_path + pl, ".part", 6);
    w->f = fopen(w->tmp_path, "wb");
    if (!w->f) return kn_fail(err, KN_EIO, "cannot create %s: %s", w->tmp_path, strerror(errno));
    setvbuf(w->f, NULL, _IOFBF, 1 << 20);
    w->failed = false;
    w->cur = 0;
    w->cur_done = 0;
    w->pos = 0;

    uint32_t magic = GGUF_MAGIC, version = 3;
    uint64_t nt = w->n_t, nkv = w->n_kv;
    uint64_t hdr = 0;
    wr(w, &magic, 4);
    wr(w, &version, 4);
    wr(w, &nt, 8);
    wr(w, &nkv, 8);
    hdr += 24;
    for (size_t i = 0; i < w->n_kv; i++) {
        uint64_t kl = strlen(w->kv[i].key);
        uint32_t t = w->kv[i].type;
        wr(w, &kl, 8);
        wr(w, w->kv[i].key, kl);
        wr(w, &t, 4);
        wr(w, w->kv[i].val, w->kv[i].val_len);
        hdr += 12 + kl + w->kv[i].val_len;
    }
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        uint64_t nl = strlen(t->name);
        wr(w, &nl, 8);
        wr(w, t->name, nl);
        wr(w, &t->n_dims, 4);
        wr(w, t->ne, 8 * (size_t)t->n_dims);
        wr(w, &t->type, 4);
        wr(w, &t->offset, 8);
        hdr += 8 + nl + 4 + 8 * (uint64_t)t->n_dims + 12;
    }
    wr_zeros(w, pad_to(hdr, w->alignment));
    if (w->failed) return kn_fail(err, KN_EIO, "write to %s failed: %s", w->tmp_path, strerror(errno));
    return KN_OK;
}

kn_status gguf_writer_put_data(gguf_writer *w, int64_t idx, const void *data, uint64_t nbytes, kn_err *err) {
    if (!w->f) return kn_fail(err, KN_EINVAL, "writer is not open");
    /* Zero-sized tensors need no put_data call. */
    while (w->cur < w->n_t && w->t[w->cur].nbytes == 0 && w->cur_done == 0 && idx > (int64_t)w->cur) w->cur++;
    if (idx < 0 || (size_t)idx != w->cur || w->cur >= w->n_t)
        return kn_fail(err, KN_EINVAL, "tensor data out of order: got tensor %lld, expected %zu", (long long)idx, w->cur);
    wtensor *t = &w->t[w->cur];
    if (nbytes > t->nbytes - w->cur_done)
        return kn_fail(err, KN_EINVAL, "tensor '%s': %llu bytes given, only %llu left", t->name,
                       (unsigned long long)nbytes, (unsigned long long)(t->nbytes - w->cur_done));
    wr(w, data, (size_t)nbytes);
    w->cur_done += nbytes;
    if (w->cur_done == t->nbytes) {
        wr_zeros(w, pad_to(t->nbytes, w->alignment));
        w->cur++;
        w->cur_done = 0;
    }
    if (w->failed) return kn_fail(err, KN_EIO, "write to %s failed: %s", w->tmp_path, strerror(errno));
    return KN_OK;
}

kn_status gguf_writer_finish(gguf_writer *w, kn_err *err) {
    if (!w->f) return kn_fail(err, KN_EINVAL, "writer is not open");
    /* Zero-sized tensors need no put_data call. */
    while (w->cur < w->n_t && w->t[w->cur].nbytes == 0) w->cur++;
    if (w->cur != w->n_t) {
        kn_status st = kn_fail(err, KN_EINVAL, "tensor '%s': data was not written", w->t[w->cur].name);
        fclose(w->f);
        w->f = NULL;
        unlink(w->tmp_path);
        return st;
    }
    bool ok = !w->failed && fflush(w->f) == 0;
    int e = errno;
    if (fclose(w->f) != 0 && ok) {
        ok = false;
        e = errno;
    }
    w->f = NULL;
    if (!ok) {
        unlink(w->tmp_path);
        return kn_fail(err, KN_EIO, "write to %s failed: %s", w->path, strerror(e));
    }
    if (rename(w->tmp_path, w->path) != 0) {
        e = errno;
        unlink(w->tmp_path);
        return kn_fail(err, KN_EIO, "cannot rename %s to %s: %s", w->tmp_path, w->path, strerror(e));
    }
    return KN_OK;
}

kn_status gguf_writer_write_file(gguf_writer *w, const char *path, kn_err *err) {
    for (size_t i = 0; i < w->n_t; i++)
        if (!w->t[i].data && w->t[i].nbytes)
            return kn_fail(err, KN_EINVAL, "tensor '%s' has no data", w->t[i].name);
    kn_status st = gguf_writer_open(w, path, err);
    if (st) return st;
    for (size_t i = 0; i < w->n_t; i++) {
        if (!w->t[i].nbytes) continue;
        if ((st = gguf_writer_put_data(w, (int64_t)i, w->t[i].data, w->t[i].nbytes, err))) {
            fclose(w->f);
            w->f = NULL;
            unlink(w->tmp_path);
            return st;
        }
    }
    return gguf_writer_finish(w, err);
}
