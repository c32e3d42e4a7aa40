package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/url"
)

// File is one image to ingest.
type File struct {
	// Name is the multipart file name (the gateway keeps it for error messages).
	Name string
	// Data is the image's bytes.
	Data []byte
	// ID is an optional client-chosen id, only allowed when a request carries
	// one file; empty means the gateway's default, the SHA-256 of Data.
	ID string
	// Metadata is this file's own metadata; its keys win over
	// IngestOptions.Metadata. Sent as a "file_metadata" part right after the file.
	Metadata map[string]any
}

// Refresh policies of an ingest (the gateway's ?refresh=).
const (
	// RefreshWaitFor answers once the documents are searchable (the gateway default).
	RefreshWaitFor = "wait_for"
	// RefreshFalse answers once the documents are stored; they become
	// searchable within the index refresh interval. For bulk loaders.
	RefreshFalse = "false"
	// RefreshTrue is RefreshWaitFor with an immediate refresh.
	RefreshTrue = "true"
)

// IngestOptions apply to a whole ingest request.
type IngestOptions struct {
	// Refresh is "", RefreshWaitFor, RefreshFalse or RefreshTrue ("" means the gateway default).
	Refresh string
	// NearDuplicates asks for each image's near-duplicates among those indexed.
	NearDuplicates bool
	// Metadata is stored with every file of the request.
	Metadata map[string]any
}

// NearDuplicate is another indexed image whose cosine similarity to the
// ingested one is at least the gateway's search.near_duplicate_threshold.
type NearDuplicate struct {
	ID    string  `json:"id"`
	Score float64 `json:"score"`
}

// Results of one ingested file.
const (
	ResultCreated = "created"
	ResultExists  = "exists"
)

// IngestItem is the outcome for one file, in request order.
type IngestItem struct {
	ID     string       `json:"id,omitempty"`
	Result string       `json:"result,omitempty"`
	Error  *ErrorDetail `json:"error,omitempty"`
	// NearDuplicates is set when IngestOptions.NearDuplicates was asked for.
	NearDuplicates []NearDuplicate `json:"near_duplicates,omitempty"`
}

// IngestResponse is the gateway's answer to an ingest.
type IngestResponse struct {
	Items  []IngestItem `json:"items"`
	Errors bool         `json:"errors"`
	TookMS int64        `json:"took_ms"`
}

// Ingest uploads files in one multipart request. Per-file failures are in
// the items (Error set), not in the returned error. When every file failed
// the gateway answers with the first file's error status: Ingest then
// returns the items anyway, with a nil error, if the answer carries them.
func (c *Client) Ingest(ctx context.Context, files []File, opts IngestOptions) (*IngestResponse, error) {
	if len(files) == 0 {
		return nil, errors.New("ingest: no files")
	}
	body, ct, err := multipartIngest(files, opts.Metadata)
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	if opts.Refresh != "" {
		q.Set("refresh", opts.Refresh)
	}
	if opts.NearDuplicates {
		q.Set("near_duplicates", "true")
	}
	var out IngestResponse
	err = c.do(ctx, request{method: http.MethodPost, path: "/v1/images", query: q, body: body, contentType: ct}, &out)
	var apiErr *APIError
	if errors.As(err, &apiErr) && len(apiErr.Items) == len(files) {
		return &IngestResponse{Items: apiErr.Items, Errors: true}, nil
	}
	if err != nil {
		return nil, err
	}
	if len(out.Items) != len(files) {
		return nil, fmt.Errorf("ingest: the gateway answered %d items for %d files", len(out.Items), len(files))
	}
	return &out, nil
}

func multipartIngest(files []File, metadata map[string]any) ([]byte, string, error) {
	size := 1024
	for _, f := range files {
		size += len(f.Data) + 512
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	w := multipart.NewWriter(buf)
	if metadata != nil {
		if err := writeJSONField(w, "metadata", metadata); err != nil {
			return nil, "", err
		}
	}
	for _, f := range files {
		if f.ID != "" {
			if len(files) > 1 {
				return nil, "", errors.New("ingest: an id can only be given with a single file")
			}
			if err := w.WriteField("id", f.ID); err != nil {
				return nil, "", err
			}
		}
		fw, err := w.CreateFormFile("file", f.Name)
		if err != nil {
			return nil, "", err
		}
		if _, err := fw.Write(f.Data); err != nil {
			return nil, "", err
		}
		if f.Metadata != nil {
			if err := writeJSONField(w, "file_metadata", f.Metadata); err != nil {
				return nil, "", err
			}
		}
	}
	if err := w.Close(); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), w.FormDataContentType(), nil
}

func writeJSONField(w *multipart.Writer, name string, v map[string]any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return w.WriteField(name, string(b))
}

// MaxExistsIDs is the most ids the gateway checks in one _exists call.
const MaxExistsIDs = 1000

// Exists returns the subset of ids that are indexed, in request order. More
// than MaxExistsIDs ids are checked in several calls.
func (c *Client) Exists(ctx context.Context, ids []string) ([]string, error) {
	var found []string
	for len(ids) > 0 {
		n := min(len(ids), MaxExistsIDs)
		body, err := json.Marshal(map[string][]string{"ids": ids[:n]})
		if err != nil {
			return nil, err
		}
		var out struct {
			Found []string `json:"found"`
		}
		if err := c.do(ctx, request{method: http.MethodPost, path: "/v1/images/_exists", body: body, contentType: "application/json"}, &out); err != nil {
			return nil, err
		}
		found = append(found, out.Found...)
		ids = ids[n:]
	}
	return found, nil
}
