// Package blobstore keeps the original bytes of ingested images so that
// GET /v1/images/{id}/content can return them. The default store is a local
// folder; the interface is small so an object-store backend can replace it.
package blobstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tusou/tusou/apierr"
)

// Dir stores blobs as files under a root folder. File names are the SHA-256
// of the document id, so client-chosen ids can never escape the folder.
type Dir struct {
	root string
}

// NewDir returns a store rooted at dir, creating it if needed.
func NewDir(dir string) (*Dir, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("blobs.dir: %w", err)
	}
	return &Dir{root: dir}, nil
}

func (d *Dir) path(id string) string {
	sum := sha256.Sum256([]byte(id))
	name := hex.EncodeToString(sum[:])
	return filepath.Join(d.root, name[:2], name)
}

// Put stores data under id atomically: readers see the old blob or the whole
// new one, never a partial file.
func (d *Dir) Put(ctx context.Context, id string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p := d.path(id)
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		return apierr.Wrap(err, apierr.Internal, "blob_write_failed", "could not store the image")
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return apierr.Wrap(err, apierr.Internal, "blob_write_failed", "could not store the image")
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return apierr.Wrap(err, apierr.Internal, "blob_write_failed", "could not store the image")
	}
	if err := tmp.Close(); err != nil {
		return apierr.Wrap(err, apierr.Internal, "blob_write_failed", "could not store the image")
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return apierr.Wrap(err, apierr.Internal, "blob_write_failed", "could not store the image")
	}
	return nil
}

// Open returns the blob for id and its size.
func (d *Dir) Open(ctx context.Context, id string) (io.ReadSeekCloser, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	f, err := os.Open(d.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, apierr.New(apierr.NotFound, "content_not_found", "no stored content for image %q", id)
	}
	if err != nil {
		return nil, 0, apierr.Wrap(err, apierr.Internal, "blob_read_failed", "could not read the image")
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, apierr.Wrap(err, apierr.Internal, "blob_read_failed", "could not read the image")
	}
	return f, st.Size(), nil
}

// Delete removes the blob for id; a missing blob is not an error.
func (d *Dir) Delete(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Remove(d.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return apierr.Wrap(err, apierr.Internal, "blob_delete_failed", "could not delete the stored image")
	}
	return nil
}
