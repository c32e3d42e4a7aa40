//go:build cgo

package preprocess

/*
#cgo LDFLAGS: -lpng
#include <png.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>

typedef struct {
	const uint8_t *data;
	size_t size, pos;
	char *msg;
} tusou_png_src;

static void tusou_png_read(png_structp png, png_bytep out, png_size_t n) {
	tusou_png_src *s = (tusou_png_src *)png_get_io_ptr(png);
	if (n > s->size - s->pos) {
		png_error(png, "truncated PNG data");
	}
	memcpy(out, s->data + s->pos, n);
	s->pos += n;
}

static void tusou_png_error(png_structp png, png_const_charp msg) {
	char *buf = (char *)png_get_error_ptr(png);
	strncpy(buf, msg, 255);
	buf[255] = 0;
	png_longjmp(png, 1);
}

static void tusou_png_warning(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

// Pillow's ImagingAlphaComposite over an opaque background (see compositor
// in convert.go): coef1 = a*128, coef2 = (255-a)*128, SHIFTFORDIV255.
static inline uint8_t tusou_blend(uint32_t v, uint32_t a, uint32_t bg) {
	uint32_t t = v * a * 128 + bg * (255 - a) * 128 + (0x80 << 7);
	return (uint8_t)((((t >> 8) + t) >> 8) >> 7);
}

// tusou_png_decode decodes a PNG into dst as packed RGB (w*h*3), the way the
// reference reads it: 16-bit samples keep the high byte (png_set_strip_16),
// 1/2/4-bit gray is scaled to 8 bits, palette and tRNS become RGBA, gray
// becomes RGB, and alpha is composited over bg. No gamma or colour
// management is applied (Pillow applies none). aux must hold w*h*4 bytes
// when the image has alpha or is interlaced, else it may be NULL. Returns 0,
// or -1 with msg set.
static int tusou_png_decode(const uint8_t *data, size_t size, uint8_t *dst, uint8_t *aux,
                            int w, int h, int bgr, int bgg, int bgb, char *msg, int *needaux) {
	tusou_png_src src = {data, size, 0, msg};
	png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, msg, tusou_png_error, tusou_png_warning);
	if (!png) {
		strcpy(msg, "png_create_read_struct failed");
		return -1;
	}
	png_infop info = png_create_info_struct(png);
	if (!info) {
		png_destroy_read_struct(&png, NULL, NULL);
		strcpy(msg, "png_create_info_struct failed");
		return -1;
	}
	if (setjmp(png_jmpbuf(png))) {
		png_destroy_read_struct(&png, &info, NULL);
		return -1;
	}
	png_set_read_fn(png, &src, tusou_png_read);
	// The caller already enforced its pixel limit on the IHDR size.
	png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
	// A bad CRC on an ancillary chunk before the image data (tRNS, ...) is
	// fatal, as in Pillow, rather than silently dropping the chunk.
	png_set_crc_action(png, PNG_CRC_DEFAULT, PNG_CRC_ERROR_QUIT);
	png_read_info(png, info);
	png_uint_32 pw, ph;
	int depth, ctype, interlace;
	png_get_IHDR(png, info, &pw, &ph, &depth, &ctype, &interlace, NULL, NULL);
	if ((int)pw != w || (int)ph != h) {
		png_error(png, "IHDR size changed");
	}
	if (depth == 16) {
		png_set_strip_16(png);
	}
	if (ctype == PNG_COLOR_TYPE_PALETTE) {
		png_set_palette_to_rgb(png);
	}
	if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) {
		png_set_expand_gray_1_2_4_to_8(png);
	}
	if (png_get_valid(png, info, PNG_INFO_tRNS)) {
		png_set_tRNS_to_alpha(png);
	}
	if (ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_GRAY_ALPHA) {
		png_set_gray_to_rgb(png);
	}
	int passes = png_set_interlace_handling(png);
	png_read_update_info(png, info);
	int channels = png_get_channels(png, info);
	if (png_get_bit_depth(png, info) != 8 || (channels != 3 && channels != 4)) {
		png_error(png, "unexpected PNG layout after transforms");
	}
	int direct = channels == 3 && passes == 1;
	if (!direct && aux == NULL) {
		*needaux = 1;
		png_destroy_read_struct(&png, &info, NULL);
		return 0;
	}
	uint8_t *buf = direct ? dst : aux;
	size_t stride = (size_t)w * channels;
	for (int p = 0; p < passes; p++) {
		for (int y = 0; y < h; y++) {
			png_read_row(png, buf + (size_t)y * stride, NULL);
		}
	}
	// Like Pillow, do not require anything after the image data (IEND).
	png_destroy_read_struct(&png, &info, NULL);
	if (direct) {
		return 0;
	}
	size_t n = (size_t)w * h;
	if (channels == 3) {
		memcpy(dst, aux, n * 3);
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		const uint8_t *s = aux + 4 * i;
		uint8_t *d = dst + 3 * i;
		uint32_t a = s[3];
		if (a == 255) {
			d[0] = s[0]; d[1] = s[1]; d[2] = s[2];
		} else if (a == 0) {
			d[0] = bgr; d[1] = bgg; d[2] = bgb;
		} else {
			d[0] = tusou_blend(s[0], a, bgr);
			d[1] = tusou_blend(s[1], a, bgg);
			d[2] = tusou_blend(s[2], a, bgb);
		}
	}
	return 0;
}
*/
import "C"

import (
	"errors"
	"unsafe"
)

// decodePNG decodes with libpng straight into the pooled RGB buffer (Go's
// image/png is about twice as slow and allocates a fresh image per call).
func decodePNG(data []byte, hdr header, bg [3]uint8, bufs *buffers) (rgbImage, error) {
	w, h := hdr.width, hdr.height
	dst := bufs.decode(w * h * 3)
	var msg [256]C.char
	var needAux C.int
	call := func(aux []byte) C.int {
		var auxp *C.uint8_t
		if aux != nil {
			auxp = (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(aux)))
		}
		return C.tusou_png_decode((*C.uint8_t)(unsafe.Pointer(&data[0])), C.size_t(len(data)),
			(*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(dst))), auxp, C.int(w), C.int(h),
			C.int(bg[0]), C.int(bg[1]), C.int(bg[2]), &msg[0], &needAux)
	}
	if call(nil) != 0 {
		return rgbImage{}, errors.New(C.GoString(&msg[0]))
	}
	if needAux != 0 {
		// Alpha or interlaced: decode into a 4-byte-per-pixel side buffer.
		aux := bufs.auxBuf(w * h * 4)
		if call(aux) != 0 {
			return rgbImage{}, errors.New(C.GoString(&msg[0]))
		}
	}
	return rgbImage{pix: dst, w: w, h: h, stride: w * 3}, nil
}
