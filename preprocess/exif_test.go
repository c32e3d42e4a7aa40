package preprocess

import (
	"encoding/binary"
	"testing"
)

// tiff builds a TIFF header + IFD0 with the given (tag, type, count, value)
// entries in byte order bo.
func tiff(bo binary.AppendByteOrder, entries [][4]uint32) []byte {
	b := make([]byte, 8)
	if bo == binary.AppendByteOrder(binary.LittleEndian) {
		copy(b, "II*\x00")
	} else {
		copy(b, "MM\x00*")
	}
	b = bo.AppendUint32(b[:4], 8)
	b = bo.AppendUint16(b, uint16(len(entries)))
	for _, e := range entries {
		b = bo.AppendUint16(b, uint16(e[0]))
		b = bo.AppendUint16(b, uint16(e[1]))
		b = bo.AppendUint32(b, e[2])
		if e[1] == 3 {
			b = append(bo.AppendUint16(b, uint16(e[3])), 0, 0)
		} else {
			b = bo.AppendUint32(b, e[3])
		}
	}
	return append(b, 0, 0, 0, 0)
}

func TestExifOrientation(t *testing.T) {
	le, be := binary.LittleEndian, binary.BigEndian
	cases := []struct {
		name    string
		data    []byte
		want    int
		present bool
	}{
		{"le short 6", tiff(le, [][4]uint32{{0x0112, 3, 1, 6}}), 6, true},
		{"be short 8", tiff(be, [][4]uint32{{0x010f, 2, 4, 0}, {0x0112, 3, 1, 8}}), 8, true},
		{"exif prefix", append([]byte("Exif\x00\x00"), tiff(le, [][4]uint32{{0x0112, 3, 1, 3}})...), 3, true},
		{"long type", tiff(le, [][4]uint32{{0x0112, 4, 1, 5}}), 5, true},
		{"duplicate keeps last", tiff(le, [][4]uint32{{0x0112, 3, 1, 6}, {0x0112, 3, 1, 2}}), 2, true},
		{"count 2 is not an orientation", tiff(le, [][4]uint32{{0x0112, 3, 2, 6}}), 0, true},
		{"ascii type ignored", tiff(le, [][4]uint32{{0x0112, 2, 1, 6}}), 0, true},
		{"absent", tiff(le, [][4]uint32{{0x010f, 2, 4, 0}}), 0, false},
		{"not tiff", []byte("JFIF\x00\x01\x02\x03\x04\x05"), 0, false},
		{"ifd offset past end", []byte("II*\x00\xff\xff\xff\x7f"), 0, false},
		{"truncated entries", tiff(le, [][4]uint32{{0x0112, 3, 1, 6}})[:14], 0, false},
		{"empty", nil, 0, false},
	}
	for _, c := range cases {
		got, present := exifOrientation(c.data)
		if got != c.want || present != c.present {
			t.Errorf("%s: got (%d, %v), want (%d, %v)", c.name, got, present, c.want, c.present)
		}
	}
	if validOrientation(0) != 1 || validOrientation(9) != 1 || validOrientation(7) != 7 {
		t.Error("validOrientation")
	}
}

func TestXMPOrientation(t *testing.T) {
	for in, want := range map[string]int{
		`<rdf:Description tiff:Orientation="6"/>`: 6,
		`<tiff:Orientation>8</tiff:Orientation>`:  8,
		`tiff:Orientation tiff:Orientation="3"`:   3,
		`<tiff:Orientation> 8</tiff:Orientation>`: 0,
		`nothing here`:       0,
		`tiff:Orientation="`: 0,
		`<exif:Orientation>6</exif:Orientation>tiff:Orie`: 0,
	} {
		if got := xmpOrientation([]byte(in)); got != want {
			t.Errorf("%q: got %d, want %d", in, got, want)
		}
	}
}

func TestResizeTarget(t *testing.T) {
	// transformers: int(224 * long / short), shortest side 224.
	for _, c := range []struct{ w, h, ow, oh int }{
		{640, 427, 335, 224}, // 224*640/427 = 335.7
		{427, 640, 224, 335},
		{224, 224, 224, 224},
		{1, 1, 224, 224},
		{300, 3, 22400, 224},
		{7, 300, 224, 9600},
		{4096, 2880, 318, 224}, // 318.57
	} {
		ow, oh := resizeTarget(c.w, c.h, 224)
		if ow != c.ow || oh != c.oh {
			t.Errorf("%dx%d: got %dx%d, want %dx%d", c.w, c.h, ow, oh, c.ow, c.oh)
		}
	}
}

func TestJPEGDenom(t *testing.T) {
	for _, c := range []struct{ w, h, want int }{
		{4096, 2880, 4}, // 720 >= 448, 360 < 448
		{2560, 1600, 2},
		{1280, 800, 1},
		{900, 900, 2},
		{8000, 6000, 8}, // 750
		{100, 100, 1},
	} {
		if got := jpegDenom(c.w, c.h, 448); got != c.want {
			t.Errorf("%dx%d: got 1/%d, want 1/%d", c.w, c.h, got, c.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	c := DefaultConfig()
	c.MaxBytes, c.MaxPixels, c.Formats, c.Size = 0, -1, []string{"bmp"}, 0
	c.Std[1] = 0
	c.DCTMinSideRatio = 0.5
	c.Background = "purple"
	err := c.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, key := range []string{"max_bytes:", "max_pixels:", "formats:", "size:", "std:", "dct_min_side_ratio:", "background:"} {
		if !contains(err.Error(), key) {
			t.Errorf("error does not name %s: %v", key, err)
		}
	}
	c = DefaultConfig()
	c.Background = "#102030"
	p, err := New(c)
	if err != nil || p.bg != [3]uint8{0x10, 0x20, 0x30} {
		t.Fatalf("hex background: %v %v", err, p)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
