package preprocess

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"io"
)

// header is what the container says before any pixel is decoded.
type header struct {
	format string
	// width, height are the stored (pre-orientation) dimensions.
	width, height int
	// orientation is the EXIF/XMP orientation, 1..8.
	orientation int
	// JPEG only.
	jpegComponents int
	jpegPrecision  int
	// jpegProgressive: libjpeg then holds every DCT coefficient of the
	// image until the last scan (see DecodeCost).
	jpegProgressive bool
}

var errTruncatedHeader = errors.New("header truncated")

// SniffLen is how many leading bytes Sniff needs to name any format it knows.
const SniffLen = 1024

// Sniff names a file's format from its first SniffLen bytes, without decoding:
// supported says whether tusou decodes it (jpeg, png, gif, webp). Other
// formats get a name ("heic", "tiff", "pdf", "html", ...) or "unknown". Clients
// such as `tusou ingest` use it to pick image files by content, not by name.
func Sniff(b []byte) (format string, supported bool) { return sniff(b) }

// sniff names the format from magic bytes. Unsupported formats get a name for
// the error message; "" means the bytes match nothing known.
func sniff(b []byte) (format string, supported bool) {
	switch {
	case len(b) >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF:
		return FormatJPEG, true
	case bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")):
		return FormatPNG, true
	case bytes.HasPrefix(b, []byte("GIF87a")) || bytes.HasPrefix(b, []byte("GIF89a")):
		return FormatGIF, true
	case len(b) >= 12 && bytes.HasPrefix(b, []byte("RIFF")) && string(b[8:12]) == "WEBP":
		return FormatWebP, true
	}
	return sniffOther(b), false
}

// sniffOther names common non-image or unsupported image payloads so that a
// 415 says what was actually uploaded.
func sniffOther(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte("%PDF-")):
		return "pdf"
	case bytes.HasPrefix(b, []byte("BM")) && len(b) >= 14:
		return "bmp"
	case bytes.HasPrefix(b, []byte("II*\x00")) || bytes.HasPrefix(b, []byte("MM\x00*")):
		return "tiff"
	case bytes.HasPrefix(b, []byte("8BPS")):
		return "psd"
	case bytes.HasPrefix(b, []byte("\x00\x00\x01\x00")):
		return "ico"
	case bytes.HasPrefix(b, []byte("\xff\x0a")) || bytes.HasPrefix(b, []byte("\x00\x00\x00\x0cJXL \r\n\x87\n")):
		return "jxl"
	case bytes.HasPrefix(b, []byte("\x00\x00\x00\x0cjP  \r\n\x87\n")) || bytes.HasPrefix(b, []byte("\xff\x4f\xff\x51")):
		return "jpeg2000"
	case len(b) >= 12 && string(b[4:8]) == "ftyp":
		switch string(b[8:12]) {
		case "avif", "avis":
			return "avif"
		case "heic", "heix", "hevc", "hevx", "mif1", "msf1", "heim", "heis":
			return "heic"
		}
		return "mp4"
	case bytes.HasPrefix(b, []byte("RIFF")):
		return "riff"
	case bytes.HasPrefix(b, []byte("PK\x03\x04")):
		return "zip"
	case bytes.HasPrefix(b, []byte("\x1f\x8b")):
		return "gzip"
	}
	// Text formats: skip a BOM and leading whitespace, compare case-insensitively.
	t := b
	if len(t) > 1024 {
		t = t[:1024]
	}
	t = bytes.TrimPrefix(t, []byte("\xef\xbb\xbf"))
	t = bytes.TrimLeft(t, " \t\r\n")
	lt := bytes.ToLower(t)
	switch {
	case bytes.HasPrefix(lt, []byte("<svg")) || (bytes.HasPrefix(lt, []byte("<?xml")) && bytes.Contains(lt, []byte("<svg"))):
		return "svg"
	case bytes.HasPrefix(lt, []byte("<!doctype html")) || bytes.HasPrefix(lt, []byte("<html")) ||
		bytes.HasPrefix(lt, []byte("<head")) || bytes.HasPrefix(lt, []byte("<body")):
		return "html"
	case bytes.HasPrefix(lt, []byte("<?xml")):
		return "xml"
	case bytes.HasPrefix(lt, []byte("{")) || bytes.HasPrefix(lt, []byte("[")):
		return "json"
	}
	return "unknown"
}

// parseHeader reads dimensions and orientation without decoding pixels. It
// only reads inside b and allocates at most a bounded XMP/text buffer.
func parseHeader(b []byte, format string) (header, error) {
	switch format {
	case FormatJPEG:
		return parseJPEGHeader(b)
	case FormatPNG:
		return parsePNGHeader(b)
	case FormatGIF:
		if len(b) < 10 {
			return header{}, errTruncatedHeader
		}
		return header{format: FormatGIF, width: int(binary.LittleEndian.Uint16(b[6:])),
			height: int(binary.LittleEndian.Uint16(b[8:])), orientation: 1}, nil
	case FormatWebP:
		return parseWebPHeader(b)
	}
	return header{}, errors.New("unsupported format")
}

// parseJPEGHeader walks the marker segments up to the first SOF, collecting
// the first APP1 Exif and the XMP packet on the way (what Pillow reads).
func parseJPEGHeader(b []byte) (header, error) {
	h := header{format: FormatJPEG}
	var exif, xmp []byte
	haveExif := false
	p := 2
	for {
		// Find the next marker, skipping junk and fill bytes like libjpeg does.
		for p < len(b) && b[p] != 0xFF {
			p++
		}
		for p < len(b) && b[p] == 0xFF {
			p++
		}
		if p >= len(b) {
			return h, errTruncatedHeader
		}
		m := b[p]
		p++
		switch {
		case m == 0x01 || (m >= 0xD0 && m <= 0xD8):
			continue // standalone markers
		case m == 0xD9:
			return h, errors.New("end of image before frame header")
		case m == 0xDA:
			return h, errors.New("scan before frame header")
		}
		if p+2 > len(b) {
			return h, errTruncatedHeader
		}
		segLen := int(binary.BigEndian.Uint16(b[p:]))
		if segLen < 2 {
			return h, errors.New("bad marker length")
		}
		if p+segLen > len(b) {
			return h, errTruncatedHeader
		}
		seg := b[p+2 : p+segLen]
		p += segLen
		switch {
		case m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC:
			if len(seg) < 6 {
				return h, errors.New("short frame header")
			}
			h.jpegPrecision = int(seg[0])
			h.height = int(binary.BigEndian.Uint16(seg[1:]))
			h.width = int(binary.BigEndian.Uint16(seg[3:]))
			h.jpegComponents = int(seg[5])
			h.jpegProgressive = m == 0xC2 || m == 0xC6 || m == 0xCA || m == 0xCE
			o, present := exifOrientation(exif)
			if !present && xmp != nil {
				o = xmpOrientation(xmp)
			}
			h.orientation = validOrientation(o)
			return h, nil
		case m == 0xE1 && bytes.HasPrefix(seg, []byte("Exif\x00\x00")):
			if !haveExif {
				exif, haveExif = seg, true
			}
		case m == 0xE1 && bytes.HasPrefix(seg, []byte("http://ns.adobe.com/xap/1.0/\x00")):
			xmp = seg[len("http://ns.adobe.com/xap/1.0/\x00"):]
		}
	}
}

// maxTextChunk bounds how much of a compressed PNG text chunk is inflated
// while looking for orientation metadata.
const maxTextChunk = 1 << 20

// parsePNGHeader reads IHDR, then walks every chunk (skipping their data by
// length) for eXIf, the ImageMagick raw EXIF profile and XMP: Pillow reads
// them even when they follow the image data.
func parsePNGHeader(b []byte) (header, error) {
	h := header{format: FormatPNG, orientation: 1}
	if len(b) < 8+8+13 {
		return h, errTruncatedHeader
	}
	if string(b[12:16]) != "IHDR" || binary.BigEndian.Uint32(b[8:]) != 13 {
		return h, errors.New("first chunk is not IHDR")
	}
	h.width = int(binary.BigEndian.Uint32(b[16:]))
	h.height = int(binary.BigEndian.Uint32(b[20:]))
	var exif, xmp []byte
	p := 8
	for p+8 <= len(b) {
		n := uint64(binary.BigEndian.Uint32(b[p:]))
		typ := string(b[p+4 : p+8])
		start := uint64(p + 8)
		end := start + n
		if end+4 > uint64(len(b)) {
			break // truncated: the decoder will say so
		}
		data := b[start:end]
		switch typ {
		case "eXIf":
			exif = data
		case "tEXt", "zTXt", "iTXt":
			key, text := pngText(typ, data)
			switch key {
			case "Raw profile type exif":
				if exif == nil {
					exif = rawProfileExif(text)
				}
			case "XML:com.adobe.xmp":
				xmp = text
			}
		case "IEND":
			p = len(b)
			continue
		}
		p = int(end + 4)
	}
	o, present := exifOrientation(exif)
	if !present && xmp != nil {
		o = xmpOrientation(xmp)
	}
	h.orientation = validOrientation(o)
	return h, nil
}

// pngText returns the keyword and (inflated, bounded) text of a text chunk.
func pngText(typ string, data []byte) (string, []byte) {
	i := bytes.IndexByte(data, 0)
	if i < 0 {
		return "", nil
	}
	key, rest := string(data[:i]), data[i+1:]
	if key != "Raw profile type exif" && key != "XML:com.adobe.xmp" {
		return "", nil
	}
	compressed := false
	switch typ {
	case "zTXt":
		if len(rest) < 1 {
			return "", nil
		}
		rest, compressed = rest[1:], true
	case "iTXt":
		// compression flag, method, language\0, translated keyword\0, text
		if len(rest) < 2 {
			return "", nil
		}
		compressed = rest[0] == 1
		rest = rest[2:]
		for k := 0; k < 2; k++ {
			j := bytes.IndexByte(rest, 0)
			if j < 0 {
				return "", nil
			}
			rest = rest[j+1:]
		}
	}
	if !compressed {
		return key, rest
	}
	zr, err := zlib.NewReader(bytes.NewReader(rest))
	if err != nil {
		return "", nil
	}
	defer zr.Close()
	out, err := io.ReadAll(io.LimitReader(zr, maxTextChunk))
	if err != nil {
		return "", nil
	}
	return key, out
}

// parseWebPHeader reads the RIFF chunks: VP8X (canvas size), VP8 / VP8L
// (bitstream size) and EXIF / XMP for orientation.
func parseWebPHeader(b []byte) (header, error) {
	h := header{format: FormatWebP}
	if len(b) < 20 {
		return h, errTruncatedHeader
	}
	var exif, xmp []byte
	gotSize := false
	p := 12
	for p+8 <= len(b) {
		fourcc := string(b[p : p+4])
		n := int(binary.LittleEndian.Uint32(b[p+4:]))
		start := p + 8
		if n < 0 || n > len(b)-start {
			// Truncated chunk: use what is there for the size fields.
			n = len(b) - start
		}
		data := b[start : start+n]
		switch fourcc {
		case "VP8X":
			if len(data) < 10 {
				return h, errTruncatedHeader
			}
			h.width = 1 + int(uint32(data[4])|uint32(data[5])<<8|uint32(data[6])<<16)
			h.height = 1 + int(uint32(data[7])|uint32(data[8])<<8|uint32(data[9])<<16)
			gotSize = true
		case "VP8 ":
			if !gotSize {
				if len(data) < 10 || data[3] != 0x9d || data[4] != 0x01 || data[5] != 0x2a {
					return h, errors.New("bad VP8 frame header")
				}
				h.width = int(binary.LittleEndian.Uint16(data[6:]) & 0x3fff)
				h.height = int(binary.LittleEndian.Uint16(data[8:]) & 0x3fff)
				gotSize = true
			}
		case "VP8L":
			if !gotSize {
				if len(data) < 5 || data[0] != 0x2f {
					return h, errors.New("bad VP8L header")
				}
				bits := binary.LittleEndian.Uint32(data[1:])
				h.width = 1 + int(bits&0x3fff)
				h.height = 1 + int((bits>>14)&0x3fff)
				gotSize = true
			}
		case "EXIF":
			exif = data
		case "XMP ":
			xmp = data
		}
		p = start + n + n&1
	}
	if !gotSize {
		return h, errTruncatedHeader
	}
	o, present := exifOrientation(exif)
	if !present && xmp != nil {
		o = xmpOrientation(xmp)
	}
	h.orientation = validOrientation(o)
	return h, nil
}
