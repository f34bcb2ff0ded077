/*
 * list.c — the local side of the store: listing the GGUF files of a model
 * directory with their quantization, and resolving the names `kiln rm` takes.
 */
#include "kiln/store.h"

#include "kiln/gguf.h"
#include "kiln/tensor.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define STORE_MAX_ENTRIES 65536

void store_quant_of_file(const char *path, char *out, size_t cap) {
    out[0] = 0;
    gguf_ctx *g = NULL;
    if (gguf_open(path, &g, NULL) != KN_OK) return;
    uint32_t ft;
    const char *name = NULL;
    if (gguf_get_u32(g, "general.file_type", &ft) == KN_OK) {
        if (ft == GGUF_FTYPE_ALL_F32)
            name = "F32";
        else if (strcmp(gguf_ftype_name((gguf_ftype)ft), "?"))
            name = gguf_ftype_name((gguf_ftype)ft);
    }
    if (!name) {
        uint64_t bytes[Q_TYPE_COUNT] = {0};
        int64_t nt = gguf_n_tensors(g), best = -1;
        for (int64_t i = 0; i < nt; i++) {
            const gguf_tensor_info *t = gguf_tensor(g, i);
            if (t->type < Q_TYPE_COUNT) bytes[t->type] += t->nbytes;
        }
        for (int64_t t = 0; t < Q_TYPE_COUNT; t++)
            if (bytes[t] && (best < 0 || bytes[t] > bytes[best])) best = t;
        if (best >= 0) name = q_type_name((uint32_t)best);
    }
    if (name) snprintf(out, cap, "%s", name);
    gguf_close(g);
}

/* Fills e from a directory entry; false on allocation failure. */
static bool entry_init(store_entry *e, const char *dir, const char *fname, const struct stat *st) {
    memset(e, 0, sizeof *e);
    e->size = (uint64_t)st->st_size;
    e->mtime = st->st_mtime;
    size_t flen = strlen(fname), stem = flen - 5; /* without ".gguf" */
    e->file = strdup(fname);
    if (!e->file) return false;
    size_t name_len = stem;
    bool suffix = false;
    if (store_quant_of_name(fname, e->quant, sizeof e->quant)) {
        e->quant_from_name = true;
        size_t q = strlen(e->quant);
        /* "<name>-<QUANT>" or "<name>.<QUANT>" at the end of the stem */
        if (stem > q + 1 && !strncasecmp(fname + stem - q, e->quant, q) &&
            (fname[stem - q - 1] == '-' || fname[stem - q - 1] == '.')) {
            name_len = stem - q - 1;
            suffix = true;
        }
    } else {
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s", dir, fname) < (int)sizeof path)
            store_quant_of_file(path, e->quant, sizeof e->quant);
    }
    e->name = strndup(fname, name_len);
    size_t rlen = stem + 2;
    e->ref = malloc(rlen);
    if (!e->name || !e->ref) return false;
    if (suffix)
        snprintf(e->ref, rlen, "%s:%s", e->name, e->quant);
    else
        snprintf(e->ref, rlen, "%.*s", (int)stem, fname);
    return true;
}

static void entry_free(store_entry *e) {
    free(e->name);
    free(e->file);
    free(e->ref);
}

static int entry_cmp(const void *a, const void *b) {
    return strcmp(((const store_entry *)a)->file, ((const store_entry *)b)->file);
}

kn_status store_list_dir(const char *dir, store_list *out, kn_err *err) {
    memset(out, 0, sizeof *out);
    DIR *d = opendir(dir);
    if (!d) return kn_fail(err, KN_EIO, "cannot read model directory %s: %s", dir, strerror(errno));
    size_t cap = 0;
    struct dirent *de;
    kn_status st = KN_OK;
    while ((de = readdir(d))) {
        const char *fn = de->d_name;
        size_t n = strlen(fn);
        if (fn[0] == '.' || n <= 5 || strcasecmp(fn + n - 5, ".gguf")) continue;
        char path[4096];
        struct stat sb;
        if (snprintf(path, sizeof path, "%s/%s", dir, fn) >= (int)sizeof path) continue;
        if (stat(path, &sb) || !S_ISREG(sb.st_mode)) continue;
        if (out->n == STORE_MAX_ENTRIES) {
            st = kn_fail(err, KN_ERANGE, "more than %d models in %s", STORE_MAX_ENTRIES, dir);
            goto fail;
        }
        if (out->n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            store_entry *v = realloc(out->v, nc * sizeof *v);
            if (!v) goto oom;
            out->v = v;
            cap = nc;
        }
        store_entry *e = &out->v[out->n++];
        if (!entry_init(e, dir, fn, &sb)) goto oom;
    }
    closedir(d);
    if (out->n) qsort(out->v, out->n, sizeof *out->v, entry_cmp);
    return KN_OK;
oom:
    st = kn_fail(err, KN_ENOMEM, "out of memory listing %s", dir);
fail:
    closedir(d);
    store_list_free(out);
    return st;
}

void store_list_free(store_list *l) {
    if (!l) return;
    for (size_t i = 0; i < l->n; i++)
        entry_free(&l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

void store_list_names(const store_list *l, char *buf, size_t cap) {
    if (!cap) return;
    buf[0] = 0;
    size_t used = 0;
    for (size_t i = 0; i < l->n; i++) {
        const char *sep = i ? ", " : "";
        size_t need = strlen(sep) + strlen(l->v[i].ref);
        if (used + need + 4 >= cap) {
            if (used + 4 < cap) memcpy(buf + used, "...", 4);
            return;
        }
        used += (size_t)snprintf(buf + used, cap - used, "%s%s", sep, l->v[i].ref);
    }
}

kn_status store_resolve_local(const store_list *l, const char *name, size_t *idx, kn_err *err) {
    size_t n = name ? strlen(name) : 0;
    if (n == 0) return kn_fail(err, KN_EINVAL, "empty model name");
    bool bad = name[0] == '.' || n > 1024 || strstr(name, "..");
    for (size_t i = 0; i < n && !bad; i++)
        bad = name[i] == '/' || name[i] == '\\' || (unsigned char)name[i] < 0x20 || name[i] == 0x7f;
    if (bad)
        return kn_fail(err, KN_EINVAL,
                       "bad model name '%.200s': names cannot contain '/', '\\', '..' or control characters, "
                       "nor start with '.'",
                       name);
    const char *colon = strrchr(name, ':');
    for (size_t i = 0; i < l->n; i++) {
        const store_entry *e = &l->v[i];
        bool hit;
        if (colon) {
            size_t nl = (size_t)(colon - name);
            hit = e->quant_from_name && strlen(e->name) == nl && !strncmp(e->name, name, nl) &&
                  !strcasecmp(e->quant, colon + 1) && strcmp(e->ref, e->name);
        } else {
            size_t stem = strlen(e->file) - 5;
            size_t want = n >= 5 && !strcasecmp(name + n - 5, ".gguf") ? n - 5 : n;
            hit = want == stem && !strncmp(e->file, name, stem);
        }
        if (hit) {
            *idx = i;
            return KN_OK;
        }
    }
    char names[1024];
    store_list_names(l, names, sizeof names);
    return kn_fail(err, KN_ENOTFOUND, "no model '%.200s'; the models are: %s", name, l->n ? names : "(none)");
}
