/* test_stop.c — stop strings over streamed pieces: nothing of a stop string
 * is ever emitted, text before it is, held bytes come back on flush, and
 * results do not depend on how the text is cut into pieces. */
#include "testutil.h"
#include "engine/stop.h"

#include <stdlib.h>
#include <string.h>

/* Streams text in pieces of `step` bytes; returns what was emitted. */
static char *stream(eng_stop *s, const char *text, size_t step, bool *stopped) {
    static char acc[8192];
    size_t n = 0, len = strlen(text);
    *stopped = false;
    eng_stop_reset(s);
    for (size_t i = 0; i < len && !*stopped;) {
        size_t piece = len - i < step ? len - i : step;
        size_t done = 0;
        while (done < piece && !*stopped) {
            const char *o;
            size_t ol;
            done += eng_stop_feed(s, text + i + done, piece - done, &o, &ol, stopped);
            memcpy(acc + n, o, ol);
            n += ol;
        }
        i += piece;
    }
    if (!*stopped) {
        const char *o;
        size_t ol;
        eng_stop_flush(s, &o, &ol);
        memcpy(acc + n, o, ol);
        n += ol;
    }
    acc[n] = 0;
    return acc;
}

static void test_stops_and_pieces(void **st) {
    (void)st;
    const char *stops[] = {"\n\nUser:", "</s>", "END"};
    eng_stop *s;
    kn_err e = {0};
    assert_int_equal(eng_stop_create(stops, 3, &s, &e), KN_OK);
    for (size_t step = 1; step <= 9; step++) {
        bool stopped;
        assert_string_equal(stream(s, "Hello there.\n\nUser: more", step, &stopped), "Hello there.");
        assert_true(stopped);
        assert_string_equal(stream(s, "a </ b </s> c", step, &stopped), "a </ b ");
        assert_true(stopped);
        assert_string_equal(stream(s, "no stop here EN", step, &stopped), "no stop here EN");
        assert_false(stopped);
        assert_string_equal(stream(s, "ENDING", step, &stopped), "");
        assert_true(stopped);
    }
    /* a piece longer than ENG_STOP_PIECE is taken in slices */
    char *big = malloc(5000);
    memset(big, 'x', 4990);
    strcpy(big + 4990, "END tail");
    bool stopped;
    char *got = stream(s, big, 5000, &stopped);
    assert_true(stopped);
    assert_int_equal(strlen(got), 4990);
    free(big);
    eng_stop_destroy(s);
}

static void test_no_stops_passes_through(void **st) {
    (void)st;
    eng_stop *s;
    kn_err e = {0};
    const char *none[] = {""};
    assert_int_equal(eng_stop_create(none, 1, &s, &e), KN_OK);
    bool stopped;
    assert_string_equal(stream(s, "anything at all", 4, &stopped), "anything at all");
    assert_false(stopped);
    eng_stop_destroy(s);
}

static void test_limits(void **st) {
    (void)st;
    eng_stop *s = NULL;
    kn_err e = {0};
    char longs[300];
    memset(longs, 'a', 299);
    longs[299] = 0;
    const char *one[] = {longs};
    assert_int_equal(eng_stop_create(one, 1, &s, &e), KN_ERANGE);
    assert_null(s);
    const char *many[20];
    for (int i = 0; i < 20; i++) many[i] = "x";
    assert_int_equal(eng_stop_create(many, 20, &s, &e), KN_ERANGE);
    assert_non_null(strstr(e.msg, "too many"));
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_stops_and_pieces),
                                       cmocka_unit_test(test_no_stops_passes_through), cmocka_unit_test(test_limits)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
