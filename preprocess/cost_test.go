package preprocess

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tusou/tusou/internal/testutil"
)

func TestDecodeCost(t *testing.T) {
	p, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(testutil.Root(), "model_repository/testdata/images", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	baseline := int64(4*750*500 + decodeOverhead) // 3000x2000 decoded at 1/4: 500 px >= 2*224
	if !jpegExact {
		baseline = 4*3000*2000 + decodeOverhead
	}
	for _, c := range []struct {
		name string
		data []byte
		want int64
	}{
		{"baseline jpeg, DCT-scaled", read("hubble_3000x2000.jpg"), baseline},
		// 640x427 stays full size (427 < 448); progressive adds 2 bytes per sample.
		{"progressive jpeg", read("flower_progressive.jpg"), 4*640*427 + 2*640*427*3 + decodeOverhead},
		{"png", read("chelsea.png"), 7*451*300 + decodeOverhead},
		{"not an image", []byte("hello"), 0},
	} {
		if got := p.DecodeCost(c.data); got != c.want {
			t.Errorf("%s: DecodeCost = %d, want %d", c.name, got, c.want)
		}
	}
}
