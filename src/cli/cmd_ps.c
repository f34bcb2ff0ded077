/*
 * cmd_ps.c — `kiln ps`: the models a running server has loaded (its
 * /api/ps), as a table or JSON.
 */
#include "cli.h"
#include "kiln/core.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PS_MAX_BODY (4u << 20)

static void usage(FILE *f) {
    fprintf(f,
            "usage: kiln ps [--url URL] [--api-key KEY] [--json]\n\n"
            "Lists the models a running kiln server has loaded: name, file, size, context (and whether it\n"
            "was reduced to fit memory), requests in flight and when it unloads.\n\n"
            "options:\n"
            "      --url URL       the server (default http://127.0.0.1:8080, or $KILN_URL)\n"
            "      --api-key KEY   the server's API key (default $KILN_API_KEY)\n"
            "      --json          print the server's answer as JSON\n");
}

static size_t on_data(char *p, size_t sz, size_t nm, void *arg) {
    return kn_buf_add(arg, p, sz * nm, PS_MAX_BODY) ? sz * nm : 0;
}

static void human(double bytes, char *buf, size_t cap) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (bytes >= 1024 && i < 4) bytes /= 1024, i++;
    snprintf(buf, cap, i ? "%.1f %s" : "%.0f %s", bytes, u[i]);
}

int cmd_ps(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *url = getenv("KILN_URL") ? getenv("KILN_URL") : "http://127.0.0.1:8080";
    const char *key = getenv("KILN_API_KEY");
    bool as_json = false;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (!strcmp(argv[i], "--url")) {
            if (!(v = cli_flag_value("ps", argc, argv, &i))) return 2;
            url = v;
        } else if (!strcmp(argv[i], "--api-key")) {
            if (!(v = cli_flag_value("ps", argc, argv, &i))) return 2;
            key = v;
        } else if (!strcmp(argv[i], "--json")) {
            as_json = true;
        } else {
            fprintf(stderr, "kiln ps: unknown option '%s' (see kiln ps --help)\n", argv[i]);
            return 2;
        }
    }
    char full[2048], auth[1100];
    size_t ul = strlen(url);
    while (ul && url[ul - 1] == '/') ul--;
    if ((size_t)snprintf(full, sizeof full, "%.*s/api/ps", (int)ul, url) >= sizeof full) {
        fprintf(stderr, "kiln ps: the URL is too long\n");
        return 2;
    }
    CURL *c = curl_easy_init();
    if (!c) return 1;
    struct curl_slist *hdr = NULL;
    if (key && *key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %.1000s", key);
        hdr = curl_slist_append(hdr, auth);
    }
    kn_buf b = {0};
    curl_easy_setopt(c, CURLOPT_URL, full);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    CURLcode cr = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
    int rc = 1;
    json_t *root = NULL;
    if (cr != CURLE_OK) {
        fprintf(stderr, "kiln ps: %s: %s\n", full, cr == CURLE_WRITE_ERROR ? "the answer is too large" : curl_easy_strerror(cr));
        goto done;
    }
    json_error_t je;
    root = b.p ? json_loadb(b.p, b.n, 0, &je) : NULL;
    if (status != 200) {
        json_t *e = root ? json_object_get(root, "error") : NULL;
        fprintf(stderr, "kiln ps: %s answered %ld: %s\n", full, status,
                json_is_string(e) ? json_string_value(e) : (b.p ? b.p : ""));
        goto done;
    }
    json_t *models = json_object_get(root, "models");
    if (!json_is_array(models)) {
        fprintf(stderr, "kiln ps: %s: the answer has no models list\n", full);
        goto done;
    }
    if (as_json) {
        char *s = json_dumps(root, JSON_INDENT(2));
        if (s) puts(s);
        free(s);
        rc = 0;
        goto done;
    }
    printf("%-32s %-28s %10s %9s %9s %-24s\n", "NAME", "ID", "SIZE", "CONTEXT", "IN FLIGHT", "UNTIL");
    size_t i;
    json_t *m;
    json_array_foreach(models, i, m) {
        char size[32], ctx[32];
        human((double)json_integer_value(json_object_get(m, "size")), size, sizeof size);
        snprintf(ctx, sizeof ctx, "%lld%s", (long long)json_integer_value(json_object_get(m, "context_length")),
                 json_is_true(json_object_get(m, "context_reduced")) ? "*" : "");
        double left = json_number_value(json_object_get(m, "expires_in_s"));
        char until[64];
        if (json_is_true(json_object_get(m, "pinned")) || left < 0) snprintf(until, sizeof until, "forever");
        else snprintf(until, sizeof until, "%.0f s idle left", left);
        printf("%-32s %-28s %10s %9s %9lld %-24s\n", json_string_value(json_object_get(m, "name")),
               json_string_value(json_object_get(m, "id")), size, ctx,
               (long long)json_integer_value(json_object_get(m, "in_flight")), until);
    }
    if (json_array_size(models) == 0) printf("(no models loaded)\n");
    rc = 0;
done:
    json_decref(root);
    kn_buf_free(&b);
    return rc;
}
