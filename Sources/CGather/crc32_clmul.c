// CRC-32 (the zip polynomial, bit-reflected) by folding with carry-less
// multiplication: Gopal et al., "Fast CRC Computation for Generic
// Polynomials Using PCLMULQDQ Instruction" (Intel, 2009), with the
// reflected-domain constants of that paper's appendix, as zlib's SIMD
// variants use them. Four 128-bit lanes fold 64 bytes per step, then one
// lane 16 bytes, then a Barrett reduction; the last bytes (fewer than 16)
// go through zlib.
#include "shardfs_crc32.h"

#include <zlib.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

__attribute__((target("pclmul,sse4.1")))
static uint32_t crc32_clmul(uint32_t crc, const unsigned char *buf, size_t len) {
    // len >= 64, a multiple of 16; crc is the pre-inverted state.
    static const uint64_t __attribute__((aligned(16))) k1k2[] = {0x0154442bd4, 0x01c6e41596};
    static const uint64_t __attribute__((aligned(16))) k3k4[] = {0x01751997d0, 0x00ccaa009e};
    static const uint64_t __attribute__((aligned(16))) k5k0[] = {0x0163cd6124, 0x0000000000};
    static const uint64_t __attribute__((aligned(16))) poly[] = {0x01db710641, 0x01f7011641};
    __m128i x0, x1, x2, x3, x4, x5, x6, x7, x8, y5, y6, y7, y8;

    x1 = _mm_loadu_si128((const __m128i *)(buf + 0x00));
    x2 = _mm_loadu_si128((const __m128i *)(buf + 0x10));
    x3 = _mm_loadu_si128((const __m128i *)(buf + 0x20));
    x4 = _mm_loadu_si128((const __m128i *)(buf + 0x30));
    x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)crc));
    x0 = _mm_load_si128((const __m128i *)k1k2);
    buf += 64;
    len -= 64;

    while (len >= 64) {
        x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
        x6 = _mm_clmulepi64_si128(x2, x0, 0x00);
        x7 = _mm_clmulepi64_si128(x3, x0, 0x00);
        x8 = _mm_clmulepi64_si128(x4, x0, 0x00);
        x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
        x2 = _mm_clmulepi64_si128(x2, x0, 0x11);
        x3 = _mm_clmulepi64_si128(x3, x0, 0x11);
        x4 = _mm_clmulepi64_si128(x4, x0, 0x11);
        y5 = _mm_loadu_si128((const __m128i *)(buf + 0x00));
        y6 = _mm_loadu_si128((const __m128i *)(buf + 0x10));
        y7 = _mm_loadu_si128((const __m128i *)(buf + 0x20));
        y8 = _mm_loadu_si128((const __m128i *)(buf + 0x30));
        x1 = _mm_xor_si128(_mm_xor_si128(x1, x5), y5);
        x2 = _mm_xor_si128(_mm_xor_si128(x2, x6), y6);
        x3 = _mm_xor_si128(_mm_xor_si128(x3, x7), y7);
        x4 = _mm_xor_si128(_mm_xor_si128(x4, x8), y8);
        buf += 64;
        len -= 64;
    }

    // Four lanes into one.
    x0 = _mm_load_si128((const __m128i *)k3k4);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x3), x5);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x4), x5);

    while (len >= 16) {
        x2 = _mm_loadu_si128((const __m128i *)buf);
        x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
        x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
        x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
        buf += 16;
        len -= 16;
    }

    // 128 bits to 64, then Barrett reduction to 32.
    x2 = _mm_clmulepi64_si128(x1, x0, 0x10);
    x3 = _mm_setr_epi32(~0, 0, ~0, 0);
    x1 = _mm_srli_si128(x1, 8);
    x1 = _mm_xor_si128(x1, x2);
    x0 = _mm_loadl_epi64((const __m128i *)k5k0);
    x2 = _mm_srli_si128(x1, 4);
    x1 = _mm_and_si128(x1, x3);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_xor_si128(x1, x2);
    x0 = _mm_load_si128((const __m128i *)poly);
    x2 = _mm_and_si128(x1, x3);
    x2 = _mm_clmulepi64_si128(x2, x0, 0x10);
    x2 = _mm_and_si128(x2, x3);
    x2 = _mm_clmulepi64_si128(x2, x0, 0x00);
    x1 = _mm_xor_si128(x1, x2);
    return (uint32_t)_mm_extract_epi32(x1, 1);
}

// The same folding with VPCLMULQDQ on 512-bit registers: four chains of
// four 128-bit lanes fold 256 bytes per step (constants x^(2048+32) and
// x^(2048-32) mod P, reflected), are folded into one by 64-byte steps
// (k1k2), and its four lanes hand over to the 128-bit reduction.
/// The 128-bit fold of `len` bytes (>= 64, a multiple of 16) whose first
/// 16 already hold the state: the 128-bit path after its first load.
__attribute__((target("pclmul,sse4.1")))
static uint32_t crc32_clmul_lanes(const unsigned char *buf, size_t len) {
    return crc32_clmul(0, buf, len);
}

__attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.1")))
static uint32_t crc32_vclmul(uint32_t crc, const unsigned char *buf, size_t len) {
    // len >= 256, a multiple of 16; crc is the pre-inverted state.
    static const uint64_t __attribute__((aligned(16))) k1k2[] = {0x0154442bd4, 0x01c6e41596};
    static const uint64_t __attribute__((aligned(16))) far[] = {0x011542778a, 0x01322d1430};
    const __m512i k256 = _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)far));
    const __m512i k64 = _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)k1k2));
    __m512i z0 = _mm512_loadu_si512((const void *)(buf + 0x00));
    __m512i z1 = _mm512_loadu_si512((const void *)(buf + 0x40));
    __m512i z2 = _mm512_loadu_si512((const void *)(buf + 0x80));
    __m512i z3 = _mm512_loadu_si512((const void *)(buf + 0xC0));
    z0 = _mm512_xor_si512(z0, _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)crc)));
    buf += 256;
    len -= 256;
#define FOLD(z, k, next) _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(z, k, 0x00), _mm512_clmulepi64_epi128(z, k, 0x11), next, 0x96)
    while (len >= 256) {
        z0 = FOLD(z0, k256, _mm512_loadu_si512((const void *)(buf + 0x00)));
        z1 = FOLD(z1, k256, _mm512_loadu_si512((const void *)(buf + 0x40)));
        z2 = FOLD(z2, k256, _mm512_loadu_si512((const void *)(buf + 0x80)));
        z3 = FOLD(z3, k256, _mm512_loadu_si512((const void *)(buf + 0xC0)));
        buf += 256;
        len -= 256;
    }
    z0 = FOLD(z0, k64, z1);
    z0 = FOLD(z0, k64, z2);
    z0 = FOLD(z0, k64, z3);
    while (len >= 64) {
        z0 = FOLD(z0, k64, _mm512_loadu_si512((const void *)buf));
        buf += 64;
        len -= 64;
    }
#undef FOLD
    // Hand the four lanes over as if the 128-bit loop had made them, with
    // the bytes left (fewer than 64) after them.
    unsigned char lanes[64 + 48] __attribute__((aligned(16)));
    _mm512_storeu_si512((void *)lanes, z0);
    for (size_t i = 0; i < len; i++) lanes[64 + i] = buf[i];
    return crc32_clmul_lanes(lanes, 64 + len);
}

static int has_vclmul(void) {
    static int cached = -1;
    if (cached < 0) {
        unsigned a, b, c, d;
        int avx512 = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_AVX512F) && (b & bit_AVX512VL) && (c & bit_VPCLMULQDQ);
        // The OS must save the zmm state (XCR0 bits 1, 2, 5, 6, 7).
        unsigned lo = 0, hi = 0;
        if (avx512 && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_OSXSAVE)) {
            __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
            avx512 = (lo & 0xE6) == 0xE6;
        } else {
            avx512 = 0;
        }
        cached = avx512;
    }
    return cached;
}

static int has_clmul(void) {
    static int cached = -1;
    if (cached < 0) {
        unsigned a, b, c, d;
        cached = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_PCLMUL) && (c & bit_SSE4_1);
    }
    return cached;
}
#endif

int shardfs_crc32_is_accelerated(void) {
#if defined(__x86_64__)
    return has_vclmul() ? 2 : has_clmul();
#else
    return 0;
#endif
}

uint32_t shardfs_crc32(uint32_t crc, const void *data, size_t length) {
    const unsigned char *buf = data;
#if defined(__x86_64__)
    if (length >= 256 && has_vclmul()) {
        size_t body = length & ~(size_t)15;
        crc = ~crc32_vclmul(~crc, buf, body);
        buf += body;
        length -= body;
    } else if (length >= 64 && has_clmul()) {
        size_t body = length & ~(size_t)15;
        crc = ~crc32_clmul(~crc, buf, body);
        buf += body;
        length -= body;
    }
#endif
    while (length > 0) {
        unsigned chunk = length > (1u << 30) ? (1u << 30) : (unsigned)length;
        crc = (uint32_t)crc32(crc, buf, chunk);
        buf += chunk;
        length -= chunk;
    }
    return crc;
}
