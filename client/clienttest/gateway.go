// Package clienttest is a protocol-speaking fake of the tusou gateway's REST
// API, for unit tests of code that talks to a gateway over HTTP. It parses
// requests as the real gateway does (multipart "file", "file_metadata",
// "metadata" and "id" parts; the refresh and near_duplicates parameters; the
// _exists body), answers in the gateway's JSON shapes and status codes, keeps
// images in memory under the same default id (SHA-256 of the bytes), and
// records what it received. Faults (429/503 with Retry-After) are injected
// with FailNext. The admin API's model generations and switches are faked
// too (see Models).
package clienttest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Image is a stored image.
type Image struct {
	ID       string
	Name     string
	Size     int
	Metadata map[string]any
}

// Upload is one file as received by an ingest request.
type Upload struct {
	ID             string
	Name           string
	Metadata       map[string]any
	Refresh        string
	NearDuplicates bool
	// Result is "created", "exists" or the error code.
	Result string
}

// ItemError is a per-file error the fake answers with.
type ItemError struct {
	Status        int
	Code, Message string
}

// NearDuplicate is one entry of an item's near_duplicates.
type NearDuplicate struct {
	ID    string  `json:"id"`
	Score float64 `json:"score"`
}

// Gateway is the fake. Set the exported hooks before the first request.
type Gateway struct {
	*httptest.Server

	// APIKey, when set, is required as "Authorization: ApiKey <key>",
	// "Authorization: Bearer <key>" or "X-API-Key: <key>".
	APIKey string
	// Reject, when set, decides per file whether ingest fails it.
	Reject func(name string, data []byte) *ItemError
	// NearDuplicatesOf, when set, answers near_duplicates for a new image.
	NearDuplicatesOf func(id string) []NearDuplicate
	// MaxFiles is the gateway's server.max_files (default 64).
	MaxFiles int
	// MaxFileBytes is the gateway's preprocess.max_bytes; a bigger file fails
	// the whole request with 413 image_too_large, as the real one does.
	MaxFileBytes int
	// NoExists makes the fake an older gateway without POST /v1/images/_exists.
	NoExists bool
	// OnIngest, when set, runs after an ingest request was parsed and before
	// it is answered (tests use it to block or to count).
	OnIngest func(r *http.Request, uploads []Upload)
	// AdminKeys are the gateway's auth.admin_keys, required by the admin API
	// (/v1/admin); none answers 403 admin_disabled, as the real one does.
	AdminKeys []string
	// Models, when set, is the state served by the admin API (see Models).
	Models *Models

	mu        sync.Mutex
	sw        *switchJob
	images    map[string]Image
	uploads   []Upload
	exists    [][]string
	requests  map[string]int
	failNext  []fault
	refreshes []string
}

type fault struct {
	status     int
	retryAfter string
}

// New starts a fake gateway; Close it when done (t.Cleanup(g.Close)).
func New() *Gateway {
	g := &Gateway{MaxFiles: 64, images: map[string]Image{}, requests: map[string]int{}}
	g.Server = httptest.NewServer(http.HandlerFunc(g.serve))
	return g
}

// FailNext makes the next n /v1 requests answer status with Retry-After
// retryAfter ("" for none), without looking at them.
func (g *Gateway) FailNext(n, status int, retryAfter string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for range n {
		g.failNext = append(g.failNext, fault{status, retryAfter})
	}
}

// Put stores an image as if it had been ingested before.
func (g *Gateway) Put(data []byte, metadata map[string]any) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	id := ID(data)
	g.images[id] = Image{ID: id, Size: len(data), Metadata: metadata}
	return id
}

// ID is the gateway's default id for an image: the lowercase hex SHA-256.
func ID(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// Images returns the stored images by id.
func (g *Gateway) Images() map[string]Image {
	g.mu.Lock()
	defer g.mu.Unlock()
	return maps.Clone(g.images)
}

// Uploads returns every file received by ingest requests, in arrival order.
func (g *Gateway) Uploads() []Upload {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.uploads)
}

// ExistsCalls returns the ids of every _exists call.
func (g *Gateway) ExistsCalls() [][]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.exists)
}

// Requests returns how many requests each "METHOD /path" received (ids in
// paths are replaced by {id}).
func (g *Gateway) Requests() map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return maps.Clone(g.requests)
}

// Refreshes returns the refresh parameter of every ingest request, in order.
func (g *Gateway) Refreshes() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.refreshes)
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, format string, args ...any) {
	writeJSON(w, status, map[string]any{"error": errorDetail{code, fmt.Sprintf(format, args...)}})
}

func (g *Gateway) serve(w http.ResponseWriter, r *http.Request) {
	route := r.URL.Path
	if rest, ok := strings.CutPrefix(route, "/v1/images/"); ok && rest != "_exists" {
		route = "/v1/images/{id}"
		if strings.HasSuffix(rest, "/similar") {
			route += "/similar"
		}
	}
	g.mu.Lock()
	g.requests[r.Method+" "+route]++
	var f *fault
	if strings.HasPrefix(r.URL.Path, "/v1/") && len(g.failNext) > 0 {
		f = &g.failNext[0]
		g.failNext = g.failNext[1:]
	}
	g.mu.Unlock()
	if f != nil {
		io.Copy(io.Discard, r.Body)
		if f.retryAfter != "" {
			w.Header().Set("Retry-After", f.retryAfter)
		}
		writeError(w, f.status, "injected_fault", "injected %d", f.status)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/v1/admin/") {
		g.admin(w, r)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/v1/") && g.APIKey != "" && !g.authorized(r) {
		w.Header().Set("WWW-Authenticate", `ApiKey realm="tusou"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", "a valid API key is required (Authorization: ApiKey <key>)")
		return
	}
	switch r.Method + " " + route {
	case "GET /healthz":
		writeJSON(w, 200, map[string]string{"status": "ok"})
	case "POST /v1/images":
		g.ingest(w, r)
	case "POST /v1/images/_exists":
		if g.NoExists {
			writeError(w, 404, "route_not_found", "no route for %s %s", r.Method, r.URL.Path)
			return
		}
		g.existsCheck(w, r)
	case "GET /v1/images/{id}":
		id := strings.TrimPrefix(r.URL.Path, "/v1/images/")
		g.mu.Lock()
		img, ok := g.images[id]
		g.mu.Unlock()
		if !ok {
			writeError(w, 404, "image_not_found", "no image %q", id)
			return
		}
		writeJSON(w, 200, map[string]any{"id": img.ID, "metadata": img.Metadata})
	case "GET /v1/images/{id}/similar":
		id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/images/"), "/similar")
		g.mu.Lock()
		_, ok := g.images[id]
		g.mu.Unlock()
		if !ok {
			writeError(w, 404, "image_not_found", "no image %q", id)
			return
		}
		g.search(w, r.URL.Query().Get("k"), id)
	case "POST /v1/search/text":
		var req struct {
			Text string `json:"text"`
			K    int    `json:"k"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || strings.TrimSpace(req.Text) == "" {
			writeError(w, 400, "text_missing", "text is required and must not be blank")
			return
		}
		g.search(w, strconv.Itoa(req.K), "")
	case "POST /v1/search/image":
		if err := r.ParseMultipartForm(64 << 20); err != nil || r.MultipartForm.File["file"] == nil {
			writeError(w, 400, "file_missing", "no file part")
			return
		}
		g.search(w, r.FormValue("k"), "")
	default:
		writeError(w, 404, "route_not_found", "no route for %s %s", r.Method, r.URL.Path)
	}
}

func (g *Gateway) authorized(r *http.Request) bool {
	if k := r.Header.Get("X-API-Key"); k != "" {
		return k == g.APIKey
	}
	scheme, key, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	return (strings.EqualFold(scheme, "ApiKey") || strings.EqualFold(scheme, "Bearer")) && key == g.APIKey
}

// search answers every stored image but exclude, by id, with made-up scores.
func (g *Gateway) search(w http.ResponseWriter, kStr, exclude string) {
	k, _ := strconv.Atoi(kStr)
	if k <= 0 {
		k = 10
	}
	g.mu.Lock()
	ids := slices.Sorted(maps.Keys(g.images))
	hits := []map[string]any{}
	for i, id := range ids {
		if id == exclude || len(hits) == k {
			continue
		}
		hits = append(hits, map[string]any{"id": id, "score": 0.9 - float64(i)/1000, "metadata": g.images[id].Metadata})
	}
	g.mu.Unlock()
	writeJSON(w, 200, map[string]any{"hits": hits, "took_ms": 1})
}

func (g *Gateway) existsCheck(w http.ResponseWriter, r *http.Request) {
	var req struct {
		IDs []string `json:"ids"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, 400, "invalid_json", "%v", err)
		return
	}
	if len(req.IDs) < 1 || len(req.IDs) > 1000 {
		writeError(w, 400, "invalid_ids", "ids: want 1..1000 ids, got %d", len(req.IDs))
		return
	}
	g.mu.Lock()
	g.exists = append(g.exists, req.IDs)
	found := []string{}
	for _, id := range req.IDs {
		if _, ok := g.images[id]; ok {
			found = append(found, id)
		}
	}
	g.mu.Unlock()
	writeJSON(w, 200, map[string]any{"found": found})
}

type part struct {
	name     string
	data     []byte
	id       string
	metadata map[string]any
}

// ingest mirrors the gateway's multipart rules and answer shapes.
func (g *Gateway) ingest(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	refresh := q.Get("refresh")
	switch refresh {
	case "", "wait_for", "true", "false":
	default:
		writeError(w, 400, "invalid_refresh", "refresh: want wait_for, true or false, got %q", refresh)
		return
	}
	nearDup := q.Get("near_duplicates") == "true"
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "multipart/form-data" {
		writeError(w, 415, "content_type_unsupported", "the fake takes multipart only")
		return
	}
	mr, err := r.MultipartReader()
	if err != nil {
		writeError(w, 400, "invalid_multipart", "%v", err)
		return
	}
	var files []part
	var shared map[string]any
	var id string
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			writeError(w, 400, "invalid_multipart", "%v", err)
			return
		}
		data, err := io.ReadAll(p)
		if err != nil {
			writeError(w, 400, "invalid_multipart", "%v", err)
			return
		}
		switch p.FormName() {
		case "file":
			if len(files) == g.MaxFiles {
				writeError(w, 413, "too_many_files", "at most %d files per request", g.MaxFiles)
				return
			}
			if g.MaxFileBytes > 0 && len(data) > g.MaxFileBytes {
				writeError(w, 413, "image_too_large", "file %q is larger than the limit of %d bytes", p.FileName(), g.MaxFileBytes)
				return
			}
			files = append(files, part{name: p.FileName(), data: data})
		case "file_metadata":
			if len(files) == 0 || files[len(files)-1].metadata != nil {
				writeError(w, 400, "invalid_metadata", "file_metadata must follow the file part it describes, once")
				return
			}
			if err := json.Unmarshal(data, &files[len(files)-1].metadata); err != nil || files[len(files)-1].metadata == nil {
				writeError(w, 400, "invalid_metadata", "file_metadata: want a JSON object")
				return
			}
		case "metadata":
			if err := json.Unmarshal(data, &shared); err != nil || shared == nil {
				writeError(w, 400, "invalid_metadata", "metadata: want a JSON object")
				return
			}
		case "id":
			id = string(data)
		default:
			writeError(w, 400, "unknown_field", "unknown multipart field %q", p.FormName())
			return
		}
	}
	if len(files) == 0 {
		writeError(w, 400, "file_missing", "no file part")
		return
	}
	if id != "" && len(files) > 1 {
		writeError(w, 400, "invalid_id", "id can only be given with a single file")
		return
	}
	uploads := make([]Upload, len(files))
	items := make([]map[string]any, len(files))
	created, failed := false, 0
	var firstErr *ItemError
	g.mu.Lock()
	g.refreshes = append(g.refreshes, refresh)
	for i, f := range files {
		md := maps.Clone(shared)
		if md == nil && f.metadata != nil {
			md = map[string]any{}
		}
		maps.Copy(md, f.metadata)
		fid := id
		if fid == "" {
			fid = ID(f.data)
		}
		up := Upload{ID: fid, Name: f.name, Metadata: md, Refresh: refresh, NearDuplicates: nearDup}
		var ierr *ItemError
		if g.Reject != nil {
			ierr = g.Reject(f.name, f.data)
		}
		switch {
		case ierr != nil:
			failed++
			if firstErr == nil {
				firstErr = ierr
			}
			up.Result = ierr.Code
			items[i] = map[string]any{"error": errorDetail{ierr.Code, ierr.Message}}
		default:
			result := "exists"
			if _, ok := g.images[fid]; !ok {
				result, created = "created", true
				g.images[fid] = Image{ID: fid, Name: f.name, Size: len(f.data), Metadata: md}
			}
			up.Result = result
			items[i] = map[string]any{"id": fid, "result": result}
			if nearDup {
				nd := []NearDuplicate{}
				if g.NearDuplicatesOf != nil {
					nd = append(nd, g.NearDuplicatesOf(fid)...)
				}
				items[i]["near_duplicates"] = nd
			}
		}
		uploads[i] = up
	}
	g.uploads = append(g.uploads, uploads...)
	g.mu.Unlock()
	if g.OnIngest != nil {
		g.OnIngest(r, uploads)
	}
	switch {
	case len(files) == 1 && failed == 1:
		writeError(w, firstErr.Status, firstErr.Code, "%s", firstErr.Message)
	case failed == len(files):
		writeJSON(w, firstErr.Status, map[string]any{"error": errorDetail{firstErr.Code, firstErr.Message}, "items": items, "took_ms": 1})
	default:
		status := 200
		if created {
			status = 201
		}
		writeJSON(w, status, map[string]any{"items": items, "errors": failed > 0, "took_ms": 1})
	}
}
