//go:build cgo

package preprocess

import "testing"

func TestDamagedJPEGWarnings(t *testing.T) {
	for msg, want := range map[string]bool{
		"Corrupt JPEG data: bad Huffman code":                       true,
		"Corrupt JPEG data: premature end of data segment":          true,
		"Premature end of JPEG file":                                true,
		"Corrupt JPEG data: found marker 0xd9 instead of RST3":      true,
		"Corrupt JPEG data: 12 extraneous bytes before marker 0xd9": false,
		"Invalid SOS parameters for sequential JPEG":                false,
	} {
		if got := damagedJPEG(msg); got != want {
			t.Errorf("damagedJPEG(%q) = %v, want %v", msg, got, want)
		}
	}
}
