/* test_files.c — the model manager and files that change on disk
 * (runtime/registry.h): a directory holding a COPY of stories260K.gguf;
 * an in-place edit of the same size with the mtime set back (only ctime
 * moves) gives a new sha256 at the next load, also when the instance was
 * loaded and idle (it is reloaded); an instance in use keeps serving; a
 * truncated file fails with a message naming the file and "truncated"; a
 * replacement by another model (rename) is loaded with that file's sha256. */
#include "testutil.h"
#include "kiln/model.h"
#include "kiln/runtime.h"
#include "kiln/store.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    assert_non_null(a);
    assert_non_null(b);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0)
        assert_int_equal(fwrite(buf, 1, n, b), n);
    fclose(a);
    assert_int_equal(fclose(b), 0);
}

/* Swaps the case of general.name's first letter in place and sets the
 * mtime back: same size, inode and mtime; only ctime tells. */
static void edit_in_place(const char *path) {
    struct stat before, after;
    assert_int_equal(stat(path, &before), 0);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    static char head[1 << 16];
    ssize_t n = pread(fd, head, sizeof head, 0);
    assert_true(n > 0);
    const char *key = "general.name";
    char *p = memmem(head, (size_t)n, key, strlen(key));
    assert_non_null(p);
    off_t at = (off_t)(p - head) + (off_t)strlen(key) + 4 + 8; /* type u32, length u64, then the string */
    char c = head[at];
    c = (c >= 'a' && c <= 'z')   ? (char)(c - 32)
        : (c >= 'A' && c <= 'Z') ? (char)(c + 32)
                                 : (c == 'Z' ? 'Y' : 'Z');
    assert_int_equal(pwrite(fd, &c, 1, at), 1);
    close(fd);
    struct timespec ts[2] = {before.st_atim, before.st_mtim};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
    assert_int_equal(stat(path, &after), 0);
    assert_int_equal(after.st_size, before.st_size);
    assert_int_equal(after.st_ino, before.st_ino);
    assert_true(after.st_mtim.tv_sec == before.st_mtim.tv_sec &&
                after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);
}

static rt_registry *open_registry(const char *dir, const tu_compute *tc) {
    rt_opts o = {.threads = 1,
                 .n_ctx = 256,
                 .n_slots = 1,
                 .max_batch = 64,
                 .queue_len = 4,
                 .queue_timeout_s = 10,
                 .kv_type = MODEL_KV_F16,
                 .memory_budget = 1ull << 30,
                 .keep_alive_s = -1,
                 .load_wait_s = 5,
                 .hash_files = true};
    rt_registry *r = NULL;
    kn_err err = {0};
    if (rt_registry_create(dir, NULL, &o, &tc->ops, &r, &err) != KN_OK) fail_msg("registry: %s", err.msg);
    return r;
}

static void acquire_ok(rt_registry *r, rt_model **m, char sha[65]) {
    kn_err err = {0};
    if (rt_acquire(r, "alpha", NULL, m, &err) != KN_OK) fail_msg("acquire alpha: %s", err.msg);
    assert_int_equal(strlen((*m)->sha256), 64);
    memcpy(sha, (*m)->sha256, 65);
}

static void test_changed_files(void **state) {
    const tu_compute *tc = *state;
    char dir[512], path[600], other[600], src[600], src8[600], want[65];
    tu_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/alpha.gguf", dir);
    snprintf(other, sizeof other, "%s/.alpha.new", dir);
    copy_file(tu_shared_path(src, sizeof src, "models/stories260K.gguf"), path);
    tu_shared_path(src8, sizeof src8, "models/stories260K-Q8_0.gguf");
    rt_registry *r = open_registry(dir, tc);
    rt_model *m1, *m2, *m3;
    char sha1[65], sha2[65], sha3[65];

    /* loaded, then idle: the same instance while the file is the same */
    acquire_ok(r, &m1, sha1);
    assert_true(store_sha256_file(path, want));
    assert_string_equal(sha1, want);
    rt_release(r, m1);
    acquire_ok(r, &m2, sha2);
    assert_ptr_equal(m2, m1);
    rt_release(r, m2);

    /* edited in place while loaded and idle: reloaded, with the new digest */
    edit_in_place(path);
    acquire_ok(r, &m2, sha2);
    assert_string_not_equal(sha2, sha1);
    assert_true(store_sha256_file(path, want));
    assert_string_equal(sha2, want);

    /* edited again while in use: that request's instance keeps serving */
    edit_in_place(path);
    acquire_ok(r, &m3, sha3);
    assert_ptr_equal(m3, m2);
    assert_string_equal(sha3, sha2);
    rt_release(r, m3);
    rt_release(r, m2);
    /* idle now: the next acquire loads the edited file */
    acquire_ok(r, &m3, sha3);
    assert_true(store_sha256_file(path, want));
    assert_string_equal(sha3, want);
    assert_string_not_equal(sha3, sha2);
    rt_release(r, m3);

    /* truncated: a clear error naming the file */
    assert_int_equal(truncate(path, 500000), 0);
    kn_err err = {0};
    rt_model *mx = NULL;
    kn_status st = rt_acquire(r, "alpha", NULL, &mx, &err);
    assert_int_not_equal(st, KN_OK);
    assert_int_not_equal(st, KN_ENOTFOUND);
    assert_null(mx);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "truncated"));

    /* replaced by another model: loaded, with that file's digest */
    copy_file(src8, other);
    assert_int_equal(rename(other, path), 0);
    acquire_ok(r, &m1, sha1);
    assert_true(store_sha256_file(src8, want));
    assert_string_equal(sha1, want);
    rt_entry_info info;
    assert_int_equal(rt_lookup(r, "alpha", &info, NULL), KN_OK);
    struct stat sb;
    assert_int_equal(stat(src8, &sb), 0);
    assert_int_equal(info.size, (uint64_t)sb.st_size);
    rt_release(r, m1);

    rt_registry_destroy(r);
    tu_rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_changed_files)};
    return cmocka_run_group_tests(tests, tu_compute_setup, tu_compute_teardown);
}
