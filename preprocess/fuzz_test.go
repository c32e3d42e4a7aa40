package preprocess

import (
	"testing"

	"github.com/tusou/tusou/apierr"
)

// Fuzz targets: `go test` runs their seeds (testdata/fuzz/<name>/, the
// heads of the test images and hand-made hostile headers); `make fuzz`
// explores from them.

// FuzzSniff: naming a format never panics, needs no more than SniffLen
// bytes (callers such as tusou ingest sniff only that much), and names a
// media type exactly for the formats tusou decodes.
func FuzzSniff(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		format, supported := Sniff(b)
		head := b[:min(len(b), SniffLen)]
		if f2, s2 := Sniff(head); f2 != format || s2 != supported {
			t.Fatalf("whole input: %s %v; first %d bytes: %s %v", format, supported, len(head), f2, s2)
		}
		if supported != (MediaType(format) != "") {
			t.Fatalf("format %q supported=%v but media type %q", format, supported, MediaType(format))
		}
		if format == "" {
			t.Fatal("empty format name")
		}
	})
}

// FuzzProbe: reading a header and applying the byte, format and pixel
// limits never panics, allocates boundedly (the fuzzer's own memory limit
// catches a blow-up), and either accepts a header within every limit or
// refuses it with a client error; DecodeCost charges exactly the accepted
// ones.
func FuzzProbe(f *testing.F) {
	cfg := DefaultConfig()
	p, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := p.Probe(b)
		cost := p.DecodeCost(b)
		if err != nil {
			e := apierr.As(err)
			if e == nil {
				t.Fatalf("untyped error: %v", err)
			}
			switch e.Kind {
			case apierr.TooLarge, apierr.UnsupportedMediaType, apierr.Unprocessable:
			default:
				t.Fatalf("error of kind %s: %v", e.Kind, e)
			}
			if cost != 0 {
				t.Fatalf("a refused image costs %d", cost)
			}
			return
		}
		if MediaType(info.Format) == "" || info.Width <= 0 || info.Height <= 0 ||
			int64(info.Width)*int64(info.Height) > cfg.MaxPixels || info.Orientation < 1 || info.Orientation > 8 {
			t.Fatalf("accepted an impossible header: %+v", info)
		}
		if cost < decodeOverhead {
			t.Fatalf("an accepted %dx%d image costs %d", info.Width, info.Height, cost)
		}
	})
}
