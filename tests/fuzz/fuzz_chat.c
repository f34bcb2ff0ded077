/* fuzz_chat.c — libFuzzer target for the chat answer parser.
 * Input: byte 0 picks the syntax (low nibble) and the options (bits 4-6:
 * tools, reasoning, in_reasoning), byte 1 seeds the piece sizes, the rest is
 * the answer's text. It is parsed fed whole and fed in random pieces of 1 to
 * 16 bytes (which may cut UTF-8 characters). Any crash, leak or sanitizer
 * report is a bug, and so is: more than CHAT_MAX_CALLS calls, a call index
 * out of order, more content + reasoning bytes than input bytes, arguments
 * that are not a JSON object, or a different result for the two feeds. */
#include "kiln/chat.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct acc {
    char *text[2]; /* content, reasoning */
    size_t len[2];
    char *calls;
    size_t calls_len;
    int ncalls;
} acc;

static void add(char **b, size_t *n, const char *s, size_t k) {
    char *nb = realloc(*b, *n + k + 1);
    if (!nb) abort();
    memcpy(nb + *n, s, k);
    *n += k;
    nb[*n] = 0;
    *b = nb;
}

static void on_event(void *arg, const chat_event *ev) {
    acc *a = arg;
    if (ev->kind == CHAT_EV_TOOL_CALL) {
        if (ev->index != a->ncalls++) abort();
        if (!ev->name || !ev->name[0] || !ev->args || strlen(ev->args) != ev->args_len) abort();
        json_error_t e;
        json_t *v = json_loadb(ev->args, ev->args_len, 0, &e);
        if (!json_is_object(v)) abort();
        json_decref(v);
        add(&a->calls, &a->calls_len, ev->name, strlen(ev->name) + 1);
        add(&a->calls, &a->calls_len, ev->args, ev->args_len + 1);
        if (ev->id) add(&a->calls, &a->calls_len, ev->id, strlen(ev->id) + 1);
        return;
    }
    if (ev->len == 0 || (ev->kind != CHAT_EV_CONTENT && ev->kind != CHAT_EV_REASONING)) abort();
    int k = ev->kind == CHAT_EV_REASONING;
    add(&a->text[k], &a->len[k], ev->text, ev->len);
}

static void run(const chat_parse_opts *o, const char *s, size_t n, uint32_t seed, acc *a) {
    memset(a, 0, sizeof *a);
    chat_parser *p = NULL;
    kn_err e;
    if (chat_parser_create(o, &p, &e) != KN_OK) abort();
    for (size_t at = 0; at < n;) {
        size_t k = n - at;
        if (seed) {
            seed = seed * 1103515245u + 12345u;
            size_t r = 1 + (seed >> 16) % 16;
            if (r < k) k = r;
        }
        chat_parser_feed(p, s + at, k, on_event, a);
        at += k;
    }
    chat_parser_finish(p, on_event, a);
    if (chat_parser_calls(p) != a->ncalls || a->ncalls > (int)CHAT_MAX_CALLS) abort();
    if (a->len[0] + a->len[1] > n) abort();
    chat_parser_destroy(p);
}

static void acc_free(acc *a) {
    free(a->text[0]), free(a->text[1]), free(a->calls);
}

static bool same(const char *x, size_t nx, const char *y, size_t ny) {
    return nx == ny && (nx == 0 || memcmp(x, y, nx) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    chat_parse_opts o = {(chat_syntax)((data[0] & 15) % CHAT_SYNTAX_COUNT), (data[0] & 16) != 0,
                         (data[0] & 32) != 0, (data[0] & 64) != 0};
    const char *s = (const char *)data + 2;
    size_t n = size - 2;
    acc whole, pieces;
    run(&o, s, n, 0, &whole);
    run(&o, s, n, data[1] | 0x100u, &pieces);
    if (!same(whole.text[0], whole.len[0], pieces.text[0], pieces.len[0]) ||
        !same(whole.text[1], whole.len[1], pieces.text[1], pieces.len[1]) ||
        !same(whole.calls, whole.calls_len, pieces.calls, pieces.calls_len))
        abort();
    acc_free(&whole);
    acc_free(&pieces);
    return 0;
}
