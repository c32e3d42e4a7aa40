package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/config"
	"github.com/tusou/tusou/service"
)

type handlers struct {
	cfg    *config.Config
	svc    Service
	checks []Check
	models Models // nil: no admin API
}

func tookMS(start time.Time) int64 { return time.Since(start).Milliseconds() }

func (h *handlers) healthz(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

// readyz checks every dependency concurrently with a short deadline, so a
// hung dependency makes the pod unready rather than hanging the probe.
func (h *handlers) readyz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	status := make(map[string]string, len(h.checks))
	var mu sync.Mutex
	var wg sync.WaitGroup
	ready := true
	for _, chk := range h.checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := chk.Ready(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				ready = false
				status[chk.Name] = publicError(err).Message
			} else {
				status[chk.Name] = "ok"
			}
		}()
	}
	wg.Wait()
	body := gin.H{"status": "ok", "checks": status}
	// Taken after the checks, so the states are at least as fresh as them.
	if replicas := h.replicaStates(); len(replicas) > 0 {
		body["replicas"] = replicas
	}
	if !ready {
		body["status"] = "unavailable"
		c.Header("Retry-After", "5")
		c.JSON(http.StatusServiceUnavailable, body)
		return
	}
	c.JSON(http.StatusOK, body)
}

// replicaStates returns check name → instance address → state for the checks
// that balance over several instances (Triton replicas).
func (h *handlers) replicaStates() map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, chk := range h.checks {
		if chk.Replicas != nil {
			out[chk.Name] = chk.Replicas()
		}
	}
	return out
}

type ingestItemJSON struct {
	ID     string       `json:"id,omitempty"`
	Result string       `json:"result,omitempty"`
	Error  *errorDetail `json:"error,omitempty"`
	// NearDuplicates is present only with ?near_duplicates=true.
	NearDuplicates *[]service.Duplicate `json:"near_duplicates,omitempty"`
}

// ingest accepts multipart uploads (file parts, optional id and metadata) or
// one raw image body (id and metadata in the query string).
func (h *handlers) ingest(c *gin.Context) {
	start := time.Now()
	refresh, err := refreshParam(c)
	if err != nil {
		abortWithError(c, err)
		return
	}
	nearDups, err := h.nearDuplicatesParam(c)
	if err != nil {
		abortWithError(c, err)
		return
	}
	uploads, err := h.readUploads(c)
	if err != nil {
		abortWithError(c, err)
		return
	}
	items, err := h.svc.Ingest(c.Request.Context(), uploads, service.IngestOptions{Refresh: refresh, NearDuplicates: nearDups})
	if err != nil {
		abortWithError(c, err)
		return
	}
	out := make([]ingestItemJSON, len(items))
	failed, created := 0, false
	var firstErr error
	for i, it := range items {
		out[i] = ingestItemJSON{ID: it.ID, Result: string(it.Result), Error: itemError(it.Err),
			NearDuplicates: duplicatesJSON(it.NearDuplicates, nearDups != nil && it.Err == nil)}
		if it.Err != nil {
			failed++
			if firstErr == nil {
				firstErr = it.Err
			}
		}
		created = created || it.Result == service.Created
	}
	switch {
	case len(items) == 1 && failed == 1:
		abortWithError(c, firstErr)
	case failed == len(items):
		// Every item failed: the request as a whole failed, with the first reason.
		status := setErrorHeaders(c, firstErr)
		c.AbortWithStatusJSON(status, gin.H{"error": errorResponse(firstErr).Error, "items": out, "took_ms": tookMS(start)})
	default:
		status := http.StatusOK
		if created {
			status = http.StatusCreated
		}
		c.JSON(status, gin.H{"items": out, "errors": failed > 0, "took_ms": tookMS(start)})
	}
}

func (h *handlers) readUploads(c *gin.Context) ([]service.Upload, error) {
	ct := c.GetHeader("Content-Type")
	mediaType, _, _ := mime.ParseMediaType(ct)
	switch {
	case mediaType == "multipart/form-data":
		return h.readMultipartUploads(c)
	case strings.HasPrefix(mediaType, "image/") || mediaType == "application/octet-stream":
		up := service.Upload{ID: c.Query("id")}
		if up.ID != "" {
			if err := checkID(up.ID); err != nil {
				return nil, err
			}
		}
		if md := c.Query("metadata"); md != "" {
			if int64(len(md)) > h.cfg.Server.MaxMetadataBytes {
				return nil, apierr.New(apierr.TooLarge, "metadata_too_large", "metadata is larger than %d bytes", h.cfg.Server.MaxMetadataBytes)
			}
			m, err := parseMetadata([]byte(md))
			if err != nil {
				return nil, err
			}
			up.Metadata = m
		}
		data, err := arenaOf(c).read(c.Request.Body, h.cfg.Preprocess.MaxBytes, "the image", "image_too_large")
		if err != nil {
			return nil, err
		}
		up.Data = data
		return []service.Upload{up}, nil
	case ct == "":
		return nil, apierr.New(apierr.UnsupportedMediaType, "content_type_missing",
			"Content-Type is required: multipart/form-data with file parts, or an image/* body")
	}
	return nil, apierr.New(apierr.UnsupportedMediaType, "content_type_unsupported",
		"Content-Type %q is not accepted: use multipart/form-data with file parts, or an image/* body", truncate(ct, 64))
}

// readMultipartUploads streams the parts so a huge part is refused without
// being buffered whole.
func (h *handlers) readMultipartUploads(c *gin.Context) ([]service.Upload, error) {
	mr, err := c.Request.MultipartReader()
	if err != nil {
		return nil, apierr.New(apierr.InvalidArgument, "invalid_multipart", "malformed multipart body: %v", err)
	}
	var uploads []service.Upload
	var id string
	var metadata map[string]any
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, multipartError(err)
		}
		switch part.FormName() {
		case "file":
			if len(uploads) == h.cfg.Server.MaxFiles {
				return nil, apierr.New(apierr.TooLarge, "too_many_files", "at most %d files per request", h.cfg.Server.MaxFiles)
			}
			data, err := arenaOf(c).read(part, h.cfg.Preprocess.MaxBytes, "file "+quoteName(part.FileName()), "image_too_large")
			if err != nil {
				return nil, err
			}
			uploads = append(uploads, service.Upload{Data: data, Filename: part.FileName()})
		case "id":
			raw, err := readLimited(part, 256, "id", "invalid_id")
			if err != nil {
				return nil, err
			}
			id = string(raw)
			if err := checkID(id); err != nil {
				return nil, err
			}
		case "metadata":
			raw, err := readLimited(part, h.cfg.Server.MaxMetadataBytes, "metadata", "metadata_too_large")
			if err != nil {
				return nil, err
			}
			if metadata, err = parseMetadata(raw); err != nil {
				return nil, err
			}
		case "file_metadata":
			// Per-file metadata: applies to the file part right before it.
			if len(uploads) == 0 || uploads[len(uploads)-1].Metadata != nil {
				return nil, apierr.New(apierr.InvalidArgument, "invalid_metadata",
					"file_metadata must come right after the file part it describes, at most once per file")
			}
			what := "file_metadata of file " + quoteName(uploads[len(uploads)-1].Filename)
			raw, err := readLimited(part, h.cfg.Server.MaxMetadataBytes, what, "metadata_too_large")
			if err != nil {
				return nil, err
			}
			md, err := parseMetadata(raw)
			if err != nil {
				return nil, apierr.New(apierr.InvalidArgument, "invalid_metadata", "%s: %s", what, strings.TrimPrefix(apierr.As(err).Message, "metadata: "))
			}
			uploads[len(uploads)-1].Metadata = md
		default:
			return nil, apierr.New(apierr.InvalidArgument, "unknown_field", "unknown multipart field %q (want file, file_metadata, id, metadata)", truncate(part.FormName(), 64))
		}
		part.Close()
	}
	if len(uploads) == 0 {
		return nil, apierr.New(apierr.InvalidArgument, "file_missing", "no file part: send the image as a multipart field named \"file\"")
	}
	if id != "" {
		if len(uploads) > 1 {
			return nil, apierr.New(apierr.InvalidArgument, "invalid_id", "id can only be given with a single file; got %d files", len(uploads))
		}
		uploads[0].ID = id
	}
	for i := range uploads {
		md, err := mergeMetadata(metadata, uploads[i].Metadata, h.cfg.Server.MaxMetadataBytes)
		if err != nil {
			return nil, apierr.New(apierr.TooLarge, "metadata_too_large", "file %s: %v", quoteName(uploads[i].Filename), err)
		}
		uploads[i].Metadata = md
	}
	return uploads, nil
}

// mergeMetadata lays a file's own metadata over the request's (its keys
// win), keeping the merged object within the per-image limit.
func mergeMetadata(shared, own map[string]any, limit int64) (map[string]any, error) {
	if own == nil {
		return shared, nil
	}
	if shared == nil {
		return own, nil
	}
	merged := make(map[string]any, len(shared)+len(own))
	maps.Copy(merged, shared)
	maps.Copy(merged, own)
	raw, err := json.Marshal(merged)
	if err != nil {
		return nil, err
	}
	if int64(len(raw)) > limit {
		return nil, fmt.Errorf("metadata and file_metadata together are %d bytes; the limit is %d", len(raw), limit)
	}
	return merged, nil
}

func multipartError(err error) error {
	if e := bodyReadError(err); apierr.KindOf(e) == apierr.TooLarge {
		return e
	}
	return apierr.New(apierr.InvalidArgument, "invalid_multipart", "malformed multipart body: %v", err)
}

func quoteName(s string) string {
	if s == "" {
		return "(unnamed)"
	}
	return "\"" + truncate(s, 64) + "\""
}

func (h *handlers) getImage(c *gin.Context) {
	img, err := h.svc.Get(c.Request.Context(), c.Param("id"))
	if err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(http.StatusOK, img)
}

func (h *handlers) getContent(c *gin.Context) {
	r, img, err := h.svc.Content(c.Request.Context(), c.Param("id"))
	if err != nil {
		abortWithError(c, err)
		return
	}
	defer r.Close()
	serveOriginal(c, r, c.Param("id"), img)
}

func (h *handlers) deleteImage(c *gin.Context) {
	refresh, err := refreshParam(c)
	if err != nil {
		abortWithError(c, err)
		return
	}
	if err := h.svc.Delete(c.Request.Context(), c.Param("id"), refresh); err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"id": c.Param("id"), "result": "deleted"})
}

// searchImage accepts multipart (file + k, num_candidates, filter, min_score
// fields) or a raw image body with those parameters in the query string.
func (h *handlers) searchImage(c *gin.Context) {
	start := time.Now()
	var p searchParams
	var data []byte
	mediaType, _, _ := mime.ParseMediaType(c.GetHeader("Content-Type"))
	switch {
	case mediaType == "multipart/form-data":
		var err error
		if data, err = h.readSearchMultipart(c, &p); err != nil {
			abortWithError(c, err)
			return
		}
	case strings.HasPrefix(mediaType, "image/") || mediaType == "application/octet-stream":
		for name, vals := range c.Request.URL.Query() {
			if err := p.setFormField(name, vals[0]); err != nil {
				abortWithError(c, err)
				return
			}
		}
		var err error
		if data, err = arenaOf(c).read(c.Request.Body, h.cfg.Preprocess.MaxBytes, "the image", "image_too_large"); err != nil {
			abortWithError(c, err)
			return
		}
	default:
		abortWithError(c, apierr.New(apierr.UnsupportedMediaType, "content_type_unsupported",
			"search by image takes multipart/form-data with a file part, or an image/* body"))
		return
	}
	q, err := p.query(h.cfg.Search)
	if err != nil {
		abortWithError(c, err)
		return
	}
	hits, err := h.svc.SearchImage(c.Request.Context(), data, q)
	if err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"hits": nonNil(hits), "took_ms": tookMS(start)})
}

func (h *handlers) readSearchMultipart(c *gin.Context, p *searchParams) ([]byte, error) {
	mr, err := c.Request.MultipartReader()
	if err != nil {
		return nil, apierr.New(apierr.InvalidArgument, "invalid_multipart", "malformed multipart body: %v", err)
	}
	var data []byte
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, multipartError(err)
		}
		if part.FormName() == "file" {
			if data != nil {
				return nil, apierr.New(apierr.InvalidArgument, "too_many_files", "search by image takes exactly one file")
			}
			if data, err = arenaOf(c).read(part, h.cfg.Preprocess.MaxBytes, "the image", "image_too_large"); err != nil {
				return nil, err
			}
			continue
		}
		if err := readField(part, p); err != nil {
			return nil, err
		}
	}
	if data == nil {
		return nil, apierr.New(apierr.InvalidArgument, "file_missing", "no file part: send the query image as a multipart field named \"file\"")
	}
	return data, nil
}

func readField(part *multipart.Part, p *searchParams) error {
	defer part.Close()
	raw, err := readLimited(part, 64<<10, "field "+quoteName(part.FormName()), "field_too_large")
	if err != nil {
		return err
	}
	return p.setFormField(part.FormName(), string(raw))
}

type textSearchRequest struct {
	Text *string `json:"text"`
	searchParams
}

func (h *handlers) searchText(c *gin.Context) {
	start := time.Now()
	body, err := readLimited(c.Request.Body, int64(h.cfg.Search.MaxTextBytes)+64<<10, "the request body", "request_too_large")
	if err != nil {
		abortWithError(c, err)
		return
	}
	var req textSearchRequest
	if err := decodeJSON(body, &req); err != nil {
		abortWithError(c, err)
		return
	}
	if req.Text == nil || strings.TrimSpace(*req.Text) == "" {
		abortWithError(c, apierr.New(apierr.InvalidArgument, "text_missing", "text is required and must not be blank"))
		return
	}
	if len(*req.Text) > h.cfg.Search.MaxTextBytes {
		abortWithError(c, apierr.New(apierr.TooLarge, "text_too_large", "text is %d bytes; the limit is %d", len(*req.Text), h.cfg.Search.MaxTextBytes))
		return
	}
	q, err := req.query(h.cfg.Search)
	if err != nil {
		abortWithError(c, err)
		return
	}
	hits, err := h.svc.SearchText(c.Request.Context(), *req.Text, q)
	if err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"hits": nonNil(hits), "took_ms": tookMS(start)})
}

func nonNil(h []service.Hit) []service.Hit {
	if h == nil {
		return []service.Hit{}
	}
	return h
}
