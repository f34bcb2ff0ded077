/*
 * pull.c — `kiln pull`: one GGUF file of a hub repository into the model
 * directory, over libcurl, resumable (HTTP Range on a locked .part file),
 * verified (size, sha256 with OpenSSL EVP, gguf_open) before the rename to
 * its final name. The hub protocol and the steps are in store.h.
 */
#include "kiln/store.h"

#include "kiln/gguf.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define HUB_MAX_URL 1024
#define REMOTE_MAX_NAME 1000
#define ERRBODY_MAX 300

kn_status store_global_init(kn_err *err) {
    CURLcode c = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (c != CURLE_OK) return kn_fail(err, KN_EIO, "cannot initialize libcurl: %s", curl_easy_strerror(c));
    return KN_OK;
}

void store_global_cleanup(void) {
    curl_global_cleanup();
}

/* ---- HTTP helpers ---------------------------------------------------------- */

static void curl_common(CURL *c, const char *url, const store_pull_opts *o, char *errbuf) {
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_USERAGENT, "kiln/" KILN_VERSION);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, o->connect_timeout_s > 0 ? o->connect_timeout_s : 30L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, o->stall_timeout_s > 0 ? o->stall_timeout_s : 60L);
    errbuf[0] = 0;
}

static const char *curl_msg(CURLcode rc, const char *errbuf) {
    return errbuf[0] ? errbuf : curl_easy_strerror(rc);
}

/* A response body held in memory, at most max bytes. */
typedef struct membuf {
    kn_buf b;
    size_t max;
    bool overflow;
} membuf;

static size_t membuf_write(char *ptr, size_t size, size_t nmemb, void *ud) {
    membuf *m = ud;
    size_t k = size * nmemb;
    if (k > m->max - m->b.n) {
        m->overflow = true;
        return 0;
    }
    return kn_buf_add(&m->b, ptr, k, m->max) ? k : 0;
}

/* The "error" string of a JSON error body, else the body's first line. */
static void body_message(const char *body, size_t n, char *out, size_t cap) {
    out[0] = 0;
    if (!body || !n) return;
    json_t *j = json_loadb(body, n, 0, NULL);
    const char *e = j ? json_string_value(json_object_get(j, "error")) : NULL;
    if (e)
        snprintf(out, cap, "%s", e);
    else {
        size_t k = 0;
        while (k < n && k + 1 < cap && body[k] != '\n' && body[k] != '\r')
            k++;
        snprintf(out, cap, "%.*s", (int)k, body);
    }
    json_decref(j);
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20) *p = ' ';
}

/* GET url. On KN_OK *code is the HTTP status and, for 2xx, *out the parsed
 * JSON (owned by the caller); for other statuses msg holds the server's
 * message. KN_EIO: no answer; KN_ERANGE: body over STORE_MAX_JSON;
 * KN_EFORMAT: a 2xx body that is not JSON. */
static kn_status get_json(const char *url, const store_pull_opts *o, long *code, json_t **out, char *msg,
                          size_t msg_cap, kn_err *err) {
    *out = NULL;
    *code = 0;
    msg[0] = 0;
    CURL *c = curl_easy_init();
    if (!c) return kn_fail(err, KN_ENOMEM, "cannot create a libcurl handle");
    char errbuf[CURL_ERROR_SIZE];
    membuf b = {.max = STORE_MAX_JSON};
    curl_common(c, url, o, errbuf);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, membuf_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, code);
    curl_easy_cleanup(c);
    kn_status st = KN_OK;
    if (b.overflow)
        st = kn_fail(err, KN_ERANGE, "the response of %s exceeds %u MiB", url, STORE_MAX_JSON >> 20);
    else if (rc != CURLE_OK)
        st = kn_fail(err, KN_EIO, "cannot fetch %s: %s", url, curl_msg(rc, errbuf));
    else if (*code >= 200 && *code < 300) {
        json_error_t je;
        *out = json_loadb(b.b.p ? b.b.p : "", b.b.n, 0, &je);
        if (!*out)
            st = kn_fail(err, KN_EFORMAT, "%s did not answer JSON (line %d, column %d: %s)", url, je.line,
                         je.column, je.text);
    } else
        body_message(b.b.p, b.b.n, msg, msg_cap);
    kn_buf_free(&b.b);
    return st;
}

/* ---- hub file selection ------------------------------------------------------- */

/* A file name from the hub that is safe to put in a URL path and that we may
 * pick: relative, no ".." segment, no backslash or control characters. */
static bool remote_name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > REMOTE_MAX_NAME || s[0] == '/') return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f || s[i] == '\\') return false;
    for (const char *p = s; *p;) {
        const char *q = strchr(p, '/');
        size_t k = q ? (size_t)(q - p) : strlen(p);
        if (k == 0 || (k == 2 && p[0] == '.' && p[1] == '.') || (k == 1 && p[0] == '.')) return false;
        p += k + (q ? 1 : 0);
    }
    return true;
}

/* Appends label to a comma-separated list if it is not there yet. */
static void add_label(char *list, size_t cap, const char *label) {
    size_t n = strlen(list), k = strlen(label);
    for (const char *p = list; *p;) {
        const char *q = strstr(p, ", ");
        size_t m = q ? (size_t)(q - p) : strlen(p);
        if (m == k && !strncmp(p, label, k)) return;
        p += m + (q ? 2 : 0);
    }
    if (n + k + 3 < cap) snprintf(list + n, cap - n, "%s%s", n ? ", " : "", label);
}

/* Picks the sibling for ref->quant into file (cap bytes). */
static kn_status pick_file(const json_t *info, const store_ref *ref, const char *hub, char *file, size_t cap,
                           kn_err *err) {
    const json_t *sib = json_object_get(info, "siblings");
    if (!json_is_array(sib))
        return kn_fail(err, KN_EFORMAT, "%s: the hub's answer has no \"siblings\" list", ref->repo);
    char labels[1024] = "", unlabeled[1024] = "";
    const char *best = NULL;
    size_t n_gguf = 0, n_shards = 0;
    for (size_t i = 0; i < json_array_size(sib); i++) {
        const char *f = json_string_value(json_object_get(json_array_get(sib, i), "rfilename"));
        if (!f || !remote_name_ok(f)) continue;
        size_t fl = strlen(f);
        if (fl < 5 || strcasecmp(f + fl - 5, ".gguf")) continue;
        if (store_name_skipped(f)) {
            if (strncasecmp(strrchr(f, '/') ? strrchr(f, '/') + 1 : f, "mmproj", 6) &&
                store_name_has_quant(f, ref->quant))
                n_shards++;
            continue;
        }
        n_gguf++;
        char q[STORE_MAX_QUANT + 1];
        if (store_quant_of_name(f, q, sizeof q))
            add_label(labels, sizeof labels, q);
        else
            add_label(unlabeled, sizeof unlabeled, f);
        if (!store_name_has_quant(f, ref->quant)) continue;
        if (!best || fl < strlen(best) || (fl == strlen(best) && strcmp(f, best) < 0)) best = f;
    }
    if (best) {
        if (strlen(best) >= cap) return kn_fail(err, KN_ERANGE, "file name too long: %.100s", best);
        snprintf(file, cap, "%s", best);
        return KN_OK;
    }
    if (n_shards)
        return kn_fail(
            err, KN_EUNSUPPORTED,
            "%s:%s is split into several files (*-00001-of-*.gguf); kiln pull fetches single-file models",
            ref->repo, ref->quant);
    if (n_gguf == 0) return kn_fail(err, KN_ENOTFOUND, "%s on %s has no GGUF files", ref->repo, hub);
    return kn_fail(err, KN_ENOTFOUND, "%s has no GGUF file for quantization %s; available: %s%s%s", ref->repo,
                   ref->quant, labels[0] ? labels : "(none labelled)", unlabeled[0] ? "; other files: " : "",
                   unlabeled);
}

/* Escapes each '/'-separated segment of path into out. */
static kn_status escape_path(CURL *c, const char *path, char *out, size_t cap, kn_err *err) {
    size_t used = 0;
    out[0] = 0;
    for (const char *p = path; *p;) {
        const char *q = strchr(p, '/');
        int k = q ? (int)(q - p) : (int)strlen(p);
        char *e = curl_easy_escape(c, p, k);
        if (!e) return kn_fail(err, KN_ENOMEM, "cannot escape a URL");
        int w = snprintf(out + used, cap - used, "%s%s", used ? "/" : "", e);
        curl_free(e);
        if (w < 0 || (size_t)w >= cap - used) return kn_fail(err, KN_ERANGE, "URL too long");
        used += (size_t)w;
        p += k + (q ? 1 : 0);
    }
    return KN_OK;
}

/* Expected size and sha256 of file from the tree listing; both optional
 * (*size 0, sha "" when the hub does not say). */
static void tree_lookup(const char *hub, const store_ref *ref, const char *file, const store_pull_opts *o,
                        uint64_t *size, char sha[65]) {
    *size = 0;
    sha[0] = 0;
    char dir_esc[2048] = "", url[4096];
    const char *slash = strrchr(file, '/');
    kn_err e = {0};
    CURL *c = curl_easy_init();
    if (!c) return;
    if (slash) {
        char dir[REMOTE_MAX_NAME + 1];
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - file), file);
        if (escape_path(c, dir, dir_esc, sizeof dir_esc, &e)) {
            curl_easy_cleanup(c);
            return;
        }
    }
    curl_easy_cleanup(c);
    snprintf(url, sizeof url, "%s/api/models/%s/tree/main%s%s", hub, ref->repo, slash ? "/" : "", dir_esc);
    long code;
    json_t *tree = NULL;
    char msg[ERRBODY_MAX];
    if (get_json(url, o, &code, &tree, msg, sizeof msg, &e) != KN_OK || !json_is_array(tree)) {
        KN_WARN("no file list from %s (%s); %s will not be checked against a sha256", url,
                e.msg[0] ? e.msg : (code ? "not a list" : "no answer"), file);
        json_decref(tree);
        return;
    }
    for (size_t i = 0; i < json_array_size(tree); i++) {
        json_t *t = json_array_get(tree, i);
        const char *p = json_string_value(json_object_get(t, "path"));
        if (!p || strcmp(p, file)) continue;
        json_t *sz = json_object_get(t, "size");
        if (json_is_integer(sz) && json_integer_value(sz) > 0) *size = (uint64_t)json_integer_value(sz);
        json_t *lfs = json_object_get(t, "lfs");
        json_t *lsz = json_object_get(lfs, "size");
        if (json_is_integer(lsz) && json_integer_value(lsz) > 0) *size = (uint64_t)json_integer_value(lsz);
        const char *oid = json_string_value(json_object_get(lfs, "oid"));
        if (oid && !strncmp(oid, "sha256:", 7)) oid += 7;
        bool hex = oid && strlen(oid) == 64;
        for (int k = 0; hex && k < 64; k++)
            hex = strchr("0123456789abcdefABCDEF", oid[k]) != NULL;
        if (hex)
            for (int k = 0; k <= 64; k++)
                sha[k] = (char)(oid[k] >= 'A' && oid[k] <= 'F' ? oid[k] + 32 : oid[k]);
        else if (oid)
            KN_WARN("the hub's lfs.oid for %s is not a sha256; the file will not be verified", file);
        break;
    }
    if (!sha[0]) KN_WARN("the hub gives no sha256 for %s; the download will not be verified", file);
    json_decref(tree);
}

/* ---- the download ---------------------------------------------------------- */

typedef struct dl {
    int fd;
    const char *part;  /* the .part's path, for messages */
    bool nospace;      /* a write failed for lack of space (ENOSPC, EDQUOT) */
    uint64_t start;    /* bytes in the .part when the request was made */
    uint64_t written;  /* bytes in the .part now */
    uint64_t expected; /* 0: unknown */
    EVP_MD_CTX *md;
    CURL *c;
    bool begun;      /* the first body byte was handled */
    bool ok_status;  /* the final response is a 200/206 whose bytes go to the file */
    bool have_range; /* a Content-Range header was seen on the current response */
    uint64_t range_start;
    long code;
    char errbody[ERRBODY_MAX];
    size_t errlen;
    kn_err *err;
    bool failed; /* err was set by a callback */
    bool progress, prog_on;
    kn_progress prog;
    char label[160];
} dl;

static size_t dl_header(char *p, size_t size, size_t n, void *ud) {
    dl *d = ud;
    size_t k = size * n;
    if (k >= 5 && !strncmp(p, "HTTP/", 5)) d->have_range = false;
    if (k > 14 && !strncasecmp(p, "content-range:", 14)) {
        char tmp[128];
        snprintf(tmp, sizeof tmp, "%.*s", (int)(k - 14 < 127 ? k - 14 : 127), p + 14);
        unsigned long long a, b;
        if (sscanf(tmp, " bytes %llu-%llu", &a, &b) == 2) {
            d->have_range = true;
            d->range_start = a;
        }
    }
    return k;
}

static bool write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static size_t dl_fail(dl *d, kn_status st, const char *fmt, const char *a) {
    kn_fail(d->err, st, fmt, a);
    d->failed = true;
    return 0;
}

static size_t dl_write(char *p, size_t size, size_t n, void *ud) {
    dl *d = ud;
    size_t k = size * n;
    if (!d->begun) {
        d->begun = true;
        curl_easy_getinfo(d->c, CURLINFO_RESPONSE_CODE, &d->code);
        if (d->code == 206) {
            if (!d->have_range || d->range_start != d->start)
                return dl_fail(d, KN_EIO, "%s", "the hub answered a Range request with the wrong byte range");
            d->ok_status = true;
        } else if (d->code == 200) {
            d->ok_status = true;
            if (d->start > 0) { /* no range support: start over */
                KN_WARN("the hub ignored the Range request; downloading from the start");
                if (ftruncate(d->fd, 0) || lseek(d->fd, 0, SEEK_SET) != 0 ||
                    !EVP_DigestInit_ex(d->md, EVP_sha256(), NULL))
                    return dl_fail(d, KN_EIO, "cannot restart the partial file: %s", strerror(errno));
                d->written = 0;
            }
        }
        if (d->ok_status && d->progress) {
            uint64_t total = d->expected;
            curl_off_t cl = -1;
            curl_easy_getinfo(d->c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
            if (!total && cl > 0) total = d->written + (uint64_t)cl;
            kn_progress_begin(&d->prog, d->label, total);
            kn_progress_update(&d->prog, d->written, NULL);
            d->prog_on = true;
        }
    }
    if (!d->ok_status) { /* an error body: keep its start for the message */
        size_t room = sizeof d->errbody - 1 - d->errlen, m = k < room ? k : room;
        memcpy(d->errbody + d->errlen, p, m);
        d->errlen += m;
        d->errbody[d->errlen] = 0;
        return k;
    }
    if (d->expected && k > d->expected - d->written)
        return dl_fail(d, KN_EFORMAT, "%s", "the hub sent more bytes than the file size it listed");
    if (!write_all(d->fd, p, k)) {
        int e = errno;
        d->nospace = e == ENOSPC || e == EDQUOT;
        kn_fail(d->err, KN_EIO, "cannot write %s: %s", d->part,
                d->nospace ? "no space left on device" : strerror(e));
        d->failed = true;
        return 0;
    }
    EVP_DigestUpdate(d->md, p, k);
    d->written += k;
    if (d->prog_on) kn_progress_update(&d->prog, d->written, NULL);
    return k;
}

/* Feeds the first n bytes of fd into md. */
static kn_status hash_fd(int fd, uint64_t n, EVP_MD_CTX *md, kn_err *err) {
    char *buf = malloc(1 << 20);
    if (!buf) return kn_fail(err, KN_ENOMEM, "out of memory");
    uint64_t off = 0;
    while (off < n) {
        size_t want = n - off < (1u << 20) ? (size_t)(n - off) : (1u << 20);
        ssize_t r = pread(fd, buf, want, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            free(buf);
            return kn_fail(err, KN_EIO, "cannot read back the partial file: %s",
                           r ? strerror(errno) : "short file");
        }
        EVP_DigestUpdate(md, buf, (size_t)r);
        off += (uint64_t)r;
    }
    free(buf);
    return KN_OK;
}

static void hex_digest(EVP_MD_CTX *md, char out[65]) {
    unsigned char h[EVP_MAX_MD_SIZE];
    unsigned int hl = 0;
    EVP_DigestFinal_ex(md, h, &hl);
    for (unsigned i = 0; i < hl && i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", h[i]);
    out[64] = 0;
}

bool store_sha256_file(const char *path, char out[65]) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    struct stat sb;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md && !fstat(fd, &sb) && EVP_DigestInit_ex(md, EVP_sha256(), NULL) &&
              hash_fd(fd, (uint64_t)sb.st_size, md, NULL) == KN_OK;
    if (ok) hex_digest(md, out);
    EVP_MD_CTX_free(md);
    close(fd);
    return ok;
}

/* Downloads url into the open .part fd, resuming from its size. */
static kn_status download(const char *url, int fd, const char *part, uint64_t expected,
                          const char *expected_sha, const store_pull_opts *o, const char *label,
                          char sha_out[65], uint64_t *resumed_from, uint64_t *final_size, bool *nospace,
                          kn_err *err) {
    dl d = {.fd = fd, .part = part, .expected = expected, .err = err, .progress = o->progress};
    *nospace = false;
    snprintf(d.label, sizeof d.label, "%s", label);
    kn_status st = KN_OK;
    struct stat sb;
    if (fstat(fd, &sb)) return kn_fail(err, KN_EIO, "cannot stat the partial file: %s", strerror(errno));
    uint64_t have = (uint64_t)sb.st_size;
    if (expected && have > expected) {
        KN_WARN("the partial file is larger than the hub's size; starting over");
        if (ftruncate(fd, 0))
            return kn_fail(err, KN_EIO, "cannot truncate the partial file: %s", strerror(errno));
        have = 0;
    }
    d.md = EVP_MD_CTX_new();
    d.c = curl_easy_init();
    if (!d.md || !d.c || !EVP_DigestInit_ex(d.md, EVP_sha256(), NULL)) {
        st = kn_fail(err, KN_ENOMEM, "cannot create a libcurl handle or a sha256 context");
        goto done;
    }
    if ((st = hash_fd(fd, have, d.md, err))) goto done;
    if (lseek(fd, (off_t)have, SEEK_SET) < 0) {
        st = kn_fail(err, KN_EIO, "cannot seek the partial file: %s", strerror(errno));
        goto done;
    }
    d.start = d.written = have;
    *resumed_from = have;
    if (have) KN_INFO("resuming %s from byte %llu", label, (unsigned long long)have);
    if (!(expected && have == expected)) {
        char errbuf[CURL_ERROR_SIZE], range[48];
        curl_common(d.c, url, o, errbuf);
        curl_easy_setopt(d.c, CURLOPT_WRITEFUNCTION, dl_write);
        curl_easy_setopt(d.c, CURLOPT_WRITEDATA, &d);
        curl_easy_setopt(d.c, CURLOPT_HEADERFUNCTION, dl_header);
        curl_easy_setopt(d.c, CURLOPT_HEADERDATA, &d);
        if (have) {
            snprintf(range, sizeof range, "%llu-", (unsigned long long)have);
            curl_easy_setopt(d.c, CURLOPT_RANGE, range);
        }
        CURLcode rc = curl_easy_perform(d.c);
        if (d.prog_on) {
            if (rc == CURLE_OK && !d.failed)
                kn_progress_end(&d.prog);
            else if (d.prog.tty)
                fputc('\n', stderr);
        }
        if (!d.begun) curl_easy_getinfo(d.c, CURLINFO_RESPONSE_CODE, &d.code);
        if (d.failed) {
            st = err ? err->status : KN_EIO;
            *nospace = d.nospace;
            goto done;
        }
        if (rc == CURLE_OK && d.code == 416 && have) {
            st = kn_fail(
                err, KN_EIO,
                "the hub refused to resume at byte %llu (416); delete the partial file and pull again",
                (unsigned long long)have);
            goto done;
        }
        if (rc == CURLE_OK && !d.ok_status) {
            char msg[ERRBODY_MAX];
            body_message(d.errbody, d.errlen, msg, sizeof msg);
            st = kn_fail(err, d.code == 404 ? KN_ENOTFOUND : KN_EIO, "%s answered HTTP %ld%s%s", url, d.code,
                         msg[0] ? ": " : "", msg);
            goto done;
        }
        if (rc != CURLE_OK) {
            char of[40] = "";
            if (expected) snprintf(of, sizeof of, " of %llu", (unsigned long long)expected);
            st = kn_fail(err, KN_EIO, "download interrupted after %llu%s bytes: %s",
                         (unsigned long long)d.written, of, curl_msg(rc, errbuf));
            goto done;
        }
    }
    if (expected && d.written != expected) {
        st = kn_fail(err, KN_EIO, "download incomplete: %llu of %llu bytes", (unsigned long long)d.written,
                     (unsigned long long)expected);
        goto done;
    }
    hex_digest(d.md, sha_out);
    *final_size = d.written;
    if (expected_sha[0] && strcmp(expected_sha, sha_out))
        st = kn_fail(err, KN_EFORMAT, "sha256 mismatch: the hub lists %s, the download has %s", expected_sha,
                     sha_out);
done:
    curl_easy_cleanup(d.c);
    EVP_MD_CTX_free(d.md);
    return st;
}

/* The hub base URL without trailing slashes, validated. */
static kn_status hub_url(const store_pull_opts *o, char *out, size_t cap, kn_err *err) {
    const char *h = o->hub;
    if (!h || !*h) h = getenv(STORE_HUB_ENV);
    if (!h || !*h) h = STORE_DEFAULT_HUB;
    size_t n = strlen(h);
    while (n && h[n - 1] == '/')
        n--;
    bool ok = n < cap && n < HUB_MAX_URL && (!strncasecmp(h, "http://", 7) || !strncasecmp(h, "https://", 8));
    for (size_t i = 0; i < n && ok; i++)
        ok = (unsigned char)h[i] > 0x20 && h[i] != 0x7f;
    if (!ok)
        return kn_fail(err, KN_EINVAL, "bad hub URL '%.200s': expected http://HOST[:PORT] or https://...", h);
    memcpy(out, h, n);
    out[n] = 0;
    return KN_OK;
}

/* 1. The repository's file for ref->quant (GET <hub>/api/models/<repo>). */
static kn_status find_remote_file(const char *hub, const store_ref *ref, const store_pull_opts *o, char *file,
                                  size_t cap, kn_err *err) {
    char url[8192], msg[ERRBODY_MAX];
    json_t *info = NULL;
    kn_status st;
    snprintf(url, sizeof url, "%s/api/models/%s", hub, ref->repo);
    long code;
    if ((st = get_json(url, o, &code, &info, msg, sizeof msg, err))) return st;
    if (code == 404) return kn_fail(err, KN_ENOTFOUND, "unknown repository %s on %s (404)", ref->repo, hub);
    if (code == 401 || code == 403)
        return kn_fail(err, KN_EUNSUPPORTED, "%s on %s is private or gated (HTTP %ld)%s%s", ref->repo, hub,
                       code, msg[0] ? ": " : "", msg);
    if (code < 200 || code >= 300)
        return kn_fail(err, KN_EIO, "%s answered HTTP %ld%s%s", url, code, msg[0] ? ": " : "", msg);
    st = pick_file(info, ref, hub, file, cap, err);
    json_decref(info);
    return st;
}

/* True (with res filled) when res->path already holds the file: a regular
 * file of the expected size whose sha256 matches when the hub gives one. */
static bool already_pulled(store_pull_result *res, uint64_t expected, const char *sha) {
    struct stat sb;
    if (stat(res->path, &sb) || !S_ISREG(sb.st_mode) || !expected || (uint64_t)sb.st_size != expected)
        return false;
    char have[65];
    if (!(sha[0] ? store_sha256_file(res->path, have) && !strcmp(have, sha) : true)) return false;
    res->up_to_date = true;
    res->verified = sha[0] != 0;
    res->size = expected;
    snprintf(res->sha256, sizeof res->sha256, "%s", sha[0] ? sha : "");
    return true;
}

/* Opens dir (*dfd) and, relative to it, the .part (*fd, created if missing)
 * and locks it. Every later file operation goes through *dfd
 * (openat/renameat/unlinkat), so a directory swapped or symlinked meanwhile
 * cannot redirect them, and the .part is opened with O_NOFOLLOW: a symbolic
 * link planted at its name is refused, never written through. On failure
 * nothing is left open (*dfd, *fd -1) and nothing is removed. */
static kn_status open_part(const char *dir, const char *part, const char *part_name, int *dfd, int *fd,
                           kn_err *err) {
    *fd = -1;
    *dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*dfd < 0) return kn_fail(err, KN_EIO, "cannot open the model directory %s: %s", dir, strerror(errno));
    int f = openat(*dfd, part_name, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    kn_status st = KN_OK;
    struct stat sb;
    if (f < 0) {
        int e = errno;
        st = e == ELOOP
                 ? kn_fail(err, KN_EIO,
                           "refusing to write %s: it is a symbolic link (remove it and pull again)", part)
                 : kn_fail(err, KN_EIO, "cannot open %s: %s", part, strerror(e));
    } else if (fstat(f, &sb) || !S_ISREG(sb.st_mode) || sb.st_nlink != 1) {
        st = kn_fail(err, KN_EIO,
                     "refusing to write %s: not a plain file of its own (remove it and pull again)", part);
    } else if (flock(f, LOCK_EX | LOCK_NB)) {
        st = kn_fail(err, KN_EBUSY, "another kiln pull is writing %s", part);
    }
    if (st) {
        if (f >= 0) close(f);
        close(*dfd);
        *dfd = -1;
        return st;
    }
    *fd = f;
    return KN_OK;
}

/* 3. Downloads the file into the open .part fd and flushes it; res gets
 * the sha256 and where the download resumed. On failure *keep_part says
 * whether the bytes are worth a resume (network trouble, not bad content
 * or a full disk, *nospace) and err says how to resume. */
static kn_status fetch_part(const char *hub, const store_ref *ref, const char *file, int fd, const char *part,
                            uint64_t expected, const char *sha, const store_pull_opts *o,
                            store_pull_result *res, uint64_t *size, bool *keep_part, bool *nospace,
                            kn_err *err) {
    char url[8192], file_esc[3 * REMOTE_MAX_NAME + 1], label[160];
    kn_status st;
    CURL *c = curl_easy_init();
    if (!c) return kn_fail(err, KN_ENOMEM, "cannot create a libcurl handle");
    st = escape_path(c, file, file_esc, sizeof file_esc, err);
    curl_easy_cleanup(c);
    if (st) return st;
    snprintf(url, sizeof url, "%s/%s/resolve/main/%s", hub, ref->repo, file_esc);
    snprintf(label, sizeof label, "pull %s-%s", ref->name, ref->quant);
    st =
        download(url, fd, part, expected, sha, o, label, res->sha256, &res->resumed_from, size, nospace, err);
    if (st) {
        /* network trouble keeps the bytes for a resume; bad content and a
         * full disk do not (the space goes back to the file system) */
        *keep_part = (st == KN_EIO || st == KN_ENOMEM) && !*nospace;
        if (*keep_part && err) {
            struct stat ps;
            if (!fstat(fd, &ps) && ps.st_size > 0) {
                size_t m = strlen(err->msg);
                int w = snprintf(err->msg + m, sizeof err->msg - m,
                                 "; %llu bytes kept in %s, run the same kiln pull again to resume",
                                 (unsigned long long)ps.st_size, part);
                (void)w;
            }
        }
        return st;
    }
    if (fsync(fd)) {
        int e = errno;
        *keep_part = !(e == ENOSPC || e == EDQUOT);
        return kn_fail(err, KN_EIO, "cannot flush %s: %s", part,
                       *keep_part ? strerror(e) : "no space left on device");
    }
    return KN_OK;
}

/* 4. The .part must open as GGUF (else it is not kept: *keep_part false);
 * then it takes its final name. */
static kn_status install_part(int dfd, const char *part, const char *part_name, const char *final_name,
                              const char *file, const store_ref *ref, const store_pull_result *res,
                              bool *keep_part, kn_err *err) {
    gguf_ctx *g = NULL;
    kn_err ge = {0};
    if (gguf_open(part, &g, &ge) != KN_OK) {
        *keep_part = false;
        return kn_fail(err, KN_EFORMAT, "%s from %s is not a valid GGUF file (%s); it was deleted", file,
                       ref->repo, ge.msg);
    }
    gguf_close(g);
    if (renameat(dfd, part_name, dfd, final_name))
        return kn_fail(err, KN_EIO, "cannot rename %s to %s: %s", part, res->path, strerror(errno));
    return KN_OK;
}

/* After a failed step 3 or 4: removes the .part unless it holds bytes worth
 * a resume, closes both descriptors, and says in err what was deleted.
 * Returns st. */
static kn_status pull_failed(kn_status st, int dfd, int fd, const char *part_name, bool keep_part,
                             bool nospace, kn_err *err) {
    struct stat sb;
    if (keep_part && fd >= 0 && !fstat(fd, &sb) && sb.st_size == 0) keep_part = false;
    if (!keep_part && dfd >= 0) unlinkat(dfd, part_name, 0);
    if (fd >= 0) close(fd);
    if (dfd >= 0) close(dfd);
    if (nospace && err && !strstr(err->msg, "deleted")) {
        size_t m = strlen(err->msg);
        snprintf(err->msg + m, sizeof err->msg - m, "; the partial download was deleted");
    }
    if (st == KN_EFORMAT && !keep_part && err && !strstr(err->msg, "deleted")) {
        size_t m = strlen(err->msg);
        snprintf(err->msg + m, sizeof err->msg - m, "; the download was deleted");
    }
    return st;
}

kn_status store_pull(const store_ref *ref, const store_pull_opts *o, store_pull_result *res, kn_err *err) {
    memset(res, 0, sizeof *res);
    char hub[HUB_MAX_URL], file[REMOTE_MAX_NAME + 1], part[4096];
    kn_status st;
    if ((st = hub_url(o, hub, sizeof hub, err))) return st;
    const char *dir = o->models_dir && *o->models_dir ? o->models_dir : "models";
    if (snprintf(res->path, sizeof res->path, "%s/%s-%s.gguf", dir, ref->name, ref->quant) >=
            (int)sizeof res->path ||
        snprintf(part, sizeof part, "%s/.%s-%s.gguf.part", dir, ref->name, ref->quant) >= (int)sizeof part)
        return kn_fail(err, KN_ERANGE, "model path too long under %.100s", dir);
    /* the names inside dir: validated (store_ref_parse), so they hold no '/'
     * and do not start with '.' (the .part is hidden on purpose) */
    const char *final_name = strrchr(res->path, '/') + 1, *part_name = strrchr(part, '/') + 1;

    /* 1. the repository's files */
    if ((st = find_remote_file(hub, ref, o, file, sizeof file, err))) return st;
    snprintf(res->remote_file, sizeof res->remote_file, "%s", file);

    /* 2. its size and sha256 */
    uint64_t expected;
    char sha[65];
    tree_lookup(hub, ref, file, o, &expected, sha);
    if ((st = kn_mkdirs(dir, 0755, err))) return st;
    if (already_pulled(res, expected, sha)) return KN_OK;

    /* 3. the bytes, into the locked .part */
    int fd, dfd;
    bool keep_part = true, nospace = false;
    uint64_t size = 0;
    if ((st = open_part(dir, part, part_name, &dfd, &fd, err))) return st;
    if ((st = fetch_part(hub, ref, file, fd, part, expected, sha, o, res, &size, &keep_part, &nospace, err)))
        return pull_failed(st, dfd, fd, part_name, keep_part, nospace, err);
    res->verified = sha[0] != 0;
    res->size = size;

    /* 4. a GGUF file, then its final name */
    if ((st = install_part(dfd, part, part_name, final_name, file, ref, res, &keep_part, err)))
        return pull_failed(st, dfd, fd, part_name, keep_part, nospace, err);
    close(fd);
    close(dfd);
    return KN_OK;
}
