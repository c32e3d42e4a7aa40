package blobstore

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tusou/tusou/apierr"
)

func TestDirRoundTrip(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	d, err := NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("\x89PNG fake bytes")
	if err := d.Put(ctx, "a", data); err != nil {
		t.Fatal(err)
	}
	r, size, err := d.Open(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	r.Close()
	if !bytes.Equal(got, data) || size != int64(len(data)) {
		t.Fatalf("got %q (%d), want %q", got, size, data)
	}
	if err := d.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Open(ctx, "a"); apierr.KindOf(err) != apierr.NotFound {
		t.Fatalf("after delete: want NotFound, got %v", err)
	}
	if err := d.Delete(ctx, "a"); err != nil {
		t.Fatalf("deleting a missing blob: %v", err)
	}
}

func TestDirIDsCannotEscapeRoot(t *testing.T) {
	ctx := context.Background()
	parent := t.TempDir()
	root := filepath.Join(parent, "blobs")
	d, err := NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Put(ctx, "../../escape", []byte("x")); err != nil {
		t.Fatal(err)
	}
	err = filepath.Walk(parent, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !info.IsDir() && !strings.HasPrefix(p, root+string(filepath.Separator)) {
			t.Errorf("blob written outside the root: %s", p)
		}
		if strings.Contains(filepath.Base(p), ".tmp-") {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
