package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// window is one restart: from its stop until the gateway is ready again
// plus the grace period.
type window struct {
	service    string
	start, end time.Time // end zero while open
	note       string
}

// failure is one request that failed for a reason other than backpressure.
type failure struct {
	at        time.Time
	op        string
	what      string
	inRestart bool
}

// opStats counts one operation's outcomes.
type opStats struct {
	ok, backpressure, failed, failedInRestart int
	latency                                   []time.Duration
}

// recorder collects everything the report needs; safe for concurrent use.
type recorder struct {
	start time.Time

	mu       sync.Mutex
	ops      map[string]*opStats
	failures []failure
	windows  []*window
	acked    []string // ids of acknowledged REST ingests
	sideAck  []string // ids of acknowledged sidecar writes
}

func newRecorder(start time.Time) *recorder {
	return &recorder{start: start, ops: map[string]*opStats{}}
}

func (r *recorder) openWindow(svc string) *window {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := &window{service: svc, start: time.Now()}
	r.windows = append(r.windows, w)
	return w
}

func (r *recorder) closeWindow(w *window, grace time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w.end = time.Now().Add(grace)
}

// inWindow reports whether t falls in a restart window (an open one
// included).
func (r *recorder) inWindow(t time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inWindowLocked(t, t)
}

func (r *recorder) inWindowLocked(from, to time.Time) bool {
	for _, w := range r.windows {
		if !to.Before(w.start) && (w.end.IsZero() || !from.After(w.end)) {
			return true
		}
	}
	return false
}

// outcome records one request: status 0 is a transport error.
func (r *recorder) outcome(op string, began time.Time, status int, what string) {
	end := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.ops[op]
	if s == nil {
		s = &opStats{}
		r.ops[op] = s
	}
	switch {
	case status >= 200 && status < 300:
		s.ok++
		s.latency = append(s.latency, end.Sub(began))
	case status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable:
		s.backpressure++
	default:
		in := r.inWindowLocked(began, end)
		if in {
			s.failedInRestart++
		} else {
			s.failed++
		}
		r.failures = append(r.failures, failure{at: began, op: op, what: fmt.Sprintf("%d %s", status, truncate(what, 200)), inRestart: in})
	}
}

func (r *recorder) ack(ids []string, sidecar bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if sidecar {
		r.sideAck = append(r.sideAck, ids...)
	} else {
		r.acked = append(r.acked, ids...)
	}
}

// someAcked returns a random acknowledged ingest id ("" when none yet).
func (r *recorder) someAcked(rng *rand.Rand) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.acked) == 0 {
		return ""
	}
	return r.acked[rng.IntN(len(r.acked))]
}

func truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// noiseJPEG is a distinct image per seed: its SHA-256, the default id, is
// new every time, so every ingest is a real write.
func noiseJPEG(seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	img := image.NewRGBA(image.Rect(0, 0, 160, 120))
	base := color.RGBA{uint8(rng.IntN(256)), uint8(rng.IntN(256)), uint8(rng.IntN(256)), 255}
	for y := range 120 {
		for x := range 160 {
			n := uint8(rng.IntN(64))
			img.Set(x, y, color.RGBA{base.R + n, base.G + uint8(x), base.B + uint8(y), 255})
		}
	}
	var buf bytes.Buffer
	_ = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 85})
	return buf.Bytes()
}

var texts = []string{"一只猫", "a dog on the beach", "city at night", "山和湖", "red car", "portrait of a woman", "森林里的小路"}

// load is the running clients.
type load struct{ wg sync.WaitGroup }

func (l *load) Wait() { l.wg.Wait() }

// startLoad starts the clients; they stop when ctx ends.
func startLoad(ctx context.Context, o options, g *gateway, rec *recorder) *load {
	l := &load{}
	var seq struct {
		sync.Mutex
		n uint64
	}
	next := func() uint64 {
		seq.Lock()
		defer seq.Unlock()
		seq.n++
		return seq.n
	}
	spawn := func(name string, i int, step func(*rand.Rand)) {
		l.wg.Add(1)
		go func() { // owned by l: ends with ctx
			defer l.wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), uint64(len(name))))
			for ctx.Err() == nil {
				step(rng)
				select {
				case <-ctx.Done():
				case <-time.After(o.think):
				}
			}
		}()
	}
	for i := range o.ingesters {
		spawn("ingest", i, func(rng *rand.Rand) { ingestStep(ctx, g, rec, rng, next) })
	}
	for i := range o.searchers {
		spawn("search", i, func(rng *rand.Rand) { searchStep(ctx, g, rec, rng) })
	}
	for i := range o.sidecars {
		spawn("sidecar", i, func(rng *rand.Rand) { sidecarStep(ctx, g, rec, rng, next) })
	}
	return l
}

// do sends one request and records its outcome; it returns the body of a
// 2xx answer. A request cut short by the end of the run is not counted.
func do(ctx context.Context, g *gateway, rec *recorder, op, method, url, ctype string, body []byte) ([]byte, bool) {
	began := time.Now()
	req, _ := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	res, err := g.client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			rec.outcome(op, began, 0, err.Error())
		}
		return nil, false
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil && ctx.Err() != nil {
		return nil, false
	}
	rec.outcome(op, began, res.StatusCode, string(b))
	return b, res.StatusCode/100 == 2
}

// ingestStep: one raw upload, or a multipart request of three files;
// every item the answer acknowledges is an id that must survive.
func ingestStep(ctx context.Context, g *gateway, rec *recorder, rng *rand.Rand, next func() uint64) {
	refresh := ""
	if rng.IntN(4) == 0 {
		refresh = "?refresh=false"
	}
	var b []byte
	var ok bool
	if rng.IntN(2) == 0 {
		b, ok = do(ctx, g, rec, "ingest (raw)", "POST", g.rest+"/v1/images"+refresh, "image/jpeg", noiseJPEG(next()))
	} else {
		var buf bytes.Buffer
		w := multipart.NewWriter(&buf)
		for i := range 3 {
			fw, _ := w.CreateFormFile("file", fmt.Sprintf("soak-%d.jpg", i))
			fw.Write(noiseJPEG(next()))
		}
		w.WriteField("metadata", `{"source":"soak"}`)
		w.Close()
		b, ok = do(ctx, g, rec, "ingest (multipart x3)", "POST", g.rest+"/v1/images"+refresh, w.FormDataContentType(), buf.Bytes())
	}
	if !ok {
		return
	}
	var out struct {
		Items []struct {
			ID     string
			Result string
			Error  *struct{ Code, Message string }
		}
	}
	if err := json.Unmarshal(b, &out); err != nil {
		rec.outcome("ingest items", time.Now(), 0, "unreadable answer: "+err.Error())
		return
	}
	var ids []string
	for _, it := range out.Items {
		if it.Error != nil {
			// An item's error has no status of its own: its code says
			// whether it is backpressure (a full queue, a dependency down).
			status := 0
			if strings.HasSuffix(it.Error.Code, "queue_full") || strings.HasSuffix(it.Error.Code, "_unavailable") || it.Error.Code == "memory_budget_exceeded" {
				status = http.StatusServiceUnavailable
			}
			rec.outcome("ingest items", time.Now(), status, it.Error.Code+": "+it.Error.Message)
			continue
		}
		ids = append(ids, it.ID)
	}
	rec.ack(ids, false)
}

// searchStep: text search, image metadata, similar, original bytes.
func searchStep(ctx context.Context, g *gateway, rec *recorder, rng *rand.Rand) {
	switch rng.IntN(4) {
	case 0, 1:
		body := fmt.Sprintf(`{"text":%q,"k":10}`, texts[rng.IntN(len(texts))])
		do(ctx, g, rec, "search text", "POST", g.rest+"/v1/search/text", "application/json", []byte(body))
	case 2:
		if id := rec.someAcked(rng); id != "" {
			do(ctx, g, rec, "similar", "GET", g.rest+"/v1/images/"+id+"/similar?k=5", "", nil)
		}
	case 3:
		if id := rec.someAcked(rng); id != "" {
			do(ctx, g, rec, "get content", "GET", g.rest+"/v1/images/"+id+"/content", "", nil)
		}
	}
}

// sidecarStep: an Elasticsearch client on the sidecar: index a document
// with image_base64 (enriched to image_embedding), or a kNN search with a
// text query_vector_builder.
func sidecarStep(ctx context.Context, g *gateway, rec *recorder, rng *rand.Rand, next func() uint64) {
	if rng.IntN(2) == 0 {
		n := next()
		id := fmt.Sprintf("side-%d", n)
		doc := fmt.Sprintf(`{"tag":"soak","n":%d,"image_base64":%q}`, n, base64.StdEncoding.EncodeToString(noiseJPEG(n)))
		if _, ok := do(ctx, g, rec, "sidecar index", "PUT", g.sidecar+"/"+g.sideIndex+"/_doc/"+id, "application/json", []byte(doc)); ok {
			rec.ack([]string{id}, true)
		}
		return
	}
	q := fmt.Sprintf(`{"size":5,"_source":["tag","n"],"knn":{"field":"image_embedding","k":5,"num_candidates":50,
		"query_vector_builder":{"text_embedding":{"model_id":"clip_text","model_text":%q}}}}`, texts[rng.IntN(len(texts))])
	do(ctx, g, rec, "sidecar knn search", "POST", g.sidecar+"/"+g.sideIndex+"/_search", "application/json", []byte(q))
}

// verify returns, per kind, how many acknowledged writes are missing: REST
// ingests through /v1/images/_exists (realtime), sidecar documents through
// Elasticsearch's _mget.
func verify(ctx context.Context, g *gateway, rec *recorder) map[string][]string {
	rec.mu.Lock()
	acked := append([]string(nil), rec.acked...)
	side := append([]string(nil), rec.sideAck...)
	rec.mu.Unlock()
	lost := map[string][]string{}
	found := map[string]bool{}
	for i := 0; i < len(acked); i += 1000 {
		chunk := acked[i:min(i+1000, len(acked))]
		body, _ := json.Marshal(map[string]any{"ids": chunk})
		req, _ := http.NewRequestWithContext(ctx, "POST", g.rest+"/v1/images/_exists", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		var out struct{ Found []string }
		if err := getJSON(g.client, req, &out); err != nil {
			lost["REST ingest (could not check: "+err.Error()+")"] = chunk
			continue
		}
		for _, id := range out.Found {
			found[id] = true
		}
	}
	for _, id := range acked {
		if !found[id] {
			lost["REST ingest"] = append(lost["REST ingest"], id)
		}
	}
	for i := 0; i < len(side); i += 1000 {
		chunk := side[i:min(i+1000, len(side))]
		body, _ := json.Marshal(map[string]any{"ids": chunk})
		req, _ := http.NewRequestWithContext(ctx, "POST", g.esURL+"/"+g.sideIndex+"/_mget?_source=false", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		var out struct {
			Docs []struct {
				ID    string `json:"_id"`
				Found bool   `json:"found"`
			}
		}
		if err := getJSON(g.client, req, &out); err != nil {
			lost["sidecar index (could not check: "+err.Error()+")"] = chunk
			continue
		}
		for _, d := range out.Docs {
			if !d.Found {
				lost["sidecar index"] = append(lost["sidecar index"], d.ID)
			}
		}
	}
	for _, ids := range lost {
		sort.Strings(ids)
	}
	return lost
}

func getJSON(c *http.Client, req *http.Request, out any) error {
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		return fmt.Errorf("%d %s", res.StatusCode, truncate(string(b), 200))
	}
	return json.Unmarshal(b, out)
}
