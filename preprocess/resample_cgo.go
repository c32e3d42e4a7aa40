//go:build cgo

package preprocess

/*
#cgo CFLAGS: -O3
#include <stdint.h>
#include <stddef.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TUSOU_X86 1
#endif

#define TUSOU_PREC 22

static inline uint8_t tusou_clip8(int32_t v) {
	v >>= TUSOU_PREC;
	return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
}

// Horizontal pass, portable C. Same integer arithmetic as Pillow's
// ImagingResampleHorizontal_8bpc (the sum order does not matter: integer
// addition is exact and cannot overflow 32 bits here).
static void hpass_c(const uint8_t *pix, ptrdiff_t base, ptrdiff_t dx, ptrdiff_t dy,
                    int y0, int rows, int size, const int32_t *xmin, const int32_t *n,
                    const int32_t *coeffs, int ksize, uint8_t *out) {
	for (int r = 0; r < rows; r++) {
		const uint8_t *row = pix + base + (ptrdiff_t)(y0 + r) * dy;
		uint8_t *o = out + (ptrdiff_t)r * size * 3;
		for (int i = 0; i < size; i++) {
			const int32_t *k = coeffs + (ptrdiff_t)i * ksize;
			const uint8_t *p = row + (ptrdiff_t)xmin[i] * dx;
			int32_t s0 = 1 << (TUSOU_PREC - 1), s1 = s0, s2 = s0;
			for (int j = 0; j < n[i]; j++, p += dx) {
				s0 += p[0] * k[j];
				s1 += p[1] * k[j];
				s2 += p[2] * k[j];
			}
			o[3 * i] = tusou_clip8(s0);
			o[3 * i + 1] = tusou_clip8(s1);
			o[3 * i + 2] = tusou_clip8(s2);
		}
	}
}

#ifdef TUSOU_X86
// SSE4.1: one pixel's R,G,B (+1 ignored byte) in four int32 lanes, times a
// broadcast coefficient (pmulld), accumulated exactly like the scalar code.
// Reads 4 bytes per pixel, so the source buffer must have 1 byte of slack
// after its last pixel (buffers.decode guarantees it); writes 4 bytes per
// output pixel, so out needs 1 byte of slack too.
__attribute__((target("sse4.1")))
static void hpass_sse41(const uint8_t *pix, ptrdiff_t base, ptrdiff_t dx, ptrdiff_t dy,
                        int y0, int rows, int size, const int32_t *xmin, const int32_t *n,
                        const int32_t *coeffs, int ksize, uint8_t *out) {
	const __m128i half = _mm_set1_epi32(1 << (TUSOU_PREC - 1));
	for (int r = 0; r < rows; r++) {
		const uint8_t *row = pix + base + (ptrdiff_t)(y0 + r) * dy;
		uint8_t *o = out + (ptrdiff_t)r * size * 3;
		for (int i = 0; i < size; i++) {
			const int32_t *k = coeffs + (ptrdiff_t)i * ksize;
			const uint8_t *p = row + (ptrdiff_t)xmin[i] * dx;
			const int cnt = n[i];
			__m128i a0 = half, a1 = _mm_setzero_si128();
			int j = 0;
			for (; j + 1 < cnt; j += 2, p += 2 * dx) {
				int32_t v0, v1;
				memcpy(&v0, p, 4);
				memcpy(&v1, p + dx, 4);
				__m128i q0 = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(v0));
				__m128i q1 = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(v1));
				a0 = _mm_add_epi32(a0, _mm_mullo_epi32(q0, _mm_set1_epi32(k[j])));
				a1 = _mm_add_epi32(a1, _mm_mullo_epi32(q1, _mm_set1_epi32(k[j + 1])));
			}
			if (j < cnt) {
				int32_t v0;
				memcpy(&v0, p, 4);
				__m128i q0 = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(v0));
				a0 = _mm_add_epi32(a0, _mm_mullo_epi32(q0, _mm_set1_epi32(k[j])));
			}
			a0 = _mm_srai_epi32(_mm_add_epi32(a0, a1), TUSOU_PREC);
			a0 = _mm_packs_epi32(a0, a0);
			a0 = _mm_packus_epi16(a0, a0);
			int32_t px = _mm_cvtsi128_si32(a0);
			memcpy(o + 3 * i, &px, 4);
		}
	}
}

// Vertical pass over a contiguous intermediate (size*3 bytes per row): 16
// samples at a time in four int32 accumulators, looping over the taps.
__attribute__((target("sse4.1")))
static void vpass_sse41(const uint8_t *src, int rowbytes, const int32_t *ymin, const int32_t *n,
                        const int32_t *coeffs, int ksize, int y0, int size, uint8_t *dst) {
	const __m128i half = _mm_set1_epi32(1 << (TUSOU_PREC - 1));
	const int n3 = size * 3;
	for (int r = 0; r < size; r++) {
		const int32_t *k = coeffs + (ptrdiff_t)r * ksize;
		const uint8_t *rb = src + (ptrdiff_t)(ymin[r] - y0) * rowbytes;
		uint8_t *o = dst + (ptrdiff_t)r * n3;
		int i = 0;
		for (; i + 16 <= n3; i += 16) {
			__m128i a0 = half, a1 = half, a2 = half, a3 = half;
			const uint8_t *p = rb + i;
			for (int j = 0; j < n[r]; j++, p += rowbytes) {
				__m128i c = _mm_set1_epi32(k[j]);
				__m128i v = _mm_loadu_si128((const __m128i *)p);
				a0 = _mm_add_epi32(a0, _mm_mullo_epi32(_mm_cvtepu8_epi32(v), c));
				a1 = _mm_add_epi32(a1, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_srli_si128(v, 4)), c));
				a2 = _mm_add_epi32(a2, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_srli_si128(v, 8)), c));
				a3 = _mm_add_epi32(a3, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_srli_si128(v, 12)), c));
			}
			a0 = _mm_srai_epi32(a0, TUSOU_PREC);
			a1 = _mm_srai_epi32(a1, TUSOU_PREC);
			a2 = _mm_srai_epi32(a2, TUSOU_PREC);
			a3 = _mm_srai_epi32(a3, TUSOU_PREC);
			__m128i lo = _mm_packs_epi32(a0, a1), hi = _mm_packs_epi32(a2, a3);
			_mm_storeu_si128((__m128i *)(o + i), _mm_packus_epi16(lo, hi));
		}
		for (; i < n3; i++) {
			int32_t s = 1 << (TUSOU_PREC - 1);
			const uint8_t *p = rb + i;
			for (int j = 0; j < n[r]; j++, p += rowbytes) {
				s += *p * k[j];
			}
			o[i] = tusou_clip8(s);
		}
	}
}
#endif

static void vpass_c(const uint8_t *src, int rowbytes, const int32_t *ymin, const int32_t *n,
                    const int32_t *coeffs, int ksize, int y0, int size, uint8_t *dst) {
	const int n3 = size * 3;
	for (int r = 0; r < size; r++) {
		const int32_t *k = coeffs + (ptrdiff_t)r * ksize;
		const uint8_t *rb = src + (ptrdiff_t)(ymin[r] - y0) * rowbytes;
		uint8_t *o = dst + (ptrdiff_t)r * n3;
		for (int i = 0; i < n3; i++) {
			int32_t s = 1 << (TUSOU_PREC - 1);
			const uint8_t *p = rb + i;
			for (int j = 0; j < n[r]; j++, p += rowbytes) {
				s += *p * k[j];
			}
			o[i] = tusou_clip8(s);
		}
	}
}

// Horizontal pass for a transposed view (EXIF orientations 5-8): the
// oriented rows r are source columns, so for one output column i and one tap
// (a source row) the samples of all needed rows are one contiguous run of
// rows*3 bytes. Accumulate 16 samples at a time down the taps, then scatter
// the results into column i of the intermediate. Same integer sums as the
// direct form, but sequential memory access instead of a stride per tap.
static void hpassT_c(const uint8_t *pix, ptrdiff_t base, ptrdiff_t dx, ptrdiff_t dy,
                     int y0, int rows, int size, const int32_t *xmin, const int32_t *n,
                     const int32_t *coeffs, int ksize, uint8_t *out, uint8_t *line) {
	const int rev = dy < 0;
	const ptrdiff_t segoff = rev ? (ptrdiff_t)(y0 + rows - 1) * dy : (ptrdiff_t)y0 * dy;
	const int len = rows * 3;
	for (int i = 0; i < size; i++) {
		const int32_t *k = coeffs + (ptrdiff_t)i * ksize;
		const uint8_t *seg0 = pix + base + (ptrdiff_t)xmin[i] * dx + segoff;
		for (int m = 0; m < len; m++) {
			int32_t s = 1 << (TUSOU_PREC - 1);
			const uint8_t *p = seg0 + m;
			for (int j = 0; j < n[i]; j++, p += dx) {
				s += *p * k[j];
			}
			line[m] = tusou_clip8(s);
		}
		for (int r = 0; r < rows; r++) {
			const uint8_t *src = line + 3 * (rev ? rows - 1 - r : r);
			uint8_t *o = out + (ptrdiff_t)r * size * 3 + 3 * i;
			o[0] = src[0];
			o[1] = src[1];
			o[2] = src[2];
		}
	}
}

#ifdef TUSOU_X86
__attribute__((target("sse4.1")))
static void hpassT_sse41(const uint8_t *pix, ptrdiff_t base, ptrdiff_t dx, ptrdiff_t dy,
                         int y0, int rows, int size, const int32_t *xmin, const int32_t *n,
                         const int32_t *coeffs, int ksize, uint8_t *out, uint8_t *line) {
	const __m128i half = _mm_set1_epi32(1 << (TUSOU_PREC - 1));
	const int rev = dy < 0;
	const ptrdiff_t segoff = rev ? (ptrdiff_t)(y0 + rows - 1) * dy : (ptrdiff_t)y0 * dy;
	const int len = rows * 3;
	for (int i = 0; i < size; i++) {
		const int32_t *k = coeffs + (ptrdiff_t)i * ksize;
		const uint8_t *seg0 = pix + base + (ptrdiff_t)xmin[i] * dx + segoff;
		const int cnt = n[i];
		int m = 0;
		for (; m + 16 <= len; m += 16) {
			__m128i a0 = half, a1 = half, a2 = half, a3 = half;
			const uint8_t *p = seg0 + m;
			for (int j = 0; j < cnt; j++, p += dx) {
				__m128i c = _mm_set1_epi32(k[j]);
				__m128i v = _mm_loadu_si128((const __m128i *)p);
				a0 = _mm_add_epi32(a0, _mm_mullo_epi32(_mm_cvtepu8_epi32(v), c));
				a1 = _mm_add_epi32(a1, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_srli_si128(v, 4)), c));
				a2 = _mm_add_epi32(a2, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_srli_si128(v, 8)), c));
				a3 = _mm_add_epi32(a3, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_srli_si128(v, 12)), c));
			}
			a0 = _mm_srai_epi32(a0, TUSOU_PREC);
			a1 = _mm_srai_epi32(a1, TUSOU_PREC);
			a2 = _mm_srai_epi32(a2, TUSOU_PREC);
			a3 = _mm_srai_epi32(a3, TUSOU_PREC);
			__m128i lo = _mm_packs_epi32(a0, a1), hi = _mm_packs_epi32(a2, a3);
			_mm_storeu_si128((__m128i *)(line + m), _mm_packus_epi16(lo, hi));
		}
		for (; m < len; m++) {
			int32_t s = 1 << (TUSOU_PREC - 1);
			const uint8_t *p = seg0 + m;
			for (int j = 0; j < cnt; j++, p += dx) {
				s += *p * k[j];
			}
			line[m] = tusou_clip8(s);
		}
		for (int r = 0; r < rows; r++) {
			const uint8_t *src = line + 3 * (rev ? rows - 1 - r : r);
			uint8_t *o = out + (ptrdiff_t)r * size * 3 + 3 * i;
			o[0] = src[0];
			o[1] = src[1];
			o[2] = src[2];
		}
	}
}
#endif

static void tusou_hpassT(int simd, const uint8_t *pix, ptrdiff_t base, ptrdiff_t dx, ptrdiff_t dy,
                         int y0, int rows, int size, const int32_t *xmin, const int32_t *n,
                         const int32_t *coeffs, int ksize, uint8_t *out, uint8_t *line) {
#ifdef TUSOU_X86
	if (simd) {
		hpassT_sse41(pix, base, dx, dy, y0, rows, size, xmin, n, coeffs, ksize, out, line);
		return;
	}
#endif
	hpassT_c(pix, base, dx, dy, y0, rows, size, xmin, n, coeffs, ksize, out, line);
}

static int tusou_have_sse41(void) {
#ifdef TUSOU_X86
	__builtin_cpu_init();
	return __builtin_cpu_supports("sse4.1");
#else
	return 0;
#endif
}

static void tusou_hpass(int simd, const uint8_t *pix, ptrdiff_t base, ptrdiff_t dx, ptrdiff_t dy,
                        int y0, int rows, int size, const int32_t *xmin, const int32_t *n,
                        const int32_t *coeffs, int ksize, uint8_t *out) {
#ifdef TUSOU_X86
	if (simd) {
		hpass_sse41(pix, base, dx, dy, y0, rows, size, xmin, n, coeffs, ksize, out);
		return;
	}
#endif
	hpass_c(pix, base, dx, dy, y0, rows, size, xmin, n, coeffs, ksize, out);
}

static void tusou_vpass(int simd, const uint8_t *src, int rowbytes, const int32_t *ymin, const int32_t *n,
                        const int32_t *coeffs, int ksize, int y0, int size, uint8_t *dst) {
#ifdef TUSOU_X86
	if (simd) {
		vpass_sse41(src, rowbytes, ymin, n, coeffs, ksize, y0, size, dst);
		return;
	}
#endif
	vpass_c(src, rowbytes, ymin, n, coeffs, ksize, y0, size, dst);
}
*/
import "C"

import "unsafe"

// haveSIMD is decided once: SSE4.1 (pmulld, pmovzxbd) on x86-64, else the
// portable C loops. Both give identical bytes.
var haveSIMD = C.tusou_have_sse41() != 0

func hpassNative(v view, kh *kernel, y0, rows, size int, tmp []byte, s *buffers) {
	if rows == 0 || size == 0 {
		return
	}
	if v.dy == 3 || v.dy == -3 {
		// Transposed view: oriented rows are contiguous source runs.
		line := s.lineBuf(rows * 3)
		C.tusou_hpassT(cbool(haveSIMD), (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(v.pix))), C.ptrdiff_t(v.base),
			C.ptrdiff_t(v.dx), C.ptrdiff_t(v.dy), C.int(y0), C.int(rows), C.int(size),
			(*C.int32_t)(unsafe.Pointer(&kh.min[0])), (*C.int32_t)(unsafe.Pointer(&kh.n[0])),
			(*C.int32_t)(unsafe.Pointer(&kh.coeffs[0])), C.int(kh.ksize),
			(*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(tmp))), (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(line))))
		return
	}
	C.tusou_hpass(cbool(haveSIMD), (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(v.pix))), C.ptrdiff_t(v.base),
		C.ptrdiff_t(v.dx), C.ptrdiff_t(v.dy), C.int(y0), C.int(rows), C.int(size),
		(*C.int32_t)(unsafe.Pointer(&kh.min[0])), (*C.int32_t)(unsafe.Pointer(&kh.n[0])),
		(*C.int32_t)(unsafe.Pointer(&kh.coeffs[0])), C.int(kh.ksize),
		(*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(tmp))))
}

func vpassNative(src []byte, rowBytes int, kv *kernel, y0, size int, dst []byte) {
	C.tusou_vpass(cbool(haveSIMD), (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(src))), C.int(rowBytes),
		(*C.int32_t)(unsafe.Pointer(&kv.min[0])), (*C.int32_t)(unsafe.Pointer(&kv.n[0])),
		(*C.int32_t)(unsafe.Pointer(&kv.coeffs[0])), C.int(kv.ksize), C.int(y0), C.int(size),
		(*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(dst))))
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}
