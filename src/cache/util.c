/*
 * util.c — the cache's small shared pieces: type and policy names, the key
 * hash and the model tag (see kiln/cache.h).
 */
#include "kiln/cache.h"

#include <string.h>
#include <strings.h>
#include <xxhash.h>

static const char *const TYPE_NAMES[RC_NTYPES] = {[RC_RESPONSE] = "response", [RC_EMBEDDING] = "embedding"};
static const char *const POLICY_NAMES[] = {[RC_LRU] = "lru", [RC_LFU] = "lfu", [RC_FIFO] = "fifo",
                                           [RC_RANDOM] = "random"};

const char *rc_type_name(rc_type t) { return (unsigned)t < RC_NTYPES ? TYPE_NAMES[t] : "?"; }

bool rc_type_parse(const char *s, rc_type *out) {
    for (int i = 0; s && i < RC_NTYPES; i++)
        if (!strcasecmp(s, TYPE_NAMES[i])) {
            *out = (rc_type)i;
            return true;
        }
    return false;
}

const char *rc_policy_name(rc_policy p) {
    return (unsigned)p < sizeof POLICY_NAMES / sizeof POLICY_NAMES[0] ? POLICY_NAMES[p] : "?";
}

bool rc_policy_parse(const char *s, rc_policy *out) {
    for (size_t i = 0; s && i < sizeof POLICY_NAMES / sizeof POLICY_NAMES[0]; i++)
        if (!strcasecmp(s, POLICY_NAMES[i])) {
            *out = (rc_policy)i;
            return true;
        }
    return false;
}

rc_key rc_key_of(const void *p, size_t n) {
    XXH128_hash_t h = XXH3_128bits(p, n);
    return (rc_key){.hi = h.high64, .lo = h.low64};
}

uint64_t rc_model_tag(const char *name) {
    uint64_t h = XXH3_64bits(name, strlen(name));
    return h ? h : 1;
}
