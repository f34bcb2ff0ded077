/*
 * registry.c — model table, names, instances, lazy loading, keep-alive and
 * the memory budget (see registry.h).
 */
#include "registry.h"

#include "../store/store.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define MIB (1024.0 * 1024.0)
#define MAX_DEPTH 3

typedef struct entry {
    char *id;    /* path under the directory without .gguf */
    char *name;  /* model name */
    char *quant; /* label */
    char *path;
    uint64_t size; /* at the scan (read without the lock by resolve) */
    time_t mtime;
    uint64_t seen_size; /* as the last rt_acquire saw it, when seen (under mu) */
    time_t seen_mtime;
    bool seen;
    /* the file's sha256 as last computed, and the identity of the file it was for (under mu) */
    char sha256[65];
    struct file_id {
        uint64_t dev, ino, size;
        int64_t mtime_ns, ctime_ns;
    } sha_id;
} entry;

typedef struct file_id file_id;

enum { INST_LOADING = 0, INST_READY, INST_FAILED, INST_GONE };

typedef struct inst {
    rt_model m; /* first: rt_model* <-> inst* */
    entry *e;
    file_id fid;       /* the file as it was when the load began */
    int state;
    kn_err err;        /* INST_FAILED */
    int waiters;       /* threads waiting on this load */
    kn_pool *pool;
    model *draft;      /* the draft model, when one is configured and shares the vocabulary */
    uint64_t cache_bytes; /* KV pool room for cached prefixes (what the budget allowed) */
    int pins;
    double last_used;  /* kn_now_s() */
    double keep_alive_s;
    bool pinned;       /* config pin: never unloaded */
    bool encoder;      /* an embedding (encoder) model: one instance at its trained context */
    struct inst *next;
} inst;

struct rt_registry {
    rt_opts o;
    char *aliases, *pins; /* copies */
    const tensor_ops *ops;
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* a load finished, an instance was released or unloaded */
    pthread_cond_t stop_cv;  /* wakes the cleanup thread */
    entry *e;
    size_t n;
    inst *insts;
    uint64_t budget;
    uint64_t used; /* estimates of loading and loaded instances */
    bool stopping;
    pthread_t cleaner;
    bool cleaner_started;
};

/* ---- names ------------------------------------------------------------------- */

static const char *const QUANTS[] = {
    "F32",    "F16",    "BF16",   "Q8_0",   "Q8_1",   "Q6_K",   "Q5_K_M", "Q5_K_S", "Q5_K",  "Q5_1",
    "Q5_0",   "Q4_K_M", "Q4_K_S", "Q4_K",   "Q4_1",   "Q4_0",   "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q3_K",
    "Q2_K_S", "Q2_K",   "IQ4_XS", "IQ4_NL", "IQ3_S",  "IQ3_M",  "IQ3_XS", "IQ3_XXS", "IQ2_M", "IQ2_S",
    "IQ2_XS", "IQ2_XXS", "IQ1_S", "IQ1_M",  "TQ1_0",  "TQ2_0",  "Q4_0_4_4", "MXFP4",
};

const char *rt_quant_label(const char *s, size_t n) {
    for (size_t i = 0; i < sizeof QUANTS / sizeof *QUANTS; i++)
        if (strlen(QUANTS[i]) == n && !strncasecmp(QUANTS[i], s, n)) return QUANTS[i];
    return NULL;
}

bool rt_split_file_id(const char *id, char *name, size_t name_cap, char *quant, size_t quant_cap) {
    size_t n = strlen(id);
    const char *slash = strrchr(id, '/');
    const char *base = slash ? slash + 1 : id;
    const char *label = NULL;
    size_t name_len = n;
    /* DIR/<name>/<QUANT>.gguf */
    if (slash && (label = rt_quant_label(base, strlen(base)))) name_len = (size_t)(slash - id);
    else {
        /* <name>-<QUANT> or <name>.<QUANT>: the longest label that ends the base */
        for (const char *p = base + 1; *p && !label; p++) {
            if (p[-1] != '-' && p[-1] != '.') continue;
            if ((label = rt_quant_label(p, strlen(p)))) name_len = (size_t)(p - 1 - id);
        }
    }
    if (!label || name_len == 0) {
        snprintf(name, name_cap, "%s", id);
        if (quant_cap) quant[0] = 0;
        return false;
    }
    snprintf(name, name_cap, "%.*s", (int)name_len, id);
    snprintf(quant, quant_cap, "%s", label);
    return true;
}

bool rt_parse_request(const char *req, char *name, size_t name_cap, char *quant, size_t quant_cap) {
    if (!req) return false;
    size_t n = strlen(req);
    if (n == 0 || n > RT_MAX_NAME || req[0] == '/' || strstr(req, "..")) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)req[i] < 0x20 || (unsigned char)req[i] == 0x7f || req[i] == '\\') return false;
    const char *colon = strrchr(req, ':');
    size_t nl = colon ? (size_t)(colon - req) : n;
    if (nl == 0 || nl >= name_cap) return false;
    memcpy(name, req, nl);
    name[nl] = 0;
    if (colon) {
        size_t ql = n - nl - 1;
        if (ql == 0 || ql >= quant_cap) return false;
        for (size_t i = 0; i < ql; i++) quant[i] = (char)toupper((unsigned char)colon[1 + i]);
        quant[ql] = 0;
    } else if (quant_cap) {
        quant[0] = 0;
    }
    return true;
}

void rt_instance_key(const char *id, const char *task, int n_ctx, model_kv_type kv, int threads, char *buf,
                     size_t cap) {
    snprintf(buf, cap, "%s|%s|%d|%s|%d", id, task, n_ctx, model_kv_type_name(kv), threads);
}

/* ---- scan ------------------------------------------------------------------ */

static kn_status add_entry(rt_registry *r, size_t *cap, const char *path, const char *rel, kn_err *err) {
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

static kn_status scan(rt_registry *r, size_t *cap, const char *dir, const char *rel, int depth, kn_err *err) {
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
            if (depth + 1 < MAX_DEPTH) st = scan(r, cap, path, r2, depth + 1, err);
        } else {
            st = add_entry(r, cap, path, r2, err);
        }
    }
    closedir(d);
    return st;
}

static int cmp_entry(const void *a, const void *b) {
    const entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->quant, y->quant);
}

/* ---- memory ----------------------------------------------------------------- */

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

static uint64_t default_budget(const char **src) {
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

static uint64_t rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long long size = 0, res = 0;
    if (fscanf(f, "%llu %llu", &size, &res) != 2) res = 0;
    fclose(f);
    return res * (uint64_t)sysconf(_SC_PAGESIZE);
}

typedef struct shape {
    int64_t n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab, ctx_train;
    uint64_t weights;
    bool encoder; /* general.architecture is an encoder kiln serves (bert) */
} shape;

static int64_t meta_int(const gguf_ctx *g, const char *arch, const char *suffix, int64_t dflt) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int64_t v;
    return gguf_get_i64(g, key, &v) == KN_OK ? v : dflt;
}

static kn_status read_shape(const char *path, shape *s, kn_err *err) {
    gguf_ctx *g = NULL;
    kn_status st = gguf_open(path, &g, err);
    if (st != KN_OK) return st;
    gguf_str a = {0};
    char arch[64] = "llama";
    if (gguf_get_str(g, "general.architecture", &a) == KN_OK && a.len < sizeof arch)
        snprintf(arch, sizeof arch, "%.*s", (int)a.len, a.data);
    memset(s, 0, sizeof *s);
    s->encoder = !strcmp(arch, "bert");
    s->n_layer = meta_int(g, arch, "block_count", 0);
    s->n_embd = meta_int(g, arch, "embedding_length", 0);
    s->n_ff = meta_int(g, arch, "feed_forward_length", 4 * s->n_embd);
    s->n_head = meta_int(g, arch, "attention.head_count", 1);
    s->n_head_kv = meta_int(g, arch, "attention.head_count_kv", s->n_head);
    s->ctx_train = meta_int(g, arch, "context_length", 2048);
    s->head_dim = s->n_head > 0 ? meta_int(g, arch, "attention.key_length", s->n_embd / s->n_head) : 0;
    gguf_type et;
    uint64_t nv = 0;
    const void *data;
    int64_t ki = gguf_find_key(g, "tokenizer.ggml.tokens");
    if (ki >= 0 && gguf_kv_get_arr(g, ki, &et, &nv, &data) == KN_OK) s->n_vocab = (int64_t)nv;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) s->weights += gguf_tensor(g, i)->nbytes;
    gguf_close(g);
    if (s->n_layer <= 0 || s->n_embd <= 0 || s->n_head <= 0 || s->n_head_kv <= 0 || s->ctx_train <= 0)
        return kn_fail(err, KN_EFORMAT, "the model's hyper-parameters are missing or invalid");
    if (s->n_layer > 4096 || s->n_embd > (1 << 20) || s->n_ff > (1 << 22) || s->n_vocab > (1 << 24))
        return kn_fail(err, KN_EFORMAT, "the model's hyper-parameters are out of range");
    return KN_OK;
}

static double kv_bytes_per_token(const shape *s, model_kv_type kv) {
    double elem = kv == MODEL_KV_Q8_0 ? 38.0 / 32.0 : 2.0; /* Q8P rows */
    return 2.0 * (double)s->n_layer * (double)s->n_head_kv * (double)s->head_dim * elem;
}

/* Bytes a load will take: weights, KV, forward scratch, engine buffers. */
/* cache_bytes: KV pool room for cached prefixes beyond the slots' own. */
static uint64_t estimate(const rt_registry *r, const shape *s, int n_ctx, uint64_t cache_bytes) {
    const rt_opts *o = &r->o;
    if (s->encoder) {
        /* no KV, logits or draft: the forward scratch for the token budget
         * (or one whole input), each head's attention scores over an input,
         * and the engine's pooled vectors and per-input tables */
        double B = o->max_batch > n_ctx ? o->max_batch : n_ctx;
        double E = (double)s->n_embd, F = (double)s->n_ff, Hq = (double)s->n_head * (double)s->head_dim;
        double scratch = 4.0 * B * (4 * E + 3 * Hq + 2 * F + 64) + 4.0 * (double)s->n_head * n_ctx * n_ctx;
        double engine = 4.0 * B * E + 32.0 * B + 64.0 * (double)s->n_vocab;
        (void)cache_bytes;
        return (uint64_t)((double)s->weights + scratch + engine);
    }
    double B = o->max_batch > o->n_slots ? o->max_batch : o->n_slots;
    double E = (double)s->n_embd, F = (double)s->n_ff, Hq = (double)s->n_head * (double)s->head_dim;
    double Hkv = (double)s->n_head_kv * (double)s->head_dim, W = E > Hq ? E : Hq;
    if (F > W) W = F;
    double scratch = 4.0 * B * (E + W + 2 * Hq + 2 * Hkv + 2 * F + 64) + 4.0 * B * (E > F ? E : F);
    double engine = 4.0 * (double)o->n_slots * (double)s->n_vocab + 4.0 * B * E + 64.0 * (double)s->n_vocab;
    int bs = o->block_size > 0 ? o->block_size : 32;
    double block = kv_bytes_per_token(s, o->kv_type) * bs;
    double kv = block * (double)(o->kv_blocks > 0 ? o->kv_blocks
                                                  : kv_pool_blocks(o->n_slots, n_ctx, bs, (uint64_t)block, cache_bytes));
    double logits = 4.0 * (double)o->n_slots * (double)o->spec_max * (double)s->n_vocab;
    double draft = 0;
    if (o->draft_path && o->spec_max > 0) {
        struct stat st;
        if (stat(o->draft_path, &st) == 0) draft = (double)st.st_size * 1.1 + (double)o->n_slots * n_ctx * 1024.0;
    }
    return (uint64_t)((double)s->weights + kv + scratch + engine + logits + draft);
}

/* ---- instances ----------------------------------------------------------------- */

static void inst_free(inst *in) {
    if (!in) return;
    eng_sched_destroy(in->m.sched);
    model_destroy(in->draft);
    tok_chat_destroy(in->m.chat);
    tok_vocab_destroy(in->m.vocab);
    model_destroy(in->m.m);
    kn_pool_destroy(in->pool);
    free(in);
}

static bool in_list(const char *list, const char *name) {
    if (!list) return false;
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *c = strchr(p, ',');
        size_t l = c ? (size_t)(c - p) : strlen(p);
        while (l && *p == ' ') p++, l--;
        while (l && p[l - 1] == ' ') l--;
        if (l == n && !strncmp(p, name, n)) return true;
        if (!c) break;
        p = c + 1;
    }
    return false;
}

static void unlink_inst(rt_registry *r, inst *in) {
    for (inst **pp = &r->insts; *pp; pp = &(*pp)->next)
        if (*pp == in) {
            *pp = in->next;
            in->next = NULL;
            return;
        }
}

/* Unloads an instance that was unlinked (no lock held). */
static void unload(rt_registry *r, inst *in, const char *why) {
    KN_INFO("unloading %s:%s (%s)", in->e->name, in->e->quant, why);
    const char *lv[1] = {in->e->id};
    inst_free(in);
    if (r->o.metrics) met_inc(met_get(r->o.metrics->unloads, lv));
}

/* The identity of a file: a replaced file (new inode) or one rewritten in
 * place (ctime moves on every write, and cannot be set back like mtime)
 * differs even when its size and mtime are the same. */
static bool file_id_of(const char *path, file_id *id) {
    struct stat sb;
    memset(id, 0, sizeof *id);
    if (stat(path, &sb)) return false;
    *id = (file_id){.dev = (uint64_t)sb.st_dev, .ino = (uint64_t)sb.st_ino, .size = (uint64_t)sb.st_size,
                    .mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec,
                    .ctime_ns = (int64_t)sb.st_ctim.tv_sec * 1000000000 + sb.st_ctim.tv_nsec};
    return true;
}

static bool file_id_eq(const file_id *a, const file_id *b) {
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->mtime_ns == b->mtime_ns &&
           a->ctime_ns == b->ctime_ns;
}

/* The file's sha256 into out, computed once per identity (file_id) of the
 * file; "" when it cannot be read or is no longer the file `want` (the one
 * that was loaded). */
static void file_sha256(rt_registry *r, entry *e, const file_id *want, char out[65]) {
    file_id id;
    out[0] = 0;
    if (!file_id_of(e->path, &id) || !file_id_eq(&id, want)) {
        KN_WARN("%s: the file changed after it was loaded; its answers are not cached (no digest)", e->id);
        return;
    }
    pthread_mutex_lock(&r->mu);
    if (e->sha256[0] && file_id_eq(&e->sha_id, &id)) memcpy(out, e->sha256, 65);
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
    if (!file_id_of(e->path, &after) || !file_id_eq(&after, &id)) {
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
static void bad_file(kn_err *err, const char *path) {
    if (!err) return;
    struct stat sb;
    unsigned long long size = stat(path, &sb) ? 0 : (unsigned long long)sb.st_size;
    kn_err_prefix(err, "the model file %s (%llu bytes)", path, size);
}

static kn_status load(rt_registry *r, inst *in, kn_err *err) {
    const rt_opts *o = &r->o;
    entry *e = in->e;
    rt_model *m = &in->m;
    double t0 = kn_now_s();
    uint64_t rss0 = rss_bytes();
    kn_status st;
    model_load_opts lo = {.mmap_weights = o->mmap_weights};
    KN_INFO("loading %s (%s:%s) from %s (context %d%s, estimate %.1f MiB)", e->id, e->name, e->quant, e->path, m->n_ctx,
            m->ctx_reduced ? ", reduced to fit memory" : "", (double)m->est_bytes / MIB);
    if (!file_id_of(e->path, &in->fid))
        return kn_fail(err, KN_EIO, "cannot open the model file %s: %s", e->path, strerror(errno));
    if ((st = model_load(e->path, &lo, &m->m, err)) != KN_OK) {
        if (st == KN_EFORMAT || st == KN_EIO || st == KN_ENOTFOUND) bad_file(err, e->path);
        return st;
    }
    if ((st = tok_vocab_load(m->m->gguf, &m->vocab, err)) != KN_OK) {
        kn_err_prefix(err, "tokenizer");
        return st;
    }
    if (o->hash_files) file_sha256(r, e, &in->fid, m->sha256);
    kn_err cerr = {0};
    const bool enc = model_is_encoder(m->m);
    if (enc) {
        snprintf(m->chat_err, sizeof m->chat_err, "%s:%s is an embedding model", e->name, e->quant);
    } else if (tok_chat_create(m->m->gguf, m->vocab, &m->chat, &m->chat_source, &cerr) != KN_OK) {
        snprintf(m->chat_err, sizeof m->chat_err, "%s", cerr.msg);
        KN_WARN("%s: no usable chat template (%s); chat requests will fail", e->id, cerr.msg);
    }
    if (!(in->pool = kn_pool_create(o->threads))) return kn_fail(err, KN_ENOMEM, "cannot start %d threads", o->threads);
    if (o->draft_path && o->spec_max > 0 && !enc) {
        kn_err derr = {0};
        if (model_load(o->draft_path, &lo, &in->draft, &derr) != KN_OK) {
            KN_WARN("%s: cannot load the draft model %s (%s); draft-model speculation falls back to prompt lookup",
                    e->id, o->draft_path, derr.msg);
        } else if (in->draft->hp.n_vocab != m->m->hp.n_vocab) {
            KN_WARN("%s: the draft model %s has %d tokens in its vocabulary, this model %d; it is not used for it",
                    e->id, o->draft_path, in->draft->hp.n_vocab, m->m->hp.n_vocab);
            model_destroy(in->draft);
            in->draft = NULL;
        }
    }
    eng_sched_opts so = {.n_slots = o->n_slots, .n_ctx = m->n_ctx, .max_batch = o->max_batch,
                         .queue_len = o->queue_len, .queue_timeout_s = o->queue_timeout_s, .kv_type = o->kv_type,
                         .batch_wait_ms = o->batch_wait_ms, .block_size = o->block_size, .kv_blocks = o->kv_blocks,
                         .cache_bytes = in->cache_bytes, .salt = XXH3_64bits(e->path, strlen(e->path)),
                         .spec = o->spec, .spec_max = o->spec_max, .draft = in->draft};
    const char *lv[1] = {e->id};
    if (o->metrics) {
        const rt_metrics *mf = o->metrics;
        so.metrics = (eng_metrics){.ttft = met_get(mf->ttft, lv), .itl = met_get(mf->itl, lv),
                                   .queue_wait = met_get(mf->queue_wait, lv), .prefill = met_get(mf->prefill, lv),
                                   .batch_size = met_get(mf->batch_size, lv),
                                   .prompt_tokens = met_get(mf->prompt_tokens, lv),
                                   .gen_tokens = met_get(mf->gen_tokens, lv),
                                   .prefix_queried = met_get(mf->prefix_queried, lv),
                                   .prefix_hit = met_get(mf->prefix_hit, lv),
                                   .spec_draft = met_get(mf->spec_draft, lv),
                                   .spec_accepted = met_get(mf->spec_accepted, lv),
                                   .preemptions = met_get(mf->preemptions, lv), .ttft_window = mf->ttft_window,
                                   .embed_batch_requests = met_get(mf->embed_batch_requests, lv),
                                   .embed_batch_tokens = met_get(mf->embed_batch_tokens, lv)};
    }
    if ((st = eng_sched_create(m->m, m->vocab, r->ops, in->pool, &so, &m->sched, err)) != KN_OK) return st;
    m->load_s = kn_now_s() - t0;
    m->loaded_at = time(NULL);
    int64_t grew = (int64_t)rss_bytes() - (int64_t)rss0;
    int64_t diff = grew - (int64_t)m->est_bytes;
    if (o->metrics) met_set(met_get(o->metrics->estimate_error, lv), (double)diff);
    const model_hparams *hp = &m->m->hp;
    if (enc) {
        static const char *const POOL[] = {"none (mean)", "mean", "cls", "last"};
        KN_INFO("loaded %s:%s in %.2f s: %s encoder, %d layers, dim %d, vocab %d, pooling %s; context %d, "
                "micro-batches of up to %d tokens (wait %d ms); memory: estimate %.1f MiB, RSS grew %.1f MiB",
                e->name, e->quant, m->load_s, hp->arch_name, hp->n_layer, hp->n_embd, hp->n_vocab,
                POOL[(unsigned)hp->pooling <= MODEL_POOL_LAST ? hp->pooling : 0], m->n_ctx, o->max_batch,
                o->batch_wait_ms, (double)m->est_bytes / MIB, (double)grew / MIB);
        return KN_OK;
    }
    KN_INFO("loaded %s:%s in %.2f s: %s, %d layers, dim %d, vocab %d; %d slots x %d ctx (KV %s); chat template: %s; "
            "memory: estimate %.1f MiB, RSS grew %.1f MiB (the KV is touched as it fills)%s",
            e->name, e->quant, m->load_s, hp->arch_name, hp->n_layer, hp->n_embd, hp->n_vocab, o->n_slots,
            m->n_ctx, model_kv_type_name(o->kv_type), m->chat ? (m->chat_source ? m->chat_source : "model") : "none",
            (double)m->est_bytes / MIB, (double)grew / MIB, in->draft ? "; with a draft model" : "");
    return KN_OK;
}

/* Frees memory for `need` bytes by unloading idle instances, least recently
 * used first. Called with the lock held; returns the victims (unlinked) for
 * the caller to unload after unlocking. */
static inst *evict_for(rt_registry *r, uint64_t need) {
    inst *victims = NULL;
    while (r->used + need > r->budget) {
        inst *lru = NULL;
        for (inst *in = r->insts; in; in = in->next)
            if (in->state == INST_READY && in->pins == 0 && !in->pinned &&
                (!lru || in->last_used < lru->last_used))
                lru = in;
        if (!lru) break;
        unlink_inst(r, lru);
        lru->state = INST_GONE;
        r->used -= lru->m.est_bytes;
        lru->next = victims;
        victims = lru;
    }
    return victims;
}

static uint64_t busy_bytes(const rt_registry *r) {
    uint64_t b = 0;
    for (inst *in = r->insts; in; in = in->next)
        if (in->state == INST_LOADING || in->pins > 0 || in->pinned) b += in->m.est_bytes;
    return b;
}

static void unload_list(rt_registry *r, inst *v, const char *why) {
    while (v) {
        inst *next = v->next;
        unload(r, v, why);
        v = next;
    }
}

/* ---- API ---------------------------------------------------------------------- */

static void *cleaner_main(void *arg);

kn_status rt_registry_create(const char *dir, const char *file, const rt_opts *o, const tensor_ops *ops,
                             rt_registry **out, kn_err *err) {
    *out = NULL;
    rt_registry *r = calloc(1, sizeof *r);
    if (!r) return kn_fail(err, KN_ENOMEM, "out of memory");
    r->o = *o;
    if (r->o.load_wait_s <= 0) r->o.load_wait_s = 30;
    r->ops = ops;
    r->aliases = o->aliases ? strdup(o->aliases) : NULL;
    r->pins = o->pins ? strdup(o->pins) : NULL;
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_cond_init(&r->stop_cv, &ca);
    pthread_condattr_destroy(&ca);
    size_t cap = 0;
    kn_status st = KN_OK;
    if (file) {
        struct stat sb;
        const char *base = strrchr(file, '/');
        base = base ? base + 1 : file;
        size_t bl = strlen(base);
        if (stat(file, &sb) != 0 || !S_ISREG(sb.st_mode)) st = kn_fail(err, KN_EIO, "cannot open model file %s", file);
        else if (bl <= 5 || strcmp(base + bl - 5, ".gguf") != 0)
            st = kn_fail(err, KN_EINVAL, "%s: a model file name must end in .gguf", file);
        else st = add_entry(r, &cap, file, base, err);
    } else {
        st = scan(r, &cap, dir, "", 0, err);
    }
    if (st != KN_OK) {
        rt_registry_destroy(r);
        return st;
    }
    qsort(r->e, r->n, sizeof *r->e, cmp_entry);
    const char *src = "--memory-budget";
    r->budget = o->memory_budget ? o->memory_budget : default_budget(&src);
    KN_INFO("model directory: %zu files; memory budget %.0f MiB (%s); keep-alive %s, cleanup every %.0f s", r->n,
            (double)r->budget / MIB, src, o->keep_alive_s < 0 ? "forever" : "set", o->cleanup_interval_s);
    if (o->cleanup_interval_s > 0) {
        if (pthread_create(&r->cleaner, NULL, cleaner_main, r) != 0) {
            rt_registry_destroy(r);
            return kn_fail(err, KN_ENOMEM, "cannot start the cleanup thread");
        }
        r->cleaner_started = true;
    }
    *out = r;
    return KN_OK;
}

void rt_registry_destroy(rt_registry *r) {
    if (!r) return;
    if (r->cleaner_started) {
        pthread_mutex_lock(&r->mu);
        r->stopping = true;
        pthread_cond_broadcast(&r->stop_cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->cleaner, NULL);
    }
    while (r->insts) {
        inst *in = r->insts;
        r->insts = in->next;
        if (in->state == INST_READY) unload(r, in, "shutting down");
        else inst_free(in);
    }
    for (size_t i = 0; i < r->n; i++) {
        free(r->e[i].id), free(r->e[i].name), free(r->e[i].quant), free(r->e[i].path);
    }
    free(r->e);
    free(r->aliases);
    free(r->pins);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    pthread_cond_destroy(&r->stop_cv);
    free(r);
}

size_t rt_registry_count(const rt_registry *r) { return r->n; }
uint64_t rt_registry_budget(const rt_registry *r) { return r->budget; }

void rt_registry_entry(rt_registry *r, size_t i, rt_entry_info *info) {
    entry *e = &r->e[i];
    pthread_mutex_lock(&r->mu);
    bool loaded = false;
    for (inst *in = r->insts; in; in = in->next) loaded |= in->e == e && in->state == INST_READY;
    *info = (rt_entry_info){.name = e->name, .quant = e->quant, .id = e->id, .path = e->path,
                            .size = e->seen ? e->seen_size : e->size, .mtime = e->seen ? e->seen_mtime : e->mtime,
                            .loaded = loaded};
    pthread_mutex_unlock(&r->mu);
}

void rt_registry_names(const rt_registry *r, char *buf, size_t cap) {
    size_t off = 0;
    if (cap) buf[0] = 0;
    for (size_t i = 0; i < r->n && cap; i++) {
        int k = snprintf(buf + off, cap - off, "%s%s:%s", i ? ", " : "", r->e[i].name, r->e[i].quant);
        if (k < 0 || (size_t)k >= cap - off) {
            if (cap >= 4) strcpy(buf + cap - 4, "...");
            return;
        }
        off += (size_t)k;
    }
}

/* Looks an alias up: copies its target into out. */
static bool alias_of(const char *list, const char *name, char *out, size_t cap) {
    if (!list) return false;
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *c = strchr(p, ',');
        size_t l = c ? (size_t)(c - p) : strlen(p);
        const char *eq = memchr(p, '=', l);
        if (eq && (size_t)(eq - p) == n && !strncmp(p, name, n)) {
            snprintf(out, cap, "%.*s", (int)(l - n - 1), eq + 1);
            return true;
        }
        if (!c) break;
        p = c + 1;
    }
    return false;
}

static entry *resolve(const rt_registry *r, const char *req, kn_err *err) {
    char target[RT_MAX_NAME + 1];
    if (req && alias_of(r->aliases, req, target, sizeof target)) req = target;
    for (size_t i = 0; req && i < r->n; i++)
        if (!strcmp(r->e[i].id, req)) return &r->e[i];
    char name[RT_MAX_NAME + 1], quant[32];
    if (!rt_parse_request(req, name, sizeof name, quant, sizeof quant)) {
        kn_fail(err, KN_ENOTFOUND, "model name '%.128s' is not valid (expected name or name:QUANT)", req ? req : "");
        return NULL;
    }
    entry *pick = NULL, *q4km = NULL;
    char have[256] = "";
    size_t hl = 0;
    for (size_t i = 0; i < r->n; i++) {
        entry *e = &r->e[i];
        if (strcmp(e->name, name)) continue;
        int k = snprintf(have + hl, sizeof have - hl, "%s%s", hl ? ", " : "", e->quant);
        if (k > 0 && (size_t)k < sizeof have - hl) hl += (size_t)k;
        if (quant[0]) {
            if (!strcasecmp(e->quant, quant)) return e;
            continue;
        }
        if (!strcmp(e->quant, "Q4_K_M")) q4km = e;
        if (!pick || e->size < pick->size) pick = e;
    }
    if (!quant[0] && (q4km || pick)) return q4km ? q4km : pick;
    if (hl) {
        kn_fail(err, KN_ENOTFOUND, "model '%s' has no quantization %s; available: %s", name, quant, have);
        return NULL;
    }
    char names[400];
    rt_registry_names(r, names, sizeof names);
    kn_fail(err, KN_ENOTFOUND, "model '%.128s' not found; available: %s", req, names[0] ? names : "(none)");
    return NULL;
}

bool rt_registry_has(rt_registry *r, const char *name) { return resolve(r, name, NULL) != NULL; }

kn_status rt_lookup(rt_registry *r, const char *name, rt_entry_info *info, kn_err *err) {
    entry *e = resolve(r, name, err);
    if (!e) return KN_ENOTFOUND;
    rt_registry_entry(r, (size_t)(e - r->e), info);
    return KN_OK;
}

static inst *find_inst(rt_registry *r, const entry *e, int n_ctx) {
    inst *best = NULL;
    for (inst *in = r->insts; in; in = in->next) {
        if (in->e != e || (in->state != INST_READY && in->state != INST_LOADING)) continue;
        if (n_ctx > 0 && in->m.n_ctx < n_ctx && !in->encoder) continue; /* an encoder's context is its model's */
        if (!best || in->m.n_ctx < best->m.n_ctx) best = in; /* the smallest that fits */
    }
    return best;
}

static void touch(rt_registry *r, inst *in, const rt_acquire_opts *ao) {
    if (!ao->touch) return;
    in->last_used = kn_now_s();
    if (!isnan(ao->keep_alive_s)) in->keep_alive_s = ao->keep_alive_s;
    else if (in->keep_alive_s == 0) in->keep_alive_s = r->o.keep_alive_s; /* a new request lifts a pending unload */
}

/* Context for a new instance: explicit (request or server) or automatic. */
static kn_status choose_ctx(rt_registry *r, const shape *sh, int req_ctx, int *n_ctx, bool *reduced,
                            uint64_t *est, kn_err *err) {
    *reduced = false;
    if (sh->encoder) {
        /* its positions end at the trained context; a request cannot ask for more */
        int train = (int)(sh->ctx_train > (1 << 20) ? (1 << 20) : sh->ctx_train);
        *n_ctx = r->o.n_ctx > 0 && r->o.n_ctx < train ? r->o.n_ctx : train;
        *est = estimate(r, sh, *n_ctx, 0);
        if (*est > r->budget)
            return kn_fail(err, KN_ERANGE, "the embedding model needs %.0f MiB, more than the memory budget of %.0f MiB",
                           (double)*est / MIB, (double)r->budget / MIB);
        return KN_OK;
    }
    int explicit_ctx = req_ctx > 0 ? req_ctx : r->o.n_ctx;
    uint64_t avail = r->budget > busy_bytes(r) ? r->budget - busy_bytes(r) : 0;
    if (explicit_ctx > 0) {
        *n_ctx = explicit_ctx;
        *est = estimate(r, sh, *n_ctx, 0);
        if (*est > r->budget)
            return kn_fail(err, KN_ERANGE,
                           "a context of %d tokens x %d slots needs %.0f MiB with the weights, more than the memory "
                           "budget of %.0f MiB; lower the context or the slots",
                           *n_ctx, r->o.n_slots, (double)*est / MIB, (double)r->budget / MIB);
        return KN_OK;
    }
    int ctx = (int)(sh->ctx_train > (1 << 24) ? (1 << 24) : sh->ctx_train);
    int floor_ctx = ctx < 2048 ? ctx : 2048;
    *n_ctx = ctx;
    *est = estimate(r, sh, ctx, 0);
    if (*est <= avail) return KN_OK;
    int p = 1;
    while (p * 2 <= ctx) p *= 2;
    if (p == ctx) p /= 2;
    for (; p >= floor_ctx; p /= 2) {
        *n_ctx = p;
        *est = estimate(r, sh, p, 0);
        if (*est <= avail) break;
    }
    if (*n_ctx < floor_ctx) {
        *n_ctx = floor_ctx;
        *est = estimate(r, sh, floor_ctx, 0);
    }
    *reduced = *n_ctx < ctx;
    if (*reduced)
        KN_WARN("context of the new instance reduced from %d to %d tokens: %d slots of KV at %.0f bytes a token "
                "must fit the %.0f MiB left of the budget",
                ctx, *n_ctx, r->o.n_slots, kv_bytes_per_token(sh, r->o.kv_type), (double)avail / MIB);
    return KN_OK;
}

kn_status rt_acquire(rt_registry *r, const char *name, const rt_acquire_opts *ao_in, rt_model **out, kn_err *err) {
    *out = NULL;
    rt_acquire_opts ao = ao_in ? *ao_in : (rt_acquire_opts){.n_ctx = 0, .keep_alive_s = NAN, .touch = true};
    entry *e = resolve(r, name, err);
    if (!e) return KN_ENOTFOUND;
    file_id now_id;
    bool have_id = file_id_of(e->path, &now_id); /* one stat per request: a replaced file is reloaded */
    pthread_mutex_lock(&r->mu);
    if (have_id) {
        e->seen = true;
        e->seen_size = now_id.size;
        e->seen_mtime = (time_t)(now_id.mtime_ns / 1000000000);
    }
    for (;;) {
        inst *in = find_inst(r, e, ao.n_ctx);
        if (in && in->state == INST_READY && have_id && !file_id_eq(&in->fid, &now_id) && in->pins == 0 &&
            !in->pinned) {
            /* the file changed on disk since this instance loaded it, and no
             * request uses it: unload it and load the file as it is now (an
             * instance in use keeps serving what it loaded; a pinned one too) */
            unlink_inst(r, in);
            in->state = INST_GONE;
            r->used -= in->m.est_bytes;
            pthread_cond_broadcast(&r->cv);
            pthread_mutex_unlock(&r->mu);
            unload(r, in, "the file changed on disk");
            pthread_mutex_lock(&r->mu);
            continue;
        }
        if (in && in->state == INST_READY) { /* fast path */
            in->pins++;
            touch(r, in, &ao);
            pthread_mutex_unlock(&r->mu);
            *out = &in->m;
            return KN_OK;
        }
        if (in) { /* loading: wait for that one load and share its outcome */
            in->waiters++;
            while (in->state == INST_LOADING) pthread_cond_wait(&r->cv, &r->mu);
            in->waiters--;
            if (in->state == INST_FAILED) {
                if (err) *err = in->err;
                kn_status st = in->err.status;
                bool last = in->waiters == 0;
                pthread_mutex_unlock(&r->mu);
                if (last) free(in);
                return st;
            }
            continue; /* READY (or unloaded meanwhile): look again */
        }
        break;
    }
    /* not loaded: this thread loads it */
    shape sh;
    kn_err lerr = {0};
    pthread_mutex_unlock(&r->mu);
    kn_status st = read_shape(e->path, &sh, &lerr);
    if (st == KN_EFORMAT || st == KN_EIO) bad_file(&lerr, e->path);
    pthread_mutex_lock(&r->mu);
    inst *in = find_inst(r, e, ao.n_ctx); /* someone may have started meanwhile */
    if (in) {
        pthread_mutex_unlock(&r->mu);
        return rt_acquire(r, name, ao_in, out, err);
    }
    in = calloc(1, sizeof *in);
    if (!in) {
        pthread_mutex_unlock(&r->mu);
        return kn_fail(err, KN_ENOMEM, "out of memory");
    }
    in->e = e;
    in->m.name = e->name;
    in->m.quant = e->quant;
    in->m.id = e->id;
    in->m.path = e->path;
    in->state = INST_LOADING;
    in->pinned = in_list(r->pins, e->id) || in_list(r->pins, e->name);
    in->keep_alive_s = r->o.keep_alive_s;
    in->encoder = st == KN_OK && sh.encoder;
    bool reduced = false;
    uint64_t est = 0;
    int n_ctx = 0;
    if (st == KN_OK) st = choose_ctx(r, &sh, ao.n_ctx, &n_ctx, &reduced, &est, &lerr);
    in->m.n_ctx = n_ctx;
    in->m.ctx_reduced = reduced;
    in->m.est_bytes = est;
    in->next = r->insts;
    r->insts = in;
    if (st == KN_OK) {
        /* make room: evict idle instances, then wait a bounded time for busy ones */
        double deadline = kn_now_s() + r->o.load_wait_s;
        for (;;) {
            inst *v = evict_for(r, est);
            if (v) {
                pthread_mutex_unlock(&r->mu);
                unload_list(r, v, "making room under the memory budget");
                pthread_mutex_lock(&r->mu);
                continue;
            }
            if (r->used + est <= r->budget) break;
            double now = kn_now_s();
            if (now >= deadline) {
                st = kn_fail(&lerr, KN_EBUSY,
                             "not enough memory to load %s:%s: it needs about %.0f MiB, the budget is %.0f MiB and "
                             "%.0f MiB are in use by models serving requests; retry later",
                             e->name, e->quant, (double)est / MIB, (double)r->budget / MIB, (double)r->used / MIB);
                break;
            }
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            double wait = deadline - now < 0.2 ? deadline - now : 0.2;
            ts.tv_nsec += (long)(wait * 1e9);
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        }
    }
    bool reserved = st == KN_OK;
    if (reserved) {
        /* the prefix cache's extra KV room takes only what the budget has
         * left, never a context or another model's place */
        uint64_t left = r->budget - r->used - est;
        in->cache_bytes = r->o.kv_blocks > 0 || in->encoder ? 0 : (r->o.cache_bytes < left ? r->o.cache_bytes : left);
        uint64_t with_cache = estimate(r, &sh, n_ctx, in->cache_bytes);
        if (with_cache > est && r->used + with_cache <= r->budget) est = with_cache;
        else in->cache_bytes = 0;
        in->m.est_bytes = est;
        r->used += est;
    }
    pthread_mutex_unlock(&r->mu);
    if (st == KN_OK) st = load(r, in, &lerr);
    if (st == KN_ENOTFOUND) st = KN_EFORMAT; /* a key or tensor missing from the file: a bad file, not a bad name */
    if (st != KN_OK && st != KN_EBUSY && st != KN_ERANGE) kn_err_prefix(&lerr, "%s", e->id);
    if (st != KN_OK) { /* free what the failed load built, before waiters can see the failure */
        eng_sched_destroy(in->m.sched);
    model_destroy(in->draft);
        tok_chat_destroy(in->m.chat);
        tok_vocab_destroy(in->m.vocab);
        model_destroy(in->m.m);
        kn_pool_destroy(in->pool);
        in->m.sched = NULL, in->m.chat = NULL, in->m.vocab = NULL, in->m.m = NULL, in->pool = NULL;
    }
    const char *lv[1] = {e->id};
    pthread_mutex_lock(&r->mu);
    if (st == KN_OK) {
        in->state = INST_READY;
        in->pins = 1;
        in->last_used = kn_now_s();
        touch(r, in, &ao);
        *out = &in->m;
    } else {
        if (reserved) r->used -= est;
        unlink_inst(r, in);
        in->state = INST_FAILED;
        in->err = lerr;
        in->err.status = st;
    }
    pthread_cond_broadcast(&r->cv);
    bool free_failed = st != KN_OK && in->waiters == 0;
    pthread_mutex_unlock(&r->mu);
    if (r->o.metrics) met_inc(met_get(st == KN_OK ? r->o.metrics->loads : r->o.metrics->load_failures, lv));
    if (st != KN_OK) {
        KN_ERROR("cannot load %s:%s: %s", e->name, e->quant, lerr.msg);
        if (err) {
            *err = lerr;
            err->status = st;
        }
        if (free_failed) free(in);
    }
    return st;
}

void rt_release(rt_registry *r, rt_model *m) {
    if (!m) return;
    inst *in = (inst *)m;
    pthread_mutex_lock(&r->mu);
    if (in->pins > 0) in->pins--;
    in->last_used = kn_now_s();
    bool now = in->pins == 0 && in->keep_alive_s == 0 && !in->pinned && in->state == INST_READY;
    if (now) {
        unlink_inst(r, in);
        in->state = INST_GONE;
        r->used -= in->m.est_bytes;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (now) unload(r, in, "keep_alive 0");
}

void rt_foreach_loaded(rt_registry *r, void (*fn)(void *arg, const rt_loaded_info *info), void *arg) {
    pthread_mutex_lock(&r->mu);
    size_t n = 0;
    for (inst *in = r->insts; in; in = in->next) n += in->state == INST_READY;
    inst **list = n ? malloc(n * sizeof *list) : NULL;
    rt_loaded_info *infos = n ? malloc(n * sizeof *infos) : NULL;
    size_t k = 0;
    double now = kn_now_s();
    time_t wall = time(NULL);
    for (inst *in = r->insts; in && list && infos; in = in->next) {
        if (in->state != INST_READY) continue;
        bool never = in->pinned || in->keep_alive_s < 0;
        double left = never ? -1 : in->keep_alive_s - (in->pins > 0 ? 0 : now - in->last_used);
        if (!never && left < 0) left = 0;
        infos[k] = (rt_loaded_info){.m = &in->m, .in_flight = in->pins, .expires_in_s = left,
                                    .expires_at = never ? 0 : wall + (time_t)ceil(left), .pinned = in->pinned};
        in->pins++;
        list[k++] = in;
    }
    pthread_mutex_unlock(&r->mu);
    for (size_t i = 0; i < k; i++) fn(arg, &infos[i]);
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < k; i++) list[i]->pins--;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    free(list);
    free(infos);
}

int rt_cleanup(rt_registry *r) {
    pthread_mutex_lock(&r->mu);
    double now = kn_now_s();
    inst *victims = NULL;
    for (inst **pp = &r->insts; *pp;) {
        inst *in = *pp;
        if (in->state == INST_READY && in->pins == 0 && !in->pinned && in->keep_alive_s >= 0 &&
            now - in->last_used >= in->keep_alive_s) {
            *pp = in->next;
            in->state = INST_GONE;
            r->used -= in->m.est_bytes;
            in->next = victims;
            victims = in;
            continue;
        }
        pp = &in->next;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    int n = 0;
    while (victims) {
        inst *next = victims->next;
        char why[96];
        snprintf(why, sizeof why, "idle for %.0f s, keep-alive %.0f s", now - victims->last_used,
                 victims->keep_alive_s);
        unload(r, victims, why);
        n++;
        victims = next;
    }
    return n;
}

static void *cleaner_main(void *arg) {
    rt_registry *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        double iv = r->o.cleanup_interval_s;
        ts.tv_sec += (time_t)iv;
        ts.tv_nsec += (long)((iv - floor(iv)) * 1e9);
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&r->stop_cv, &r->mu, &ts);
        if (r->stopping) break;
        pthread_mutex_unlock(&r->mu);
        rt_cleanup(r);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

void rt_cancel_all(rt_registry *r) {
    pthread_mutex_lock(&r->mu);
    for (inst *in = r->insts; in; in = in->next)
        if (in->state == INST_READY) eng_sched_cancel_all(in->m.sched);
    pthread_mutex_unlock(&r->mu);
}
