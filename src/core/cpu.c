/*
 * cpu.c — CPUID feature detection and kernel-set selection (KILN_CPU).
 */
#include "kiln/core.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
static uint64_t xgetbv0(void) {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}
#endif

void kn_cpu_features_detect(kn_cpu_features *f) {
    memset(f, 0, sizeof *f);
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    bool osxsave = (c >> 27) & 1;
    bool avx = (c >> 28) & 1;
    f->fma = (c >> 12) & 1;
    f->f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return;
    uint64_t xcr0 = xgetbv0();
    bool ymm_os = (xcr0 & 6) == 6;
    bool zmm_os = (xcr0 & 0xe6) == 0xe6;
    if (!ymm_os) {
        f->fma = f->f16c = false;
        return;
    }
    if (__get_cpuid_max(0, NULL) < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    f->avx2 = (b >> 5) & 1;
    if (zmm_os) {
        f->avx512f = (b >> 16) & 1;
        f->avx512dq = (b >> 17) & 1;
        f->avx512bw = (b >> 30) & 1;
        f->avx512vl = (b >> 31) & 1;
        f->avx512vbmi = (c >> 1) & 1;
        f->avx512vnni = (c >> 11) & 1;
        __cpuid_count(7, 1, a, b, c, d);
        f->avx512bf16 = (a >> 5) & 1;
    }
#endif
}

bool kn_cpu_supports(const kn_cpu_features *f, kn_cpu_level lvl) {
    switch (lvl) {
    case KN_CPU_GENERIC: return true;
    case KN_CPU_AVX2: return f->avx2 && f->fma && f->f16c;
    case KN_CPU_AVX512: /* VNNI included: an AVX-512 CPU without it (Skylake-X) runs the avx2 set */
        return kn_cpu_supports(f, KN_CPU_AVX2) && f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq &&
               f->avx512vnni;
    default: return false;
    }
}

kn_cpu_level kn_cpu_best(const kn_cpu_features *f) {
    if (kn_cpu_supports(f, KN_CPU_AVX512)) return KN_CPU_AVX512;
    if (kn_cpu_supports(f, KN_CPU_AVX2)) return KN_CPU_AVX2;
    return KN_CPU_GENERIC;
}

const char *kn_cpu_level_name(kn_cpu_level lvl) {
    switch (lvl) {
    case KN_CPU_GENERIC: return "generic";
    case KN_CPU_AVX2: return "avx2";
    case KN_CPU_AVX512: return "avx512";
    default: return "?";
    }
}

bool kn_cpu_level_parse(const char *s, kn_cpu_level *out) {
    for (int l = 0; l < KN_CPU_LEVEL_COUNT; l++) {
        if (!strcmp(s, kn_cpu_level_name((kn_cpu_level)l))) {
            *out = (kn_cpu_level)l;
            return true;
        }
    }
    return false;
}

kn_status kn_cpu_select(kn_cpu_level *out, kn_err *err) {
    kn_cpu_features f;
    kn_cpu_features_detect(&f);
    const char *e = getenv("KILN_CPU");
    if (!e || !*e) {
        *out = kn_cpu_best(&f);
        return KN_OK;
    }
    kn_cpu_level l;
    if (!kn_cpu_level_parse(e, &l))
        return kn_fail(err, KN_EINVAL, "KILN_CPU=%s: expected generic, avx2 or avx512", e);
    if (!kn_cpu_supports(&f, l))
        return kn_fail(err, KN_EUNSUPPORTED, "KILN_CPU=%s: this CPU does not support that kernel set", e);
    *out = l;
    return KN_OK;
}
