// Package blobstore keeps the original bytes of ingested images, so that
// GET /v1/images/{id}/content can return them and an index can be rebuilt
// for a new model. Two backends: a local folder (Dir, the local default) and
// an S3-compatible object store (S3, production). Both name a blob by the
// SHA-256 of its document id, so client-chosen ids never shape a path or key.
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

// Error codes shared by the backends. They are stable: clients may switch on them.
const (
	CodeNotFound     = "content_not_found"
	CodeWriteFailed  = "blob_write_failed"
	CodeReadFailed   = "blob_read_failed"
	CodeDeleteFailed = "blob_delete_failed"
)

// Backend names for blobs.backend.
const (
	BackendDir = "dir"
	BackendS3  = "s3"
)

// Store is what both backends implement.
type Store interface {
	// Put stores data under id, replacing any earlier blob atomically.
	Put(ctx context.Context, id string, data []byte) error
	// Open returns the blob for id and its size; a missing one is
	// apierr.NotFound with CodeNotFound.
	Open(ctx context.Context, id string) (io.ReadSeekCloser, int64, error)
	// Delete removes the blob for id; a missing one is not an error.
	Delete(ctx context.Context, id string) error
}

// New returns the backend blobs.backend names: the folder dir (nil when dir
// is empty: originals are not kept), or the object store s3, checked
// within ctx (see NewS3).
func New(ctx context.Context, backend, dir string, s3 S3Config) (Store, error) {
	switch backend {
	case BackendDir:
		if dir == "" {
			return nil, nil
		}
		d, err := NewDir(dir)
		if err != nil {
			return nil, err // not a nil *Dir in a non-nil Store
		}
		return d, nil
	case BackendS3:
		s, err := NewS3(ctx, s3)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	return nil, fmt.Errorf("blobs.backend: want %s or %s, got %q", BackendDir, BackendS3, backend)
}

// idHash is the hex SHA-256 of id: the name of its blob in every backend.
func idHash(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

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
	name := idHash(id)
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
		return apierr.Wrap(err, apierr.Internal, CodeWriteFailed, "could not store the image")
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return apierr.Wrap(err, apierr.Internal, CodeWriteFailed, "could not store the image")
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return apierr.Wrap(err, apierr.Internal, CodeWriteFailed, "could not store the image")
	}
	if err := tmp.Close(); err != nil {
		return apierr.Wrap(err, apierr.Internal, CodeWriteFailed, "could not store the image")
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return apierr.Wrap(err, apierr.Internal, CodeWriteFailed, "could not store the image")
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
		return nil, 0, apierr.New(apierr.NotFound, CodeNotFound, "no stored content for image %q", id)
	}
	if err != nil {
		return nil, 0, apierr.Wrap(err, apierr.Internal, CodeReadFailed, "could not read the image")
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, apierr.Wrap(err, apierr.Internal, CodeReadFailed, "could not read the image")
	}
	return f, st.Size(), nil
}

// Delete removes the blob for id; a missing blob is not an error.
func (d *Dir) Delete(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Remove(d.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return apierr.Wrap(err, apierr.Internal, CodeDeleteFailed, "could not delete the stored image")
	}
	return nil
}
