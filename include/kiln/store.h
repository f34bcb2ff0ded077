/*
 * kiln/store.h — the local model store: pulling one GGUF file of a repository from
 * a Hugging Face-compatible hub into the model directory, listing the models
 * of that directory and removing them (`kiln pull`, `kiln ls`, `kiln rm`).
 *
 * Owns: nothing long-lived. Every call takes its inputs, does its work and
 * returns; store_list owns the entries it returns until store_list_free.
 *
 * Names and files:
 *  - A reference is `OWNER/NAME[:QUANT]`. OWNER and NAME are 1..96 characters
 *    of [A-Za-z0-9._-], start with a letter or digit and contain no "..";
 *    QUANT is 1..32 characters of [A-Za-z0-9_-] starting with a letter or
 *    digit, and defaults to STORE_DEFAULT_QUANT. Anything else is refused
 *    before any network or file access.
 *  - A pulled file is stored as DIR/<NAME>-<QUANT>.gguf with QUANT in upper
 *    case. Since both parts are validated as above the file name has no '/'
 *    and does not start with '.', so it never leaves DIR.
 *  - A quantization label is a token of a file name: [IT]?Q<digits>(_<part>)*
 *    with part = digits | K | S | M | L | XS | XXS | XL | NL, or F32, F16, BF16
 *    (case-insensitive), delimited on both sides by a character that is not
 *    [A-Za-z0-9_] (or the start / the ".gguf" end). A hub file matches a
 *    requested QUANT when QUANT occurs in its name with those delimiters
 *    (so Q4_K does not match Q4_K_M, nor Q4_0 IQ4_0).
 *
 * Pull (store_pull):
 *  1. GET HUB/api/models/OWNER/NAME -> {"siblings": [{"rfilename"}]}; 404 is
 *     "unknown repo". Among the *.gguf siblings, multimodal projectors
 *     (mmproj*) and split shards (*-00001-of-00003.gguf) are skipped; of the
 *     files matching QUANT the shortest name wins. No match lists the
 *     quantizations available.
 *  2. GET HUB/api/models/OWNER/NAME/tree/main[/DIR] -> [{"path", "size",
 *     "lfs": {"oid", "size"}}] gives the expected size and sha256 (optional:
 *     without it the download is not verified, and a warning says so).
 *  3. GET HUB/OWNER/NAME/resolve/main/FILE (redirects followed) into
 *     DIR/.<final name>.part, resuming from its current size with an HTTP
 *     Range request. A server that answers 200 to a Range restarts the file.
 *     The .part file is locked (flock) so two pulls cannot interleave.
 *  4. When complete: size and sha256 (OpenSSL EVP) are checked, a mismatch
 *     deletes the .part; then the file must open as GGUF (gguf_open) or it is
 *     deleted; only then is it renamed to the final name. A network error
 *     keeps the .part so the next pull resumes.
 *  Every JSON response is bounded by STORE_MAX_JSON bytes.
 *
 * Thread safety: functions are reentrant; libcurl's global init must have
 * been done by the caller (store_global_init) before the first store_pull.
 */
#ifndef KILN_STORE_H
#define KILN_STORE_H

#include "kiln/core.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define STORE_DEFAULT_HUB "https://huggingface.co"
#define STORE_DEFAULT_QUANT "Q4_K_M"
#define STORE_HUB_ENV "KILN_HUB_URL"
#define STORE_MAX_JSON (16u << 20)
#define STORE_MAX_PART 96 /* OWNER or NAME */
#define STORE_MAX_QUANT 32

/* A parsed `OWNER/NAME[:QUANT]` (quant upper-cased, defaulted). */
typedef struct store_ref {
    char repo[2 * STORE_MAX_PART + 2]; /* "OWNER/NAME" */
    char name[STORE_MAX_PART + 1];     /* "NAME" */
    char quant[STORE_MAX_QUANT + 1];   /* "Q4_K_M" */
} store_ref;

/* Parses and validates s (see the top comment). KN_EINVAL names the problem. */
kn_status store_ref_parse(const char *s, store_ref *out, kn_err *err);

/* True when q is a valid QUANT (see the top comment). */
bool store_quant_valid(const char *q);

/* The last quantization label token in a file name (its directory part is
 * ignored), upper-cased into out (cap >= STORE_MAX_QUANT + 1). False when the
 * name holds none. */
bool store_quant_of_name(const char *file, char *out, size_t cap);

/* The quantization of a GGUF file by its contents, for names without a
 * label: general.file_type, else the tensor type holding the most bytes.
 * "" when the file does not open. */
void store_quant_of_file(const char *path, char *out, size_t cap);

/* True when the base name of file contains quant (case-insensitively) with
 * label delimiters on both sides (see the top comment). */
bool store_name_has_quant(const char *file, const char *quant);

/* True for names `kiln pull` never picks: not *.gguf, mmproj*, split shards. */
bool store_name_skipped(const char *file);

/* ---- local models ---------------------------------------------------------- */

typedef struct store_entry {
    char *name; /* model name: the file stem without its "-QUANT" / ".QUANT" suffix; owned */
    char *file; /* file name inside the directory ("x-Q8_0.gguf"); owned */
    char *ref;  /* what `kiln rm` takes: "x:Q8_0" when the name had that suffix, else the stem; owned */
    char quant[STORE_MAX_QUANT + 1]; /* "Q8_0"; "" when unknown */
    bool quant_from_name;            /* false: from general.file_type or tensor types */
    uint64_t size;
    time_t mtime;
} store_entry;

typedef struct store_list {
    store_entry *v; /* [n] owned, sorted by file name */
    size_t n;
} store_list;

/* Lists the regular *.gguf files of dir (not hidden ones, not recursively).
 * Files whose name has no quantization label are opened to read
 * general.file_type, or else the type holding most tensor bytes; a file that
 * does not open as GGUF is listed with an empty quant. KN_EIO when dir cannot
 * be read. Free with store_list_free. */
kn_status store_list_dir(const char *dir, store_list *out, kn_err *err);
void store_list_free(store_list *l); /* accepts a zeroed list */

/* "a:Q8_0, b, ..." (the forms store_resolve_local accepts), at most cap bytes,
 * truncated with "...". */
void store_list_names(const store_list *l, char *buf, size_t cap);

/* Resolves a model name given to `kiln rm` to an entry of l: NAME:QUANT ->
 * <NAME>-<QUANT>.gguf (or <NAME>.<QUANT>.gguf; QUANT case-insensitive),
 * NAME -> <NAME>.gguf (a trailing ".gguf" is accepted). Only files listed in
 * l can be named, so nothing outside the directory is reachable. Names with '/', '\\', a leading '.', ".."
 * or control characters are KN_EINVAL; a name that matches no file of l is
 * KN_ENOTFOUND listing what exists. On success *idx is the entry. */
kn_status store_resolve_local(const store_list *l, const char *name, size_t *idx, kn_err *err);

/* ---- pull ------------------------------------------------------------------ */

/* Initializes libcurl for the process; call once from main before threads. */
kn_status store_global_init(kn_err *err);
void store_global_cleanup(void);

typedef struct store_pull_opts {
    const char *hub;        /* base URL (http:// or https://); NULL: $KILN_HUB_URL or the default */
    const char *models_dir; /* created if missing */
    bool progress;          /* a kn_progress line on stderr */
    long connect_timeout_s; /* 0: 30 */
    long stall_timeout_s;   /* abort when no byte arrives for this long; 0: 60 */
} store_pull_opts;

typedef struct store_pull_result {
    char path[4096];        /* the final file */
    char remote_file[1024]; /* the hub's file name */
    uint64_t size;          /* bytes of the final file */
    uint64_t resumed_from;  /* bytes already in the .part when the download started */
    bool verified;          /* sha256 checked against the hub's lfs.oid */
    bool up_to_date;        /* the final file was already there and matched */
    char sha256[65];        /* hex digest of the final file ("" when not computed) */
} store_pull_result;

/* Pulls ref into o->models_dir (see the top comment). err names the problem:
 * KN_EINVAL bad reference or URL, KN_ENOTFOUND unknown repo or no file for
 * the quantization (listing those available), KN_EIO network or file errors
 * (the .part is kept for a resume), KN_EFORMAT size/sha256 mismatch or not a
 * GGUF file (nothing is kept), KN_EBUSY another pull holds the .part. */
/* The sha256 of a whole file as 64 lower-case hex digits in out; false when
 * it cannot be read. */
bool store_sha256_file(const char *path, char out[65]);

kn_status store_pull(const store_ref *ref, const store_pull_opts *o, store_pull_result *res, kn_err *err);

#endif
