/* test_l2.c — the cache's disk tier (rc_l2 on LMDB): round trips of small,
 * 1 MiB compressible and 1 MiB incompressible values of both types,
 * replacement and the exact byte accounting, persistence of records and
 * counters across reopen, expiry on get and by maintenance in bounded
 * batches, size eviction oldest first, corruption written into data.mdb
 * (payload, header, and a forged record whose checksum holds but whose zstd
 * frame lies), kill -9 of a writing child at random moments, clear by type,
 * by model and all (with the age index checked), read-only opens and stores
 * that are not kiln caches, the backend table (rc_l2_open by name) and the
 * offline calls of cache.h (rc_disk_stats, rc_disk_clear), 4 threads reading and writing at once, and a
 * full disk (a 1 MiB tmpfs, when run as root): the error says "no space
 * left on device", writes pause (skipped) and resume once space is freed,
 * and the store reopens with every record written before. */
#define XXH_STATIC_LINKING_ONLY
#include "testutil.h"
#include "cache/cache_internal.h"
#include "kiln/core.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#define FAR 1000000000000LL /* an expiry that never comes */
#define NOW 1000000LL
#define REC_OVERHEAD (24 + 48) /* key + record header: what "bytes" adds to the payload */

static rc_key key_n(uint64_t n) {
    return rc_key_of(&n, sizeof n);
}

static rc_l2 *open_l2(const char *dir, uint64_t max_bytes, bool ro) {
    rc_l2_opts o = {.max_bytes = max_bytes, .read_only = ro};
    rc_l2 *b = NULL;
    kn_err err = {0};
    kn_status st = rc_l2_open_lmdb(dir, &o, &b, &err);
    if (st) fprintf(stderr, "open %s: %s\n", dir, err.msg);
    assert_int_equal(st, KN_OK);
    assert_non_null(b);
    return b;
}

static void put1(rc_l2 *b, rc_type t, uint64_t model, rc_key k, const void *v, size_t len, int64_t expiry,
                 int64_t now) {
    rc_l2_item it = {.type = t, .model = model, .key = k, .val = v, .len = len, .expiry_ms = expiry};
    kn_err err = {0};
    kn_status st = rc_l2_put_batch(b, &it, 1, now, &err);
    if (st) fprintf(stderr, "put: %s\n", err.msg);
    assert_int_equal(st, KN_OK);
}

/* get that must hit with exactly (v, len) */
static void expect_hit(rc_l2 *b, rc_type t, uint64_t model, rc_key k, const void *v, size_t len,
                       int64_t now) {
    void *got = NULL;
    size_t n = 0;
    int64_t exp = 0;
    kn_err err = {0};
    kn_status st = rc_l2_get(b, t, model, k, now, &got, &n, &exp, &err);
    if (st) fprintf(stderr, "get: %s (%s)\n", kn_status_str(st), err.msg);
    assert_int_equal(st, KN_OK);
    assert_int_equal(n, len);
    if (len) assert_memory_equal(got, v, len);
    free(got);
}

static kn_status get_st(rc_l2 *b, rc_type t, uint64_t model, rc_key k, int64_t now) {
    void *got = NULL;
    size_t n = 0;
    kn_err err = {0};
    kn_status st = rc_l2_get(b, t, model, k, now, &got, &n, NULL, &err);
    free(got);
    return st;
}

static void rand_bytes(uint8_t *p, size_t n, uint64_t seed) {
    tu_rng r = {seed};
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = tu_rng_u64(&r);
        memcpy(p + i, &v, n - i < 8 ? n - i : 8);
    }
}

static rc_stats stats_of(rc_l2 *b, rc_type t) {
    rc_stats s;
    rc_l2_stats(b, t, &s);
    return s;
}

/* Number of entries of the named database, read with LMDB directly (the
 * store must be closed). */
static size_t db_entries(const char *dir, const char *name) {
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_stat ms;
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, name, 0, &dbi), 0);
    assert_int_equal(mdb_stat(txn, dbi, &ms), 0);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return ms.ms_entries;
}

/* ---- round trips ------------------------------------------------------------ */

static void test_roundtrip(void **state) {
    (void)state;
    char dir[256];
    assert_non_null(tu_tmpdir(dir, sizeof dir));
    rc_l2 *b = open_l2(dir, 0, false);
    size_t big = 1u << 20;
    uint8_t *text = malloc(big), *noise = malloc(big), *noise2 = malloc(big);
    assert_true(text && noise && noise2);
    static const char LINE[] = "The quick brown fox jumps over the lazy dog; repeated text compresses well. ";
    for (size_t i = 0; i < big; i++)
        text[i] = (uint8_t)LINE[i % (sizeof LINE - 1)];
    rand_bytes(noise, big, 7);
    rand_bytes(noise2, big, 8);
    const char *small = "{\"choices\":[{\"text\":\"hello\"}]}";
    uint64_t m = rc_model_tag("tiny-llama-Q4_K_M");

    for (int t = 0; t < RC_NTYPES; t++) {
        put1(b, (rc_type)t, m, key_n(1), small, strlen(small), FAR, NOW);
        put1(b, (rc_type)t, m, key_n(2), text, big, FAR, NOW);
        put1(b, (rc_type)t, m, key_n(3), noise, big, FAR, NOW);
        put1(b, (rc_type)t, m, key_n(4), "", 0, FAR, NOW);
    }
    for (int t = 0; t < RC_NTYPES; t++) {
        expect_hit(b, (rc_type)t, m, key_n(1), small, strlen(small), NOW);
        expect_hit(b, (rc_type)t, m, key_n(2), text, big, NOW);
        expect_hit(b, (rc_type)t, m, key_n(3), noise, big, NOW);
        expect_hit(b, (rc_type)t, m, key_n(4), "", 0, NOW);
        void *v = NULL;
        size_t n = 0;
        int64_t exp = 0;
        assert_int_equal(rc_l2_get(b, (rc_type)t, m, key_n(1), NOW, &v, &n, &exp, NULL), KN_OK);
        assert_int_equal(exp, FAR);
        free(v);
        /* absent key, and the same key under another model */
        assert_int_equal(get_st(b, (rc_type)t, m, key_n(99), NOW), KN_ENOTFOUND);
        assert_int_equal(get_st(b, (rc_type)t, m + 1, key_n(1), NOW), KN_ENOTFOUND);
        rc_stats s = stats_of(b, (rc_type)t);
        assert_int_equal(s.entries, 4);
        assert_int_equal(s.hits, 5);
        assert_int_equal(s.misses, 2);
        /* the incompressible value is stored raw; the text far smaller */
        uint64_t raw_part = 3 * REC_OVERHEAD + strlen(small) + big;
        assert_true(s.bytes > raw_part + REC_OVERHEAD);
        assert_true(s.bytes < raw_part + REC_OVERHEAD + big / 20);
    }
    /* replacement: the text by noise2 (raw): bytes move by the exact difference */
    rc_stats before = stats_of(b, RC_RESPONSE);
    put1(b, RC_RESPONSE, m, key_n(2), noise2, big, FAR, NOW + 1);
    rc_stats after = stats_of(b, RC_RESPONSE);
    assert_int_equal(after.entries, 4);
    uint64_t raw_total = 4 * REC_OVERHEAD + strlen(small) + 2 * big;
    assert_int_equal(after.bytes, raw_total);
    assert_true(before.bytes < after.bytes);
    expect_hit(b, RC_RESPONSE, m, key_n(2), noise2, big, NOW);
    expect_hit(b, RC_EMBEDDING, m, key_n(2), text, big, NOW); /* the other type is untouched */
    /* replacing by a smaller value, twice in one batch */
    rc_l2_item two[2] = {
        {.type = RC_RESPONSE, .model = m, .key = key_n(3), .val = noise2, .len = 100, .expiry_ms = FAR},
        {.type = RC_RESPONSE, .model = m, .key = key_n(3), .val = noise2 + 100, .len = 50, .expiry_ms = FAR},
    };
    assert_int_equal(rc_l2_put_batch(b, two, 2, NOW + 2, NULL), KN_OK);
    expect_hit(b, RC_RESPONSE, m, key_n(3), noise2 + 100, 50, NOW);
    after = stats_of(b, RC_RESPONSE);
    assert_int_equal(after.entries, 4);
    assert_int_equal(after.bytes, raw_total - big + 50);
    /* bad items are refused */
    rc_l2_item bad = {
        .type = (rc_type)7, .model = m, .key = key_n(5), .val = "x", .len = 1, .expiry_ms = FAR};
    kn_err err = {0};
    assert_int_equal(rc_l2_put_batch(b, &bad, 1, NOW, &err), KN_EINVAL);
    assert_non_null(strstr(err.msg, "type"));
    rc_l2_close(b);
    /* every record has exactly one age entry */
    assert_int_equal(db_entries(dir, "age"), 8);
    free(text);
    free(noise);
    free(noise2);
    tu_rmdir(dir);
}

/* ---- persistence ------------------------------------------------------------------ */

static void test_persistence(void **state) {
    (void)state;
    char dir[256];
    assert_non_null(tu_tmpdir(dir, sizeof dir));
    rc_l2 *b = open_l2(dir, 0, false);
    for (uint64_t i = 0; i < 20; i++) {
        char v[64];
        int n = snprintf(v, sizeof v, "value %llu", (unsigned long long)i);
        put1(b, i % 2 ? RC_EMBEDDING : RC_RESPONSE, 42, key_n(i), v, (size_t)n, FAR, NOW);
    }
    expect_hit(b, RC_RESPONSE, 42, key_n(0), "value 0", 7, NOW);
    expect_hit(b, RC_RESPONSE, 42, key_n(2), "value 2", 7, NOW);
    expect_hit(b, RC_EMBEDDING, 42, key_n(1), "value 1", 7, NOW);
    assert_int_equal(get_st(b, RC_RESPONSE, 42, key_n(1), NOW), KN_ENOTFOUND);
    assert_int_equal(get_st(b, RC_EMBEDDING, 42, key_n(0), NOW), KN_ENOTFOUND);
    assert_int_equal(get_st(b, RC_EMBEDDING, 42, key_n(100), NOW), KN_ENOTFOUND);
    rc_stats s0 = stats_of(b, RC_RESPONSE);
    rc_l2_close(b);

    b = open_l2(dir, 0, false);
    rc_stats s = stats_of(b, RC_RESPONSE), e = stats_of(b, RC_EMBEDDING);
    assert_int_equal(s.entries, 10);
    assert_int_equal(e.entries, 10);
    assert_int_equal(s.bytes, s0.bytes);
    assert_int_equal(s.hits, 2);
    assert_int_equal(s.misses, 1);
    assert_int_equal(e.hits, 1);
    assert_int_equal(e.misses, 2);
    for (uint64_t i = 0; i < 20; i++) {
        char v[64];
        int n = snprintf(v, sizeof v, "value %llu", (unsigned long long)i);
        expect_hit(b, i % 2 ? RC_EMBEDDING : RC_RESPONSE, 42, key_n(i), v, (size_t)n, NOW);
    }
    rc_l2_close(b);

    /* a read-only open sees the same lifetime totals */
    b = open_l2(dir, 0, true);
    s = stats_of(b, RC_RESPONSE);
    assert_int_equal(s.hits, 12);
    assert_int_equal(s.misses, 1);
    assert_int_equal(s.entries, 10);
    rc_l2_close(b);
    tu_rmdir(dir);
}

/* ---- expiry -------------------------------------------------------------------------- */

static void test_expiry(void **state) {
    (void)state;
    char dir[256];
    assert_non_null(tu_tmpdir(dir, sizeof dir));
    rc_l2 *b = open_l2(dir, 0, false);
    put1(b, RC_RESPONSE, 1, key_n(1), "soon", 4, 2000, 1000);
    expect_hit(b, RC_RESPONSE, 1, key_n(1), "soon", 4, 1500);
    assert_int_equal(get_st(b, RC_RESPONSE, 1, key_n(1), 2000), KN_ENOTFOUND); /* expiry is exclusive */
    rc_stats s = stats_of(b, RC_RESPONSE);
    assert_int_equal(s.expirations, 1);
    assert_int_equal(s.misses, 1);
    assert_int_equal(s.entries, 0); /* deleted */
    assert_int_equal(s.bytes, 0);
    /* a put that is already expired keeps nothing */
    put1(b, RC_RESPONSE, 1, key_n(2), "late", 4, 900, 1000);
    assert_int_equal(stats_of(b, RC_RESPONSE).entries, 0);

    /* 100 expired records over both types among 5 live ones: 10 per call */
    uint8_t v[300];
    rand_bytes(v, sizeof v, 3);
    rc_l2_item items[105];
    for (uint64_t i = 0; i < 105; i++)
        items[i] = i < 100 ? (rc_l2_item){.type = i % 3 ? RC_RESPONSE : RC_EMBEDDING,
                                          .model = 1,
                                          .key = key_n(1000 + i),
                                          .val = v,
                                          .len = 100 + i,
                                          .expiry_ms = 2000}
                           : (rc_l2_item){.type = RC_RESPONSE,
                                          .model = 1,
                                          .key = key_n(5000 + i - 100),
                                          .val = v,
                                          .len = 10,
                                          .expiry_ms = FAR};
    assert_int_equal(rc_l2_put_batch(b, items, 105, 1000, NULL), KN_OK);
    for (int call = 0; call < 10; call++) {
        uint64_t removed = 99;
        assert_int_equal(rc_l2_maintain(b, 3000, 10, &removed, NULL), KN_OK);
        assert_int_equal(removed, 10);
        uint64_t left = stats_of(b, RC_RESPONSE).entries + stats_of(b, RC_EMBEDDING).entries;
        assert_int_equal(left, 105 - 10 * (call + 1));
    }
    uint64_t removed = 99;
    assert_int_equal(rc_l2_maintain(b, 3000, 10, &removed, NULL), KN_OK);
    assert_int_equal(removed, 0);
    s = stats_of(b, RC_RESPONSE);
    rc_stats e = stats_of(b, RC_EMBEDDING);
    assert_int_equal(s.entries, 5);
    assert_int_equal(e.entries, 0);
    assert_int_equal(e.bytes, 0);
    assert_int_equal(s.bytes, 5 * (REC_OVERHEAD + 10));
    assert_int_equal(s.expirations + e.expirations, 101);
    for (uint64_t i = 0; i < 5; i++)
        expect_hit(b, RC_RESPONSE, 1, key_n(5000 + i), v, 10, 3000);
    rc_l2_close(b);
    assert_int_equal(db_entries(dir, "age"), 5);
    /* the counters were flushed by maintain and close */
    b = open_l2(dir, 0, true);
    assert_int_equal(stats_of(b, RC_RESPONSE).expirations + stats_of(b, RC_EMBEDDING).expirations, 101);
    rc_l2_close(b);
    tu_rmdir(dir);
}

/* ---- size eviction -------------------------------------------------------------------------- */

static void test_size_eviction(void **state) {
    (void)state;
    char dir[256];
    assert_non_null(tu_tmpdir(dir, sizeof dir));
    const uint64_t limit = 256 << 10;
    const size_t len = 32 << 10, n = 64; /* 2 MiB written */
    rc_l2 *b = open_l2(dir, limit, false);
    uint8_t *v = malloc(len);
    assert_non_null(v);
    for (uint64_t i = 0; i < n; i++) {
        rand_bytes(v, len, i);
        put1(b, i % 2 ? RC_EMBEDDING : RC_RESPONSE, 9, key_n(i), v, len, FAR, NOW + (int64_t)i);
    }
    /* key 0 rewritten last: now the newest, so it must survive */
    rand_bytes(v, len, 0);
    put1(b, RC_RESPONSE, 9, key_n(0), v, len, FAR, NOW + 1000);
    uint64_t per = REC_OVERHEAD + len;
    assert_int_equal(stats_of(b, RC_RESPONSE).bytes + stats_of(b, RC_EMBEDDING).bytes, n * per);
    uint64_t removed = 0;
    assert_int_equal(rc_l2_maintain(b, NOW + 2000, 10, &removed, NULL), KN_OK);
    uint64_t keep = limit / per; /* 7 */
    assert_int_equal(removed, n - keep);
    rc_stats s = stats_of(b, RC_RESPONSE), e = stats_of(b, RC_EMBEDDING);
    assert_true(s.bytes + e.bytes <= limit);
    assert_int_equal(s.bytes + e.bytes, keep * per);
    assert_int_equal(s.entries + e.entries, keep);
    assert_int_equal(s.evictions + e.evictions, n - keep);
    /* survivors: key 0 and the newest keep-1 of the rest */
    for (uint64_t i = 0; i < n; i++) {
        rc_type t = i % 2 ? RC_EMBEDDING : RC_RESPONSE;
        bool alive = i == 0 || i >= n - (keep - 1);
        if (alive) {
            rand_bytes(v, len, i);
            expect_hit(b, t, 9, key_n(i), v, len, NOW);
        } else {
            assert_int_equal(get_st(b, t, 9, key_n(i), NOW), KN_ENOTFOUND);
        }
    }
    rc_l2_close(b);
    assert_int_equal(db_entries(dir, "age"), keep);
    free(v);
    tu_rmdir(dir);
}

/* ---- a full map ---------------------------------------------------------------------------------------- */

/* With max_bytes 2 MiB the map is 67 MiB: 1 MiB writes without maintenance
 * fill it; each write must still succeed by evicting the oldest. */
static void test_map_full(void **state) {
    (void)state;
    char dir[256];
    assert_non_null(tu_tmpdir(dir, sizeof dir));
    const size_t len = 1u << 20;
    rc_l2 *b = open_l2(dir, 2u << 20, false);
    uint8_t *v = malloc(len);
    assert_non_null(v);
    const uint64_t n = 90;
    for (uint64_t i = 0; i < n; i++) {
        rand_bytes(v, len, i);
        put1(b, RC_EMBEDDING, 2, key_n(i), v, len, FAR, NOW + (int64_t)i);
    }
    rc_stats e = stats_of(b, RC_EMBEDDING);
    assert_true(e.evictions > 0);
    assert_int_equal(e.entries, n - e.evictions);
    assert_int_equal(e.bytes, e.entries * (REC_OVERHEAD + len));
    /* the oldest went: the survivors are the newest */
    for (uint64_t i = 0; i < n; i++) {
        if (i >= e.evictions) {
            if (i % 16 && i != n - 1) continue; /* a sample */
            rand_bytes(v, len, i);
            expect_hit(b, RC_EMBEDDING, 2, key_n(i), v, len, NOW);
        } else {
            assert_int_equal(get_st(b, RC_EMBEDDING, 2, key_n(i), NOW), KN_ENOTFOUND);
        }
    }
    uint64_t removed = 0;
    assert_int_equal(rc_l2_maintain(b, NOW, 100, &removed, NULL), KN_OK);
    assert_true(stats_of(b, RC_EMBEDDING).bytes <= 2u << 20);
    rc_l2_close(b);
    free(v);
    tu_rmdir(dir);
}

/* ---- corruption ------------------------------------------------------------------------------ */

/* Every offset of needle in the file's bytes. */
static size_t find_all(const uint8_t *hay, size_t n, const char *needle, size_t *offs, size_t max) {
    size_t k = 0, m = strlen(needle);
    for (size_t i = 0; i + m <= n && k < max; i++)
        if (hay[i] == (uint8_t)needle[0] && !memcmp(hay + i, needle, m)) offs[k++] = i;
    return k;
}

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc((size_t)sz);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return p;
}

static void write_all(const char *path, const uint8_t *p, size_t n) {
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

/* Writes a record with a valid checksum straight into the response
 * database: a zstd-flagged payload that is not a zstd frame of raw_len. */
static void forge_record(const char *dir, uint64_t model, rc_key k, uint32_t raw_len, const uint8_t *payload,
                         uint32_t plen) {
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "response", 0, &dbi), 0);
    uint8_t key[24], rec[48 + 256];
    assert_true(plen <= 256);
    for (int i = 0; i < 8; i++) {
        key[i] = (uint8_t)(model >> (56 - 8 * i));
        key[8 + i] = (uint8_t)(k.hi >> (56 - 8 * i));
        key[16 + i] = (uint8_t)(k.lo >> (56 - 8 * i));
    }
    memset(rec, 0, 48);
    memcpy(rec, "KLC1", 4);
    rec[4] = 1;
    rec[5] = RC_RESPONSE;
    for (int i = 0; i < 4; i++)
        rec[8 + i] = (uint8_t)(raw_len >> (8 * i)), rec[12 + i] = (uint8_t)(plen >> (8 * i));
    uint64_t created = NOW, expiry = FAR;
    for (int i = 0; i < 8; i++) {
        rec[16 + i] = (uint8_t)(created >> (8 * i));
        rec[24 + i] = (uint8_t)(expiry >> (8 * i));
        rec[32 + i] = (uint8_t)(model >> (8 * i));
    }
    memcpy(rec + 48, payload, plen);
    XXH3_state_t st;
    XXH3_INITSTATE(&st);
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, rec, 40);
    XXH3_64bits_update(&st, payload, plen);
    uint64_t sum = XXH3_64bits_digest(&st);
    for (int i = 0; i < 8; i++)
        rec[40 + i] = (uint8_t)(sum >> (8 * i));
    MDB_val kv = {24, key}, vv = {48 + plen, rec};
    assert_int_equal(mdb_put(txn, dbi, &kv, &vv, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static void test_corruption(void **state) {
    (void)state;
    char dir[256], data[300];
    assert_non_null(tu_tmpdir(dir, sizeof dir));
    snprintf(data, sizeof data, "%s/data.mdb", dir);
    const size_t len = 8192, at = 1000; /* over a page: one contiguous overflow run, written once */
    uint8_t *a = malloc(len), *bb = malloc(len), *c = malloc(len);
    assert_true(a && bb && c);
    rand_bytes(a, len, 11);
    rand_bytes(bb, len, 12);
    rand_bytes(c, len, 13);
    memcpy(a + at, "KILN-MARKER-PAYLOAD-AAAA", 24);
    memcpy(bb + at, "KILN-MARKER-HEADER-BBBBB", 24);
    memcpy(c + at, "KILN-MARKER-INTACT-CCCCC", 24);
    rc_l2 *b = open_l2(dir, 0, false);
    put1(b, RC_RESPONSE, 5, key_n(1), a, len, FAR, NOW);
    put1(b, RC_RESPONSE, 5, key_n(2), bb, len, FAR, NOW);
    put1(b, RC_EMBEDDING, 5, key_n(3), c, len, FAR, NOW);
    rc_l2_close(b);

    size_t n, offs[8];
    uint8_t *file = read_all(data, &n);
    size_t k = find_all(file, n, "KILN-MARKER-PAYLOAD-AAAA", offs, 8);
    assert_true(k >= 1);
    for (size_t i = 0; i < k; i++)
        file[offs[i] + 5] ^= 0x20; /* a payload byte */
    k = find_all(file, n, "KILN-MARKER-HEADER-BBBBB", offs, 8);
    assert_true(k >= 1);
    for (size_t i = 0; i < k; i++) {
        size_t h = offs[i] - at - 48;
        assert_memory_equal(file + h, "KLC1", 4); /* the record's header is right before it */
        file[h + 1] ^= 0x01;                      /* its magic */
    }
    write_all(data, file, n);
    free(file);

    /* a forged record: checksum right, "zstd" payload garbage */
    uint8_t junk[64];
    rand_bytes(junk, sizeof junk, 99);
    forge_record(dir, 5, key_n(4), 1000, junk, sizeof junk);

    b = open_l2(dir, 0, false);
    assert_int_equal(stats_of(b, RC_RESPONSE).entries, 3);
    assert_int_equal(get_st(b, RC_RESPONSE, 5, key_n(1), NOW), KN_ENOTFOUND);
    rc_stats s = stats_of(b, RC_RESPONSE);
    assert_int_equal(s.corrupt, 1);
    assert_int_equal(s.misses, 1);
    assert_int_equal(s.entries, 2); /* deleted */
    assert_int_equal(get_st(b, RC_RESPONSE, 5, key_n(1), NOW), KN_ENOTFOUND);
    assert_int_equal(stats_of(b, RC_RESPONSE).corrupt, 1); /* gone: a plain miss now */
    assert_int_equal(get_st(b, RC_RESPONSE, 5, key_n(2), NOW), KN_ENOTFOUND);
    assert_int_equal(stats_of(b, RC_RESPONSE).corrupt, 2);
    assert_int_equal(get_st(b, RC_RESPONSE, 5, key_n(4), NOW), KN_ENOTFOUND);
    s = stats_of(b, RC_RESPONSE);
    assert_int_equal(s.corrupt, 3);
    assert_int_equal(s.entries, 0);
    expect_hit(b, RC_EMBEDDING, 5, key_n(3), c, len, NOW);
    assert_int_equal(stats_of(b, RC_EMBEDDING).corrupt, 0);
    /* the store still works */
    put1(b, RC_RESPONSE, 5, key_n(1), a, len, FAR, NOW);
    expect_hit(b, RC_RESPONSE, 5, key_n(1), a, len, NOW);
    rc_l2_close(b);

    /* maintenance finds a record with a broken header without a get */
    file = read_all(data, &n);
    k = find_all(file, n, "KILN-MARKER-INTACT-CCCCC", offs, 8);
    assert_true(k >= 1);
    for (size_t i = 0; i < k; i++)
        file[offs[i] - at - 48 + 4] = 9; /* version */
    write_all(data, file, n);
    free(file);
    b = open_l2(dir, 0, false);
    uint64_t removed = 0;
    assert_int_equal(rc_l2_maintain(b, NOW, 10, &removed, NULL), KN_OK);
    assert_int_equal(removed, 1);
    assert_int_equal(stats_of(b, RC_EMBEDDING).corrupt, 1);
    assert_int_equal(stats_of(b, RC_EMBEDDING).entries, 0);
    assert_int_equal(stats_of(b, RC_EMBEDDING).bytes, 0);
    expect_hit(b, RC_RESPONSE, 5, key_n(1), a, len, NOW);
    rc_l2_close(b);
    free(a);
    free(bb);
    free(c);
    tu_rmdir(dir);
}

/* ---- crash safety ------------------------------------------------------------------------------ */

#define CRASH_BATCH 8

/* Value i: its index and key, then bytes that follow from the index
 * (incompressible, so the byte count of the store is known exactly). */
static size_t crash_value(uint64_t i, uint8_t *buf) {
    size_t len = 24 + 512 + (size_t)((i * 2654435761u) % 12000);
    rc_key k = key_n(i);
    memcpy(buf, &i, 8);
    memcpy(buf + 8, &k.hi, 8);
    memcpy(buf + 16, &k.lo, 8);
    rand_bytes(buf + 24, len - 24, i ^ k.lo);
    return len;
}

static void crash_child(const char *dir, int ready_fd) {
    rc_l2_opts o = {.max_bytes = 1ull << 30};
    rc_l2 *b = NULL;
    if (rc_l2_open_lmdb(dir, &o, &b, NULL)) _exit(3);
    static uint8_t bufs[CRASH_BATCH][24 + 512 + 12000];
    rc_l2_item items[CRASH_BATCH];
    for (uint64_t i = 0;; i += CRASH_BATCH) {
        for (int j = 0; j < CRASH_BATCH; j++) {
            size_t len = crash_value(i + (uint64_t)j, bufs[j]);
            items[j] = (rc_l2_item){.type = (i / CRASH_BATCH) % 2 ? RC_EMBEDDING : RC_RESPONSE,
                                    .model = 77,
                                    .key = key_n(i + (uint64_t)j),
                                    .val = bufs[j],
                                    .len = len,
                                    .expiry_ms = FAR};
        }
        if (rc_l2_put_batch(b, items, CRASH_BATCH, NOW + (int64_t)i, NULL)) _exit(4);
        /* a hit now and then, so the counters are written too */
        void *v;
        size_t n;
        if (!rc_l2_get(b, items[0].type, 77, items[0].key, NOW, &v, &n, NULL, NULL)) free(v);
        if (i == 0 && write(ready_fd, "r", 1) != 1) _exit(5);
    }
}

static void test_crash(void **state) {
    (void)state;
    tu_rng r = {(uint64_t)getpid() ^ (uint64_t)time(NULL)};
    static uint8_t buf[24 + 512 + 12000];
    for (int round = 0; round < 4; round++) {
        char dir[256];
        assert_non_null(tu_tmpdir(dir, sizeof dir));
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            crash_child(dir, fds[1]);
            _exit(0);
        }
        close(fds[1]);
        char ch;
        assert_int_equal(read(fds[0], &ch, 1), 1); /* the first batch committed */
        close(fds[0]);
        int ms = 30 + (int)(tu_rng_u64(&r) % 200);
        kn_sleep_ms(ms);
        assert_int_equal(kill(pid, SIGKILL), 0);
        int wst;
        assert_int_equal(waitpid(pid, &wst, 0), pid);
        assert_true(WIFSIGNALED(wst)); /* it was still writing */

        rc_l2 *b = open_l2(dir, 0, false);
        uint64_t found = 0, bytes = 0;
        for (;; found++) {
            rc_type t = (found / CRASH_BATCH) % 2 ? RC_EMBEDDING : RC_RESPONSE;
            void *v = NULL;
            size_t n = 0;
            kn_status st = rc_l2_get(b, t, 77, key_n(found), NOW, &v, &n, NULL, NULL);
            if (st == KN_ENOTFOUND) break;
            assert_int_equal(st, KN_OK);
            size_t len = crash_value(found, buf);
            assert_int_equal(n, len);
            assert_memory_equal(v, buf, len);
            free(v);
            bytes += REC_OVERHEAD + len;
        }
        /* whole batches only, and nothing else in the store */
        assert_true(found >= CRASH_BATCH);
        assert_int_equal(found % CRASH_BATCH, 0);
        rc_stats s = stats_of(b, RC_RESPONSE), e = stats_of(b, RC_EMBEDDING);
        assert_int_equal(s.entries + e.entries, found);
        assert_int_equal(s.bytes + e.bytes, bytes);
        assert_int_equal(s.corrupt + e.corrupt, 0);
        assert_true(s.hits >= 1); /* the child's hits were committed with its writes */
        /* the store takes writes */
        put1(b, RC_RESPONSE, 78, key_n(1), "after", 5, FAR, NOW);
        expect_hit(b, RC_RESPONSE, 78, key_n(1), "after", 5, NOW);
        fprintf(stderr, "crash round %d: killed after %d ms, %llu records intact\n", round, ms,
                (unsigned long long)found);
        rc_l2_close(b);
        assert_int_equal(db_entries(dir, "age"), found + 1);
        tu_rmdir(dir);
    }
}

/* ---- clear ----------------------------------------------------------------------------------------- */

static void test_clear(void **state) {
    (void)state;
    char dir[256];
    assert_non_null(tu_tmpdir(dir, sizeof dir));
    rc_l2 *b = open_l2(dir, 0, false);
    uint64_t ma = rc_model_tag("model-a-Q8_0"), mb = rc_model_tag("model-b-Q4_K_M");
    uint8_t v[64];
    rand_bytes(v, sizeof v, 5);
    /* 2500 response records of model a (three clear batches), and 10 of each other kind */
    enum { NA = 2500 };
    rc_l2_item *items = calloc(NA, sizeof *items);
    assert_non_null(items);
    for (uint64_t i = 0; i < NA; i++)
        items[i] = (rc_l2_item){
            .type = RC_RESPONSE, .model = ma, .key = key_n(i), .val = v, .len = 64, .expiry_ms = FAR};
    assert_int_equal(rc_l2_put_batch(b, items, NA, NOW, NULL), KN_OK);
    free(items);
    rc_l2_item more[30];
    for (uint64_t i = 0; i < 30; i++)
        more[i] = (rc_l2_item){.type = i % 3 == 1 ? RC_RESPONSE : RC_EMBEDDING,
                               .model = i % 3 ? mb : ma,
                               .key = key_n(i / 3),
                               .val = v,
                               .len = 64,
                               .expiry_ms = FAR};
    assert_int_equal(rc_l2_put_batch(b, more, 30, NOW, NULL), KN_OK);
    uint64_t per = REC_OVERHEAD + 64;
    assert_int_equal(stats_of(b, RC_RESPONSE).bytes, (NA + 10) * per);

    uint64_t removed = 0;
    kn_err err = {0};
    assert_int_equal(rc_l2_clear(b, false, RC_RESPONSE, ma, &removed, &err), KN_OK);
    assert_int_equal(removed, NA);
    rc_stats s = stats_of(b, RC_RESPONSE), e = stats_of(b, RC_EMBEDDING);
    assert_int_equal(s.entries, 10);
    assert_int_equal(s.bytes, 10 * per);
    assert_int_equal(e.entries, 20);
    assert_int_equal(get_st(b, RC_RESPONSE, ma, key_n(3), NOW), KN_ENOTFOUND);
    expect_hit(b, RC_RESPONSE, mb, key_n(3), v, 64, NOW);
    expect_hit(b, RC_EMBEDDING, ma, key_n(3), v, 64, NOW);

    assert_int_equal(rc_l2_clear(b, true, RC_RESPONSE, mb, &removed, NULL), KN_OK);
    assert_int_equal(removed, 20);
    assert_int_equal(stats_of(b, RC_RESPONSE).entries, 0);
    assert_int_equal(stats_of(b, RC_RESPONSE).bytes, 0);
    assert_int_equal(stats_of(b, RC_EMBEDDING).entries, 10);
    expect_hit(b, RC_EMBEDDING, ma, key_n(9), v, 64, NOW);
    assert_int_equal(get_st(b, RC_EMBEDDING, mb, key_n(9), NOW), KN_ENOTFOUND);

    /* by type, every model: the other type stays, and so do its age entries */
    put1(b, RC_RESPONSE, mb, key_n(1), v, 64, FAR, NOW);
    assert_int_equal(rc_l2_clear(b, false, RC_EMBEDDING, 0, &removed, NULL), KN_OK);
    assert_int_equal(removed, 10);
    assert_int_equal(stats_of(b, RC_EMBEDDING).entries, 0);
    assert_int_equal(stats_of(b, RC_EMBEDDING).bytes, 0);
    assert_int_equal(stats_of(b, RC_RESPONSE).entries, 1);
    expect_hit(b, RC_RESPONSE, mb, key_n(1), v, 64, NOW);
    rc_l2_close(b);
    assert_int_equal(db_entries(dir, "age"), 1);
    assert_int_equal(db_entries(dir, "embedding"), 0);

    /* all */
    b = open_l2(dir, 0, false);
    put1(b, RC_EMBEDDING, ma, key_n(1), v, 64, FAR, NOW);
    assert_int_equal(rc_l2_clear(b, true, RC_RESPONSE, 0, &removed, NULL), KN_OK);
    assert_int_equal(removed, 2);
    for (int t = 0; t < RC_NTYPES; t++) {
        assert_int_equal(stats_of(b, (rc_type)t).entries, 0);
        assert_int_equal(stats_of(b, (rc_type)t).bytes, 0);
    }
    assert_int_equal(stats_of(b, RC_RESPONSE).hits, 2); /* lifetime counters survive a clear */
    put1(b, RC_RESPONSE, ma, key_n(1), v, 64, FAR, NOW);
    expect_hit(b, RC_RESPONSE, ma, key_n(1), v, 64, NOW);
    rc_l2_close(b);
    assert_int_equal(db_entries(dir, "age"), 1);
    tu_rmdir(dir);
}

/* ---- opening ------------------------------------------------------------------------------------------- */

static void test_open_errors(void **state) {
    (void)state;
    char dir[256], path[400];
    assert_non_null(tu_tmpdir(dir, sizeof dir));
    rc_l2_opts ro = {.read_only = true}, rw = {0};
    rc_l2 *b = NULL;
    kn_err err = {0};
    struct stat sb;

    /* read-only: a missing directory, and an empty one, are errors naming the path; nothing is created */
    snprintf(path, sizeof path, "%s/missing/kiln", dir);
    assert_int_equal(rc_l2_open_lmdb(path, &ro, &b, &err), KN_ENOTFOUND);
    assert_null(b);
    assert_non_null(strstr(err.msg, path));
    assert_int_not_equal(stat(path, &sb), 0);
    snprintf(path, sizeof path, "%s/empty", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    assert_int_equal(rc_l2_open_lmdb(path, &ro, &b, &err), KN_ENOTFOUND);
    assert_non_null(strstr(err.msg, path));
    char f[500];
    snprintf(f, sizeof f, "%s/data.mdb", path);
    assert_int_not_equal(stat(f, &sb), 0);

    /* read-write creates missing parents, mode 0700 */
    snprintf(path, sizeof path, "%s/a/b/kiln", dir);
    b = open_l2(path, 0, false);
    put1(b, RC_RESPONSE, 1, key_n(1), "x", 1, FAR, NOW);
    rc_l2_close(b);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);

    /* read-only: gets work, writes fail clearly */
    b = open_l2(path, 0, true);
    expect_hit(b, RC_RESPONSE, 1, key_n(1), "x", 1, NOW);
    err = (kn_err){0};
    rc_l2_item it = {
        .type = RC_RESPONSE, .model = 1, .key = key_n(2), .val = "y", .len = 1, .expiry_ms = FAR};
    assert_int_equal(rc_l2_put_batch(b, &it, 1, NOW, &err), KN_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "read-only"));
    assert_int_equal(rc_l2_clear(b, true, RC_RESPONSE, 0, NULL, &err), KN_EUNSUPPORTED);
    assert_int_equal(rc_l2_maintain(b, NOW, 10, NULL, &err), KN_EUNSUPPORTED);
    assert_int_equal(stats_of(b, RC_RESPONSE).entries, 1);
    rc_l2_close(b);

    /* a directory with other content is not taken over */
    snprintf(path, sizeof path, "%s/other", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(f, sizeof f, "%s/notes.txt", path);
    FILE *fp = fopen(f, "w");
    assert_non_null(fp);
    fputs("mine\n", fp);
    fclose(fp);
    assert_int_not_equal(rc_l2_open_lmdb(path, &rw, &b, &err), KN_OK);
    assert_null(b);
    assert_non_null(strstr(err.msg, path));
    snprintf(f, sizeof f, "%s/data.mdb", path);
    assert_int_not_equal(stat(f, &sb), 0);

    /* nor an LMDB store of someone else's */
    snprintf(path, sizeof path, "%s/foreign", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    {
        MDB_env *env;
        MDB_txn *txn;
        MDB_dbi dbi;
        assert_int_equal(mdb_env_create(&env), 0);
        assert_int_equal(mdb_env_open(env, path, 0, 0600), 0);
        assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
        assert_int_equal(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
        MDB_val k = {5, "hello"}, v = {5, "world"};
        assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
        assert_int_equal(mdb_txn_commit(txn), 0);
        mdb_env_close(env);
    }
    assert_int_equal(rc_l2_open_lmdb(path, &rw, &b, &err), KN_EFORMAT);
    assert_non_null(strstr(err.msg, "not a kiln cache"));
    assert_int_equal(rc_l2_open_lmdb(path, &ro, &b, &err), KN_EFORMAT);
    /* a data.mdb that is not LMDB at all */
    snprintf(path, sizeof path, "%s/garbage", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(f, sizeof f, "%s/data.mdb", path);
    fp = fopen(f, "w");
    assert_non_null(fp);
    for (int i = 0; i < 3000; i++)
        fputs("not an lmdb file ", fp);
    fclose(fp);
    assert_int_equal(rc_l2_open_lmdb(path, &rw, &b, &err), KN_EFORMAT);
    assert_non_null(strstr(err.msg, path));
    /* a file where the directory should be */
    assert_int_not_equal(rc_l2_open_lmdb(f, &rw, &b, &err), KN_OK);
    assert_non_null(strstr(err.msg, "not a directory"));
    tu_rmdir(dir);
}

/* ---- the backend table and the offline calls of cache.h ----------------------------------------------- */

static void test_backends_offline(void **state) {
    (void)state;
    char dir[256], path[400], f[500];
    assert_non_null(tu_tmpdir(dir, sizeof dir));
    rc_l2_opts rw = {0};
    rc_l2 *b = NULL;
    kn_err err = {0};
    struct stat sb;

    /* a backend by name (any case; NULL is lmdb); an unknown one is named with the known ones */
    snprintf(path, sizeof path, "%s/store", dir);
    assert_int_equal(rc_l2_open("redis", path, &rw, &b, &err), KN_EINVAL);
    assert_null(b);
    assert_non_null(strstr(err.msg, "unknown backend 'redis'"));
    assert_non_null(strstr(err.msg, "lmdb"));
    assert_int_not_equal(stat(path, &sb), 0);
    assert_int_equal(rc_l2_open("LMDB", path, &rw, &b, &err), KN_OK);
    rc_l2_close(b);
    b = NULL;
    assert_int_equal(rc_l2_open(NULL, path, &rw, &b, &err), KN_OK);
    const uint64_t ma = rc_model_tag("a"), mb = rc_model_tag("b");
    for (uint64_t i = 0; i < 6; i++)
        put1(b, i % 3 ? RC_RESPONSE : RC_EMBEDDING, i % 2 ? ma : mb, key_n(i), "x", 1, FAR, NOW);
    expect_hit(b, RC_RESPONSE, ma, key_n(1), "x", 1, NOW);
    assert_int_equal(get_st(b, RC_RESPONSE, ma, key_n(99), NOW), KN_ENOTFOUND);
    rc_l2_close(b); /* the counters are saved */

    /* stats: read-only, per type, with the lifetime counters */
    rc_stats s[RC_NTYPES];
    assert_int_equal(rc_disk_stats(path, s, &err), KN_OK);
    assert_int_equal(s[RC_RESPONSE].entries, 4); /* keys 1, 2, 4, 5 */
    assert_int_equal(s[RC_EMBEDDING].entries, 2);
    assert_int_equal(s[RC_RESPONSE].bytes, 4 * (1 + REC_OVERHEAD));
    assert_int_equal(s[RC_EMBEDDING].bytes, 2 * (1 + REC_OVERHEAD));
    assert_int_equal(s[RC_RESPONSE].hits, 1);
    assert_int_equal(s[RC_RESPONSE].misses, 1);
    assert_int_equal(s[RC_EMBEDDING].hits, 0);

    /* clear: by type and model, then the rest */
    uint64_t removed = 99;
    assert_int_equal(rc_disk_clear(path, false, RC_RESPONSE, ma, &removed, &err), KN_OK);
    assert_int_equal(removed, 2); /* keys 1, 5 */
    assert_int_equal(rc_disk_stats(path, s, &err), KN_OK);
    assert_int_equal(s[RC_RESPONSE].entries, 2);
    assert_int_equal(s[RC_EMBEDDING].entries, 2);
    assert_int_equal(rc_disk_clear(path, true, RC_RESPONSE, 0, NULL, &err), KN_OK);
    assert_int_equal(rc_disk_stats(path, s, &err), KN_OK);
    assert_int_equal(s[RC_RESPONSE].entries + s[RC_EMBEDDING].entries, 0);
    assert_int_equal(s[RC_RESPONSE].bytes + s[RC_EMBEDDING].bytes, 0);
    assert_int_equal(s[RC_RESPONSE].hits, 1); /* lifetime totals survive a clear */

    /* no store: an error naming the directory, and nothing created */
    snprintf(path, sizeof path, "%s/none", dir);
    memset(s, 0xff, sizeof s);
    assert_int_equal(rc_disk_stats(path, s, &err), KN_ENOTFOUND);
    assert_non_null(strstr(err.msg, path));
    assert_int_equal(s[RC_RESPONSE].entries, 0);
    assert_int_equal(rc_disk_clear(path, true, RC_RESPONSE, 0, &removed, &err), KN_ENOTFOUND);
    assert_non_null(strstr(err.msg, "no kiln cache at"));
    assert_non_null(strstr(err.msg, path));
    assert_int_equal(removed, 0);
    assert_int_not_equal(stat(path, &sb), 0);
    snprintf(path, sizeof path, "%s/empty", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    assert_int_equal(rc_disk_clear(path, false, RC_EMBEDDING, 0, NULL, &err), KN_ENOTFOUND);
    assert_int_equal(rc_disk_stats(path, s, &err), KN_ENOTFOUND);
    snprintf(f, sizeof f, "%s/data.mdb", path);
    assert_int_not_equal(stat(f, &sb), 0);
    snprintf(f, sizeof f, "%s/lock.mdb", path);
    assert_int_not_equal(stat(f, &sb), 0);
    tu_rmdir(dir);
}

/* ---- threads ------------------------------------------------------------------------------------------- */

#define THR_N 60 /* puts per thread (each commit syncs) */

typedef struct thr_arg {
    rc_l2 *b;
    int id;
    int bad;
} thr_arg;

static void *thr_main(void *p) {
    thr_arg *a = p;
    uint8_t v[600];
    for (uint64_t i = 0; i < THR_N; i++) {
        uint64_t n = (uint64_t)a->id * 1000 + i;
        memset(v, (int)(n & 0xff), sizeof v);
        memcpy(v, &n, 8);
        rc_l2_item it = {.type = (rc_type)(n % 2),
                         .model = 3,
                         .key = key_n(n),
                         .val = v,
                         .len = sizeof v,
                         .expiry_ms = FAR};
        if (rc_l2_put_batch(a->b, &it, 1, NOW, NULL)) a->bad++;
        void *got = NULL;
        size_t len = 0;
        if (rc_l2_get(a->b, (rc_type)(n % 2), 3, key_n(n), NOW, &got, &len, NULL, NULL) || len != sizeof v ||
            memcmp(got, v, len))
            a->bad++;
        free(got);
        if (i % 20 == 0 && rc_l2_maintain(a->b, NOW, 16, NULL, NULL)) a->bad++;
    }
    return NULL;
}

/* ---- disk full ------------------------------------------------------------------------ */

typedef struct full_fixture {
    char dir[256], mnt[300];
    bool mounted;
} full_fixture;

static int full_teardown(void **state) {
    full_fixture *f = *state;
    if (f) {
        if (f->mounted && umount(f->mnt)) umount2(f->mnt, MNT_DETACH);
        tu_rmdir(f->dir);
        free(f);
    }
    return 0;
}

static void test_disk_full(void **state) {
    full_fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    *state = f;
    assert_non_null(tu_tmpdir(f->dir, sizeof f->dir));
    snprintf(f->mnt, sizeof f->mnt, "%s/mnt", f->dir);
    assert_int_equal(mkdir(f->mnt, 0700), 0);
    if (geteuid() != 0 || mount("tmpfs", f->mnt, "tmpfs", 0, "size=1m")) {
        fprintf(stderr, "disk full: skipped (a tmpfs mount needs root: %s)\n", strerror(errno));
        skip();
    }
    f->mounted = true;
    char cdir[400], filler[400];
    snprintf(cdir, sizeof cdir, "%s/cache", f->mnt);
    snprintf(filler, sizeof filler, "%s/filler", f->mnt);
    FILE *fl = fopen(filler, "wb");
    assert_non_null(fl);
    static uint8_t zero[256 << 10];
    assert_int_equal(fwrite(zero, 1, sizeof zero, fl), sizeof zero);
    assert_int_equal(fclose(fl), 0);

    rc_l2 *b = open_l2(cdir, 64u << 20, false); /* far above the tmpfs: LMDB meets ENOSPC first */
    const size_t len = 64u << 10;
    uint8_t *v = malloc(len);
    assert_non_null(v);
    uint64_t ok = 0;
    kn_err err = {0};
    kn_status st = KN_OK;
    int64_t now = NOW;
    for (uint64_t i = 0; i < 64 && st == KN_OK; i++, now++) {
        rand_bytes(v, len, i); /* incompressible */
        rc_l2_item it = {
            .type = RC_EMBEDDING, .model = 3, .key = key_n(i), .val = v, .len = len, .expiry_ms = FAR};
        st = rc_l2_put_batch(b, &it, 1, now, &err);
        if (st == KN_OK) ok++;
    }
    fprintf(stderr, "disk full after %llu records of 64 KiB: %s\n", (unsigned long long)ok, err.msg);
    assert_int_equal(st, KN_EIO);
    assert_true(ok >= 1 && ok < 16);
    assert_non_null(strstr(err.msg, "no space left on device"));
    assert_non_null(strstr(err.msg, cdir));
    /* within the pause: skipped without an error, nothing stored */
    rand_bytes(v, len, 1000);
    rc_l2_item it = {
        .type = RC_EMBEDDING, .model = 3, .key = key_n(1000), .val = v, .len = len, .expiry_ms = FAR};
    assert_int_equal(rc_l2_put_batch(b, &it, 1, now + 10, NULL), KN_OK);
    assert_int_equal(get_st(b, RC_EMBEDDING, 3, key_n(1000), now + 10), KN_ENOTFOUND);
    uint64_t removed = 0;
    assert_int_equal(rc_l2_maintain(b, now + 10, 100, &removed, NULL), KN_OK);
    /* the store still serves what it had */
    for (uint64_t i = 0; i < ok; i++) {
        rand_bytes(v, len, i);
        expect_hit(b, RC_EMBEDDING, 3, key_n(i), v, len, now);
    }
    /* space freed, the pause over: the next write goes in */
    assert_int_equal(unlink(filler), 0);
    rand_bytes(v, len, 1000);
    put1(b, RC_EMBEDDING, 3, key_n(1000), v, len, FAR, now + 1001);
    expect_hit(b, RC_EMBEDDING, 3, key_n(1000), v, len, now + 1001);
    rc_stats s = stats_of(b, RC_EMBEDDING);
    assert_int_equal(s.entries, ok + 1);
    assert_int_equal(s.bytes, (ok + 1) * (REC_OVERHEAD + len));
    rc_l2_close(b);
    /* reopened: every record, exact accounting */
    b = open_l2(cdir, 64u << 20, false);
    for (uint64_t i = 0; i < ok; i++) {
        rand_bytes(v, len, i);
        expect_hit(b, RC_EMBEDDING, 3, key_n(i), v, len, now);
    }
    s = stats_of(b, RC_EMBEDDING);
    assert_int_equal(s.entries, ok + 1);
    assert_int_equal(s.bytes, (ok + 1) * (REC_OVERHEAD + len));
    assert_int_equal(s.corrupt, 0);
    rc_l2_close(b);
    free(v);
}

static void test_threads(void **state) {
    (void)state;
    char dir[256];
    assert_non_null(tu_tmpdir(dir, sizeof dir));
    rc_l2 *b = open_l2(dir, 0, false);
    pthread_t th[4];
    thr_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thr_arg){.b = b, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, thr_main, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].bad, 0);
    }
    rc_stats s = stats_of(b, RC_RESPONSE), e = stats_of(b, RC_EMBEDDING);
    assert_int_equal(s.entries + e.entries, (4 * THR_N));
    assert_int_equal(s.hits + e.hits, (4 * THR_N));
    assert_true(s.bytes + e.bytes > (4 * THR_N) * REC_OVERHEAD &&
                s.bytes + e.bytes < (4 * THR_N) * (REC_OVERHEAD + 600));
    rc_l2_close(b);
    b = open_l2(dir, 0, true);
    assert_int_equal(stats_of(b, RC_RESPONSE).hits + stats_of(b, RC_EMBEDDING).hits, (4 * THR_N));
    rc_l2_close(b);
    tu_rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_persistence),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_size_eviction),
        cmocka_unit_test(test_map_full),
        cmocka_unit_test(test_corruption),
        cmocka_unit_test(test_crash),
        cmocka_unit_test(test_clear),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_backends_offline),
        cmocka_unit_test(test_threads),
        cmocka_unit_test_teardown(test_disk_full, full_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
