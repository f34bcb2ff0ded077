/*
 * registry_files.c — the files under the registry: the directory scan,
 * file identities and sha256 digests (memoized per identity), and the
 * memory readings the budget uses (cgroup limit, MemAvailable, RSS).
 */
#include "registry_internal.h"

#include "kiln/store.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_DEPTH 3

kn_status rt_add_entry(rt_registry *r, size_t *cap, const char *path, const char *rel, kn_err *err) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return KN_OK;
    size_t rl = strlen(rel);
    if (rl <= 5 || strcmp(rel + rl - 5, ".gguf") != 0) return KN_OK;
    if (rl - 5 > RT_MAX_NAME) {
        KN_WARN("skipping %s: the name is longer than %d bytes", path, RT_MAX_NAME);
        return KN_OK;
    }
    if (r->n == RT_MAX_MODELS) return kn_fail(err, KN_ERANGE, "more than %d models", RT_MAX_MODELS);
    if (r->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        entry *ne = realloc(r->e, nc * sizeof *ne);
        if (!ne) return kn_fail(err, KN_ENOMEM, "out of memory");
        r->e = ne;
        *cap = nc;
    }
    char id[RT_MAX_NAME + 1], name[RT_MAX_NAME + 1], quant[32];
    snprintf(id, sizeof id, "%.*s", (int)(rl - 5), rel);
    if (!rt_split_file_id(id, name, sizeof name, quant, sizeof quant)) {
        store_quant_of_file(path, quant, sizeof quant); /* the same label `kiln ls` shows */
        if (!quant[0]) snprintf(quant, sizeof quant, "unknown");
    }
    entry *e = &r->e[r->n];
    memset(e, 0, sizeof *e);
    e->id = strdup(id);
    e->name = strdup(name);
    e->quant = strdup(quant);
    e->path = strdup(path);
    if (!e->id || !e->name || !e->quant || !e->path) {
        free(e->id), free(e->name), free(e->quant), free(e->path);
        return kn_fail(err, KN_ENOMEM, "out of memory");
    }
    e->size = (uint64_t)st.st_size;
    e->mtime = st.st_mtime;
    r->n++;
    return KN_OK;
}

kn_status rt_scan_dir(rt_registry *r, size_t *cap, const char *dir, const char *rel, int depth, kn_err *err) {
    DIR *d = opendir(dir);
    if (!d) return depth == 0 ? kn_fail(err, KN_EIO, "cannot open the model directory %s", dir) : KN_OK;
    kn_status st = KN_OK;
    struct dirent *de;
    while (st == KN_OK && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue; /* hidden, and partial downloads */
        char path[4096], r2[1024];
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, de->d_name) >= sizeof path) continue;
        if ((size_t)snprintf(r2, sizeof r2, "%s%s%s", rel, *rel ? "/" : "", de->d_name) >= sizeof r2) continue;
        struct stat sb;
        if (stat(path, &sb) != 0) continue;
        if (S_ISDIR(sb.st_mode)) {
            if (depth + 1 < MAX_DEPTH) st = rt_scan_dir(r, cap, path, r2, depth + 1, err);
        } else {
            st = rt_add_entry(r, cap, path, r2, err);
        }
    }
    closedir(d);
    return st;
}


static uint64_t read_u64_file(const char *path, bool *ok) {
    *ok = false;
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char buf[64] = {0};
    if (!fgets(buf, sizeof buf, f)) {
        fclose(f);
        return 0;
    }
    fclose(f);
    if (!strncmp(buf, "max", 3)) return 0;
    char *end;
    unsigned long long v = strtoull(buf, &end, 10);
    if (end == buf) return 0;
    *ok = true;
    return v;
}

static uint64_t mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    uint64_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lu kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024;
}

uint64_t rt_default_budget(const char **src) {
    bool ok;
    uint64_t lim = read_u64_file("/sys/fs/cgroup/memory.max", &ok);
    if (!ok) lim = read_u64_file("/sys/fs/cgroup/memory/memory.limit_in_bytes", &ok);
    if (ok && lim > 0 && lim < (1ull << 60)) {
        *src = "90% of the cgroup memory limit";
        return lim / 10 * 9;
    }
    *src = "90% of MemAvailable";
    return mem_available() / 10 * 9;
}

uint64_t rt_rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long long size = 0, res = 0;
    if (fscanf(f, "%llu %llu", &size, &res) != 2) res = 0;
    fclose(f);
    return res * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* The identity of a file: a replaced file (new inode) or one rewritten in
 * place (ctime moves on every write, and cannot be set back like mtime)
 * differs even when its size and mtime are the same. */
bool rt_file_id_of(const char *path, file_id *id) {
    struct stat sb;
    memset(id, 0, sizeof *id);
    if (stat(path, &sb)) return false;
    *id = (file_id){.dev = (uint64_t)sb.st_dev, .ino = (uint64_t)sb.st_ino, .size = (uint64_t)sb.st_size,
                    .mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec,
                    .ctime_ns = (int64_t)sb.st_ctim.tv_sec * 1000000000 + sb.st_ctim.tv_nsec};
    return true;
}

bool rt_file_id_eq(const file_id *a, const file_id *b) {
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->mtime_ns == b->mtime_ns &&
           a->ctime_ns == b->ctime_ns;
}

/* The file's sha256 into out, computed once per identity (file_id) of the
 * file; "" when it cannot be read or is no longer the file `want` (the one
 * that was loaded). */
void rt_file_sha256(rt_registry *r, entry *e, const file_id *want, char out[65]) {
    file_id id;
    out[0] = 0;
    if (!rt_file_id_of(e->path, &id) || !rt_file_id_eq(&id, want)) {
        KN_WARN("%s: the file changed after it was loaded; its answers are not cached (no digest)", e->id);
        return;
    }
    pthread_mutex_lock(&r->mu);
    if (e->sha256[0] && rt_file_id_eq(&e->sha_id, &id)) memcpy(out, e->sha256, 65);
    pthread_mutex_unlock(&r->mu);
    if (out[0]) return;
    double t0 = kn_now_s();
    if (!store_sha256_file(e->path, out)) {
        KN_WARN("%s: cannot read the file to hash it; its cached answers are keyed without its digest", e->id);
        out[0] = 0;
        return;
    }
    KN_INFO("%s: sha256 %.16s... (%.2f s)", e->id, out, kn_now_s() - t0);
    file_id after;
    if (!rt_file_id_of(e->path, &after) || !rt_file_id_eq(&after, &id)) {
        /* changed while hashed: these bytes may mix two files */
        KN_WARN("%s: the file changed while it was hashed; its answers are not cached (no digest)", e->id);
        out[0] = 0;
        return;
    }
    pthread_mutex_lock(&r->mu);
    memcpy(e->sha256, out, 65);
    e->sha_id = id;
    pthread_mutex_unlock(&r->mu);
}

/* Prefixes a load error with the file and its size; the reader's message
 * says what is wrong ("truncated file: ..." when data runs past the end). */
void rt_bad_file(kn_err *err, const char *path) {
    if (!err) return;
    struct stat sb;
    unsigned long long size = stat(path, &sb) ? 0 : (unsigned long long)sb.st_size;
    kn_err_prefix(err, "the model file %s (%llu bytes)", path, size);
}
