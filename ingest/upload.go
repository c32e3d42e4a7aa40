package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"path"

	"github.com/tusou/tusou/client"
	"github.com/tusou/tusou/preprocess"
)

// unsupportedImages are formats that are photos or pictures but that the
// gateway does not decode: reported, so that no photo is dropped silently.
var unsupportedImages = map[string]bool{
	"bmp": true, "tiff": true, "psd": true, "ico": true, "jxl": true,
	"jpeg2000": true, "avif": true, "heic": true, "svg": true,
}

// hashAll sniffs and hashes files until in is closed or ctx is done.
func (e *engine) hashAll(ctx context.Context, in <-chan entry, out chan<- file) {
	for en := range in {
		if ctx.Err() != nil {
			continue // drain so that the walker never blocks
		}
		f, ok := e.hash(en)
		if !ok {
			continue
		}
		select {
		case out <- f:
		case <-ctx.Done():
		}
	}
}

// hash reads the file once: its first bytes decide whether it is an image
// (by content, not by name), all of it gives the content-hash id.
func (e *engine) hash(en entry) (file, bool) {
	fail := func(err error) (file, bool) {
		e.rec.file(kindFailed, &ReportLine{Path: en.path, Status: StatusFailed, Error: detail("unreadable", "%v", err)})
		return file{}, false
	}
	fh, err := os.Open(en.path)
	if err != nil {
		return fail(err)
	}
	defer fh.Close()
	head := make([]byte, preprocess.SniffLen)
	n, err := io.ReadFull(fh, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fail(err)
	}
	format, supported := preprocess.Sniff(head[:n])
	if !supported {
		if unsupportedImages[format] {
			e.rec.file(kindUnsupported, &ReportLine{Path: en.path, Status: StatusUnsupported, Format: format,
				Error: detail("unsupported_format", "%s images are not supported (jpeg, png, gif, webp are)", format)})
		} else {
			e.rec.file(kindNotImage, nil)
		}
		return file{}, false
	}
	h := sha256.New()
	h.Write(head[:n])
	rest, err := io.Copy(h, fh)
	if err != nil {
		return fail(err)
	}
	return file{entry: en, id: hex.EncodeToString(h.Sum(nil)), size: int64(n) + rest}, true
}

func baseName(rel string) string { return path.Base(rel) }

// upload sends one batch and records each file's outcome. A request refused
// as a whole for a reason that may be one file's (too large, malformed) is
// retried file by file so that the reason lands on the right file.
// It reports whether the gateway answered.
func (e *engine) upload(batch []file, refresh string) bool {
	files := make([]client.File, 0, len(batch))
	sent := make([]file, 0, len(batch))
	var bytes int64
	for _, f := range batch {
		data, err := os.ReadFile(f.path)
		if err != nil {
			e.rec.file(kindFailed, &ReportLine{Path: f.path, Status: StatusFailed, ID: f.id, Error: detail("unreadable", "%v", err)})
			continue
		}
		files = append(files, client.File{Name: baseName(f.rel), Data: data, Metadata: fileMetadata(f)})
		sent = append(sent, f)
		bytes += int64(len(data))
	}
	if len(files) == 0 {
		return true
	}
	resp, err := e.opts.Gateway.Ingest(e.reqCtx, files, client.IngestOptions{
		Refresh: refresh, NearDuplicates: e.opts.NearDuplicates, Metadata: e.opts.Metadata})
	var apiErr *client.APIError
	switch {
	case err == nil:
		e.rec.uploaded(len(files), bytes)
		for i, it := range resp.Items {
			e.item(sent[i], it)
		}
		return true
	case e.reqCtx.Err() != nil:
		return false // interrupted past the grace period: not recorded, a rerun does them
	case errors.As(err, &apiErr) && fatalStatus(apiErr):
		e.abort(err)
		return false
	case errors.As(err, &apiErr) && len(sent) > 1 && splittable(apiErr):
		answered := true
		for _, f := range sent {
			answered = e.upload([]file{f}, refresh) && answered
		}
		return answered
	case errors.As(err, &apiErr):
		// Answered, but the whole request failed even after retries (a
		// gateway in trouble): each file failed with that reason.
		e.rec.uploaded(len(files), bytes)
		for _, f := range sent {
			e.rec.file(kindFailed, &ReportLine{Path: f.path, Status: StatusFailed, ID: f.id, Error: &apiErr.ErrorDetail})
		}
		return true
	default:
		// No answer after every retry: the gateway is gone; failing every
		// remaining file one by one would only hide that.
		e.abort(err)
		return false
	}
}

// item records one file's answer.
func (e *engine) item(f file, it client.IngestItem) {
	switch {
	case it.Error != nil:
		e.rec.file(kindFailed, &ReportLine{Path: f.path, Status: StatusFailed, ID: f.id, Error: it.Error})
	case len(it.NearDuplicates) > 0:
		nd := make([]NearDuplicate, len(it.NearDuplicates))
		for i, d := range it.NearDuplicates {
			nd[i] = NearDuplicate{ID: d.ID, Score: d.Score, Path: e.pathOf(d.ID)}
		}
		k := kindIndexed
		if it.Result == client.ResultExists {
			k = kindExists
		}
		e.rec.file(k, &ReportLine{Path: f.path, Status: StatusNearDuplicates, ID: it.ID, NearDuplicates: nd})
	case it.Result == client.ResultExists:
		e.rec.file(kindExists, nil)
	default:
		e.rec.file(kindIndexed, nil)
	}
}

// fatalStatus: answers that no file of the run would fare better with.
func fatalStatus(e *client.APIError) bool {
	switch e.Status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed:
		return true
	}
	return false
}

// splittable: request-level refusals that one file may have caused.
func splittable(e *client.APIError) bool {
	return e.Status >= 400 && e.Status < 500 && e.Status != http.StatusTooManyRequests
}
