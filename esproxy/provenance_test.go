package esproxy

import (
	"strings"
	"testing"
)

func TestSameModelFingerprint(t *testing.T) {
	base := Provenance{Model: "clip_image", Version: "1", Dims: 3, Fingerprint: []float32{1, 0, 0}}
	near := base
	near.Fingerprint = []float32{0.9999, 0.01, 0} // same weights, other precision
	other := base
	other.Fingerprint = []float32{0.2, 0.9, 0.1} // another model with the same name
	unknown := base
	unknown.Fingerprint = nil // index made before fingerprints: names decide
	renamed := base
	renamed.Version = "2"
	cases := []struct {
		got  Provenance
		same bool
		why  string
	}{
		{near, true, ""},
		{unknown, true, ""},
		{other, false, "fingerprint cosine"},
		{renamed, false, `version "2"`},
	}
	for _, c := range cases {
		ok, why := sameModel(c.got, base)
		if ok != c.same || !strings.Contains(why, c.why) {
			t.Errorf("sameModel(%+v) = %v %q, want %v containing %q", c.got, ok, why, c.same, c.why)
		}
	}
}
