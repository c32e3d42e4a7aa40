package preprocess

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
)

// exifOrientation reads the Orientation tag (0x0112) from IFD0 of a TIFF
// structure (an EXIF payload with or without the "Exif\0\0" prefix). It
// mirrors Pillow's Image.getexif() as used by ImageOps.exif_transpose: the
// value counts only when it is a single SHORT or LONG in 1..8; anything else,
// including a malformed structure, means 1 (no transform). It never reads
// outside b. present reports whether IFD0 had the tag at all (Pillow only
// consults XMP when it did not).
func exifOrientation(b []byte) (orientation int, present bool) {
	for bytes.HasPrefix(b, []byte("Exif\x00\x00")) {
		b = b[6:]
	}
	if len(b) < 8 {
		return 0, false
	}
	var bo binary.ByteOrder
	switch {
	case b[0] == 'I' && b[1] == 'I':
		bo = binary.LittleEndian
	case b[0] == 'M' && b[1] == 'M':
		bo = binary.BigEndian
	default:
		return 0, false
	}
	// Pillow accepts both byte orders of the magic 42 (a historical quirk);
	// BigTIFF (43) uses 8-byte offsets and never carries camera EXIF.
	if m := b[2:4]; !(m[0] == 0 && m[1] == 0x2A) && !(m[0] == 0x2A && m[1] == 0) {
		return 0, false
	}
	off := uint64(bo.Uint32(b[4:8]))
	if off+2 > uint64(len(b)) {
		return 0, false
	}
	n := uint64(bo.Uint16(b[off:]))
	p := off + 2
	for i := uint64(0); i < n; i++ {
		e := p + 12*i
		if e+12 > uint64(len(b)) {
			break
		}
		tag := bo.Uint16(b[e:])
		if tag != 0x0112 {
			continue
		}
		typ := bo.Uint16(b[e+2:])
		count := bo.Uint32(b[e+4:])
		var v int
		switch {
		case typ == 3 && count == 1: // SHORT
			v = int(bo.Uint16(b[e+8:]))
		case typ == 4 && count == 1: // LONG
			v = int(bo.Uint32(b[e+8:]))
		case typ == 8 && count == 1: // SSHORT
			v = int(int16(bo.Uint16(b[e+8:])))
		case typ == 9 && count == 1: // SLONG
			v = int(int32(bo.Uint32(b[e+8:])))
		default:
			v = 0
		}
		// Pillow keeps the last duplicate tag.
		orientation, present = v, true
	}
	return orientation, present
}

// xmpOrientation is Pillow's fallback when EXIF has no Orientation: the first
// `tiff:Orientation="N"` or `<tiff:Orientation>N` in the XMP packet.
func xmpOrientation(xmp []byte) int {
	key := []byte("tiff:Orientation")
	for {
		i := bytes.Index(xmp, key)
		if i < 0 {
			return 0
		}
		rest := xmp[i+len(key):]
		if len(rest) >= 3 && rest[0] == '=' && rest[1] == '"' && rest[2] >= '0' && rest[2] <= '9' {
			return int(rest[2] - '0')
		}
		if len(rest) >= 2 && rest[0] == '>' && rest[1] >= '0' && rest[1] <= '9' {
			return int(rest[1] - '0')
		}
		xmp = rest
	}
}

// rawProfileExif decodes ImageMagick's "Raw profile type exif" PNG text:
// "\nexif\n<len>\n<hex lines>". Pillow joins lines 3.. and hex-decodes them.
func rawProfileExif(text []byte) []byte {
	lines := bytes.Split(text, []byte("\n"))
	if len(lines) < 4 {
		return nil
	}
	joined := bytes.Join(lines[3:], nil)
	out := make([]byte, hex.DecodedLen(len(joined)))
	n, err := hex.Decode(out, joined)
	if err != nil {
		return nil
	}
	return out[:n]
}

// validOrientation maps anything outside 1..8 to 1, as exif_transpose ignores it.
func validOrientation(o int) int {
	if o < 1 || o > 8 {
		return 1
	}
	return o
}
