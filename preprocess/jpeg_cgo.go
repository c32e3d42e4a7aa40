//go:build cgo

package preprocess

/*
#cgo LDFLAGS: -lturbojpeg
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

// tusou_tj_decode decompresses buf into dst (width*height*ps bytes, tightly
// packed) at the scaling factor num/denom. It returns 0 on success, 1 when
// libjpeg only warned (the image is decoded), -1 on a fatal error; msg gets
// libjpeg's message. ISLOW DCT and fancy upsampling are libjpeg's defaults and
// what Pillow uses; TJFLAG_LIMITSCANS caps progressive scans at 500 so a
// hostile file cannot spin the CPU (no real encoder writes more than ~10).
static int tusou_tj_decode(tjhandle h, const unsigned char *buf, unsigned long size,
                           unsigned char *dst, int width, int height, int pf,
                           char *msg, int msglen) {
	int flags = TJFLAG_ACCURATEDCT | TJFLAG_LIMITSCANS;
	int rc = tjDecompress2(h, buf, size, dst, width, 0, height, pf, flags);
	if (rc == 0) {
		return 0;
	}
	strncpy(msg, tjGetErrorStr2(h), msglen - 1);
	msg[msglen - 1] = 0;
	return tjGetErrorCode(h) == TJERR_WARNING ? 1 : -1;
}

static int tusou_tj_header(tjhandle h, const unsigned char *buf, unsigned long size,
                           int *w, int *hh, int *subsamp, int *cs, char *msg, int msglen) {
	int rc = tjDecompressHeader3(h, buf, size, w, hh, subsamp, cs);
	if (rc != 0) {
		strncpy(msg, tjGetErrorStr2(h), msglen - 1);
		msg[msglen - 1] = 0;
	}
	return rc;
}
*/
import "C"

import (
	"errors"
	"strings"
	"unsafe"
)

// jpegExact reports whether JPEG decoding is bit-identical to Pillow's
// (libjpeg-turbo, ISLOW, fancy upsampling). True in cgo builds.
const jpegExact = true

// tjHandles is a free list of TurboJPEG decompressors: creating one costs a
// few allocations inside libjpeg, and a channel (unlike sync.Pool) never drops
// a handle without tjDestroy.
var tjHandles = make(chan C.tjhandle, 16)

func getTJ() (C.tjhandle, error) {
	select {
	case h := <-tjHandles:
		return h, nil
	default:
	}
	h := C.tjInitDecompress()
	if h == nil {
		return nil, errors.New("tjInitDecompress failed")
	}
	return h, nil
}

func putTJ(h C.tjhandle) {
	select {
	case tjHandles <- h:
	default:
		C.tjDestroy(h)
	}
}

// decodeJPEG decodes data at 1/denom scale (denom in 1, 2, 4, 8) into an RGB
// image whose pixel buffer comes from bufs. hdr must come from parseHeader.
func decodeJPEG(data []byte, hdr header, denom int, bufs *buffers) (rgbImage, error) {
	h, err := getTJ()
	if err != nil {
		return rgbImage{}, err
	}
	defer putTJ(h)

	var msg [256]C.char
	var w, ht, subsamp, cs C.int
	src := (*C.uchar)(unsafe.Pointer(&data[0]))
	if C.tusou_tj_header(h, src, C.ulong(len(data)), &w, &ht, &subsamp, &cs, &msg[0], C.int(len(msg))) != 0 {
		return rgbImage{}, errors.New(C.GoString(&msg[0]))
	}
	if int(w) != hdr.width || int(ht) != hdr.height {
		return rgbImage{}, errors.New("frame header disagrees with libjpeg")
	}
	sw := (int(w) + denom - 1) / denom
	sh := (int(ht) + denom - 1) / denom
	cmyk := cs == C.TJCS_CMYK || cs == C.TJCS_YCCK
	pf, ps := C.int(C.TJPF_RGB), 3
	if cmyk {
		// TurboJPEG 2.1 cannot convert CMYK to RGB; take libjpeg's raw CMYK
		// (YCCK already converted) and apply Pillow's conversion below.
		pf, ps = C.TJPF_CMYK, 4
	}
	// tjDecompress2 picks the scaling factor whose output fits sw×sh, which
	// for these sizes (TJSCALED with 1/denom) is exactly 1/denom.
	buf := bufs.decode(sw * sh * ps)
	rc := C.tusou_tj_decode(h, src, C.ulong(len(data)), (*C.uchar)(unsafe.Pointer(&buf[0])),
		C.int(sw), C.int(sh), pf, &msg[0], C.int(len(msg)))
	if rc < 0 {
		return rgbImage{}, errors.New(C.GoString(&msg[0]))
	}
	if rc > 0 {
		// libjpeg warns and decodes on. Benign warnings (extraneous bytes
		// before a marker, odd progression parameters) are common in files
		// from real cameras and editors and are tolerated, as Pillow does.
		// Damaged entropy-coded data (bad Huffman codes, lost restart
		// markers) or a truncated file decode to garbage pixels: Pillow would
		// index that garbage; we refuse it, so a corrupt upload never becomes
		// a searchable vector.
		m := C.GoString(&msg[0])
		if damagedJPEG(m) {
			return rgbImage{}, errors.New(m)
		}
	}
	if cmyk {
		// In place: CMYK (4 bytes) -> RGB (3 bytes), front to back is safe.
		// Pillow reads 4-channel JPEGs as "CMYK;I" (Adobe's inverted
		// polarity, every channel 255-v) and converts CMYK to RGB with
		// r = CLIP8(nk - MULDIV255(c, nk)), nk = 255 - k.
		n := sw * sh
		for i := 0; i < n; i++ {
			s := buf[i*4 : i*4+4 : i*4+4]
			c, m, y, k := 255-int(s[0]), 255-int(s[1]), 255-int(s[2]), 255-int(s[3])
			nk := 255 - k
			d := buf[i*3 : i*3+3 : i*3+3]
			d[0] = clipU8(nk - muldiv255(c, nk))
			d[1] = clipU8(nk - muldiv255(m, nk))
			d[2] = clipU8(nk - muldiv255(y, nk))
		}
		buf = buf[:n*3]
	}
	return rgbImage{pix: buf, w: sw, h: sh, stride: sw * 3}, nil
}

// damagedJPEG reports whether a libjpeg warning means the pixel data itself
// is damaged (as opposed to harmless irregularities around it).
func damagedJPEG(warning string) bool {
	w := strings.ToLower(warning)
	return strings.Contains(w, "premature end") || strings.Contains(w, "bad huffman code") ||
		strings.Contains(w, "instead of rst")
}
