/*
 * http.c — the libcurl client code both scenario files (run.c, cache.c)
 * use: the base URL and endpoint of a run, its request headers, the easy
 * handle of a POST, and the error kind of a failed request. See
 * internal.h. Holds no state.
 */
#include "internal.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool bench_urls(const char *url, char **base, char **endpoint) {
    size_t ul = strlen(url);
    *base = malloc(ul + 1);
    *endpoint = malloc(ul + 32);
    if (!*base || !*endpoint) return false;
    memcpy(*base, url, ul + 1);
    while (ul && (*base)[ul - 1] == '/')
        (*base)[--ul] = 0;
    if (ul >= 3 && !strcmp(*base + ul - 3, "/v1")) (*base)[ul -= 3] = 0;
    snprintf(*endpoint, ul + 32, "%s/v1/completions", *base);
    return true;
}

struct curl_slist *bench_headers(const char *accept, const char *api_key) {
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json"), *h = hdrs;
    if (h && accept) h = curl_slist_append(hdrs, accept);
    if (h) h = curl_slist_append(hdrs, "Expect:");
    if (h && api_key) {
        size_t kl = strlen(api_key) + 32;
        char *auth = malloc(kl);
        h = NULL;
        if (auth) {
            snprintf(auth, kl, "Authorization: Bearer %s", api_key);
            h = curl_slist_append(hdrs, auth);
            free(auth);
        }
    }
    if (!h) { /* curl_slist_append leaves the list as it was when it fails */
        curl_slist_free_all(hdrs);
        return NULL;
    }
    return hdrs;
}

kn_status bench_easy_post(void **out, const bench_config *c, const char *url, const void *hdrs,
                          bench_curl_cb write_fn, bench_curl_cb header_fn, void *user, char *errbuf,
                          kn_err *err) {
    CURL *e = curl_easy_init();
    *out = NULL;
    if (!e) return kn_fail(err, KN_ENOMEM, "curl_easy_init failed");
    long tmo = (long)(c->timeout_s * 1000.0 + 0.5), ctmo = (long)(c->connect_timeout_s * 1000.0 + 0.5);
    if (curl_easy_setopt(e, CURLOPT_URL, url) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, (const struct curl_slist *)hdrs) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_POST, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_fn) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_WRITEDATA, user) != CURLE_OK ||
        (header_fn && (curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_fn) != CURLE_OK ||
                       curl_easy_setopt(e, CURLOPT_HEADERDATA, user) != CURLE_OK)) ||
        curl_easy_setopt(e, CURLOPT_PRIVATE, user) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, tmo > 0 ? tmo : 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ctmo > 0 ? ctmo : 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK) {
        curl_easy_cleanup(e);
        return kn_fail(err, KN_EUNSUPPORTED, "libcurl refused an option (is it built with HTTP support?)");
    }
    *out = e;
    return KN_OK;
}

bench_errkind bench_classify_curl(int code, void *handle) {
    CURLcode rc = (CURLcode)code;
    CURL *e = handle;
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: return BENCH_ERR_CONNECT;
    case CURLE_OPERATION_TIMEDOUT: {
        curl_off_t ct = 0;
        curl_easy_getinfo(e, CURLINFO_CONNECT_TIME_T, &ct);
        return ct == 0 ? BENCH_ERR_CONNECT : BENCH_ERR_TIMEOUT;
    }
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE: return BENCH_ERR_NETWORK;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_WRITE_ERROR: return BENCH_ERR_PROTOCOL;
    default: return BENCH_ERR_OTHER;
    }
}

bench_errkind bench_classify_status(long status) {
    return status >= 400 && status < 500   ? BENCH_ERR_HTTP_4XX
           : status >= 500 && status < 600 ? BENCH_ERR_HTTP_5XX
                                           : BENCH_ERR_HTTP_OTHER;
}
