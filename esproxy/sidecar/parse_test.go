package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tusou/tusou/esproxy"
)

func TestDefaultConfigValidates(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateNamesFields(t *testing.T) {
	c := DefaultConfig()
	c.Listen = "9201"
	c.MaxBodyBytes = 10
	c.RequestTimeout = 0
	c.EmbedConcurrency = 0
	c.Credentials = "steal"
	c.Rules = append(c.Rules,
		Rule{Index: "a b", Field: "x", Kind: "video", Target: "x"},
		Rule{Index: "*", Field: "image_base64", Kind: KindImage, Target: "v"},
	)
	c.Allow = []string{"Indices.Delete"}
	c.URLFetch = URLFetch{Enabled: true, Schemes: []string{"ftp"}, Hosts: []string{"Bad Host"}, MaxBytes: 0, Timeout: 0, MaxRedirects: 11}
	c.WriteIndices = []string{"a/b"}
	c.CreateIndex = CreateIndex{Settings: []string{"index.blocks.write"}, Aliases: []string{""}}
	c.MaxQueryBuilders = 0
	c.MaxInflightBytes = 1
	c.APIKeys = []string{"short"}
	err := c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"listen:", "max_body_bytes:", "request_timeout:", "embed_concurrency:", "credentials:",
		"rules[2].index:", "rules[2].kind:", "rules[2].target: must differ", "rules[3]: same index and field as rules[0]",
		"allow[0]:", "url_fetch.schemes[0]:", "url_fetch.hosts[0]:", "url_fetch.max_bytes:", "url_fetch.timeout:",
		"url_fetch.max_redirects:", "write_indices[0]:", "create_index.settings[0]:", "create_index.aliases[0]:",
		"max_query_builders:", "max_inflight_bytes:", "api_keys[0]:",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	c = DefaultConfig()
	c.URLFetch.Enabled = true
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "url_fetch.hosts: must list at least one host") {
		t.Errorf("enabled fetch without hosts: %v", err)
	}
}

func TestGlobMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, name string
		want          bool
	}{
		{"*", "anything", true}, {"*", "", true}, {"photos", "photos", true}, {"photos", "photos2", false},
		{"photos-*", "photos-2024", true}, {"photos-*", "photo", false}, {"*-img", "a-img", true},
		{"a*b*c", "axxbyyc", true}, {"a*b*c", "axxbyy", false}, {"a*c", "ac", true},
	} {
		if got := globMatch(c.pattern, c.name); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v", c.pattern, c.name, got)
		}
	}
}

func TestObjectMembers(t *testing.T) {
	doc := ` { "a" : 1 , "b\"q" : "x\\\"}y" , "c":{"d":[1,{"e":"]}"}]},"f":null,"g":-1.5e3 } `
	var keys []string
	var vals []string
	err := objectMembers([]byte(doc), func(m member) error {
		keys = append(keys, m.Key)
		vals = append(vals, doc[m.ValStart:m.End])
		if !strings.HasPrefix(doc[m.Start:], `"`) {
			t.Errorf("member %q starts at %q", m.Key, doc[m.Start:])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantKeys := []string{"a", `b"q`, "c", "f", "g"}
	wantVals := []string{"1", `"x\\\"}y"`, `{"d":[1,{"e":"]}"}]}`, "null", "-1.5e3"}
	if strings.Join(keys, "|") != strings.Join(wantKeys, "|") || strings.Join(vals, "|") != strings.Join(wantVals, "|") {
		t.Fatalf("keys %q vals %q", keys, vals)
	}
	// Every value the scanner delimits must be what encoding/json decodes.
	var ref map[string]json.RawMessage
	if err := json.Unmarshal([]byte(doc), &ref); err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		if string(ref[k]) != vals[i] {
			t.Errorf("%s: scanner %s, encoding/json %s", k, vals[i], ref[k])
		}
	}
	for _, bad := range []string{``, `[]`, `{`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{"a":"x}`, `{"a":1} x`, `{"a":[1,2}`, `{"a":1 "b":2}`} {
		if err := objectMembers([]byte(bad), func(member) error { return nil }); !errors.Is(err, errSyntax) {
			t.Errorf("%q: want a syntax error, got %v", bad, err)
		}
	}
}

func TestArrayElements(t *testing.T) {
	src := `[ {"a":"]"} , 2,"x",[3] ]`
	var got []string
	if err := arrayElements([]byte(src), func(a, b int) error { got = append(got, src[a:b]); return nil }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, "|") != `{"a":"]"}|2|"x"|[3]` {
		t.Fatalf("%q", got)
	}
}

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		method, path, op string
		how              handling
		index            string
	}{
		{"GET", "/", "info", rootInfo, ""},
		{"HEAD", "/", "info", rootInfo, ""},
		{"DELETE", "/", "other", passThrough, ""},
		{"POST", "/_bulk", "bulk", bulkWrite, ""},
		{"PUT", "/photos/_bulk", "bulk", bulkWrite, "photos"},
		{"POST", "/photos/_doc", "index", docWrite, "photos"},
		{"PUT", "/photos/_doc/1", "index", docWrite, "photos"},
		{"GET", "/photos/_doc/1", "get", passThrough, "photos"},
		{"HEAD", "/photos/_doc/1", "get", passThrough, "photos"},
		{"DELETE", "/photos/_doc/1", "delete", passThrough, "photos"},
		{"PUT", "/photos/_create/1", "create", docWrite, "photos"},
		{"POST", "/photos/_update/1", "update", docUpdate, "photos"},
		{"GET", "/photos/_source/1", "get", passThrough, "photos"},
		{"POST", "/photos/_search", "search", searchOne, "photos"},
		{"GET", "/_search", "search", searchOne, ""},
		{"POST", "/_msearch", "msearch", searchMulti, ""},
		{"POST", "/a,b/_msearch", "msearch", searchMulti, "a,b"},
		{"POST", "/_search/scroll", "scroll", passThrough, ""},
		{"GET", "/_search/scroll/abc", "scroll", passThrough, ""},
		{"DELETE", "/_search/scroll", "clear_scroll", passThrough, ""},
		{"POST", "/photos/_pit", "pit", passThrough, "photos"},
		{"DELETE", "/_pit", "pit", passThrough, ""},
		{"POST", "/photos/_refresh", "refresh", passThrough, "photos"},
		{"GET", "/photos/_mapping", "get_mapping", passThrough, "photos"},
		{"PUT", "/photos/_mapping", "indices.put_mapping", passThrough, "photos"},
		{"GET", "/photos/_count", "count", passThrough, "photos"},
		{"POST", "/_mget", "mget", passThrough, ""},
		{"PUT", "/photos", "indices.create", indexBody, "photos"},
		{"HEAD", "/photos", "indices.exists", passThrough, "photos"},
		{"GET", "/photos", "indices.get", passThrough, "photos"},
		{"DELETE", "/photos", "indices.delete", passThrough, "photos"},
		{"GET", "/_cluster/health", "cluster.health", passThrough, ""},
		{"GET", "/_cluster/health/photos", "cluster.health", passThrough, "photos"},
		{"PUT", "/_cluster/settings", "cluster.put_settings", passThrough, ""},
		{"POST", "/photos/_delete_by_query", "delete_by_query", passThrough, "photos"},
		{"POST", "/photos/_update_by_query", "update_by_query", passThrough, "photos"},
		{"POST", "/_reindex", "reindex", reindexBody, ""},
		{"PUT", "/_snapshot/repo/snap", "snapshot", passThrough, ""},
		{"POST", "/_security/user/x", "security", passThrough, ""},
		{"PUT", "/_nodes/n1/shutdown", "nodes.shutdown", passThrough, ""},
		{"POST", "/photos/_close", "indices.close", passThrough, "photos"},
		{"POST", "/photos/_open", "indices.open", passThrough, "photos"},
		{"PUT", "/photos/_settings", "indices.put_settings", passThrough, "photos"},
		{"PUT", "/_settings", "indices.put_settings", passThrough, ""},
		{"PUT", "/_ilm/policy/p", "ilm", passThrough, ""},
		{"PUT", "/_ingest/pipeline/p", "ingest", passThrough, ""},
		{"GET", "/_cat/indices", "cat", passThrough, ""},
		{"POST", "/photos/_forcemerge", "indices.forcemerge", passThrough, "photos"},
		{"PATCH", "/_bulk", "other", passThrough, ""},
		{"GET", "/%3Clogs-%7Bnow%2Fd%7D%3E/_search", "search", searchOne, "<logs-{now/d}>"},
	} {
		rt := classify(c.method, c.path)
		if rt.Op != c.op || rt.How != c.how || rt.Index != c.index {
			t.Errorf("%s %s: got %+v, want op %s how %d index %q", c.method, c.path, rt, c.op, c.how, c.index)
		}
	}
	def := newAllowSet(nil)
	for _, op := range []string{"indices.delete", "delete_by_query", "update_by_query", "reindex", "cluster.put_settings",
		"snapshot", "security", "nodes.shutdown", "indices.close", "indices.open", "indices.put_settings", "ilm", "ingest", "other"} {
		if def.allowed(op) {
			t.Errorf("%s allowed by default", op)
		}
	}
	if !newAllowSet([]string{"indices.delete"}).allowed("indices.delete") || !newAllowSet([]string{"*"}).allowed("snapshot") {
		t.Error("allow list not applied")
	}
}

func TestDecodeBase64Image(t *testing.T) {
	want := "\x89PNG\r\n\x1a\n some bytes ~~??"
	std := b64(want)
	for name, in := range map[string]string{
		"std":       std,
		"unpadded":  strings.TrimRight(std, "="),
		"urlsafe":   strings.NewReplacer("+", "-", "/", "_").Replace(std),
		"data uri":  "data:image/png;base64," + std,
		"linebreak": std[:8] + "\n" + std[8:],
	} {
		got, err := decodeBase64Image([]byte(in))
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v", name, got, err)
		}
	}
	for _, bad := range []string{"", "!!!!", "data:image/png,abc"} {
		if _, err := decodeBase64Image([]byte(bad)); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
}

func TestWithoutParam(t *testing.T) {
	if got := withoutParam("pretty&filter_path=items.*.error&refresh=true", "filter_path"); got != "pretty&refresh=true" {
		t.Fatal(got)
	}
	if got := withoutParam("filter%5Fpath=x", "filter_path"); got != "" {
		t.Fatal(got)
	}
}

func TestResponseContentType(t *testing.T) {
	r, _ := http.NewRequest("GET", "/", nil)
	r.Header.Set("Accept", "application/vnd.elasticsearch+json; compatible-with=8")
	if got := responseContentType(r); got != "application/vnd.elasticsearch+json;compatible-with=8" {
		t.Fatal(got)
	}
	r.Header.Del("Accept")
	if got := responseContentType(r); got != "application/json" {
		t.Fatal(got)
	}
}

func TestEnrichDocSplicesBytes(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *esproxy.Config) {
		c.Rules = append(c.Rules, Rule{Index: "*", Field: "caption", Kind: KindText, Target: "caption_vec", Keep: true})
	})
	img := b64("cat picture")
	// Odd spacing, unicode escapes and a stale vector: everything not
	// touched must come out byte for byte.
	doc := `{ "title" : "caf\u00e9 \"quoted\"", "image_base64":"` + img + `" ,"n":[1, 2.50],"image_embedding":[9],"caption":"a cat"}`
	out, changed, err := h.sc.enrichDoc(context.Background(), []byte(doc), h.sc.rules.match("x"))
	if err != nil || !changed {
		t.Fatal(changed, err)
	}
	want := `{"title" : "caf\u00e9 \"quoted\"","n":[1, 2.50],"caption":"a cat","image_embedding":` +
		string(esproxy.AppendVector(nil, fakeVector([]byte("cat picture")))) + `,"caption_vec":` +
		string(esproxy.AppendVector(nil, fakeVector([]byte("text:a cat")))) + `}`
	if string(out) != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}
	if !json.Valid(out) {
		t.Fatal("invalid JSON")
	}

	for name, c := range map[string]struct {
		doc  string
		want string // substring of the error reason, "" for unchanged
	}{
		"no field":     {`{"a":1}`, ""},
		"nested only":  {`{"x":{"image_base64":"` + img + `"}}`, ""},
		"null":         {`{"image_base64":null}`, ""},
		"not a string": {`{"image_base64":42}`, "must be a string"},
		"bad base64":   {`{"image_base64":"***"}`, "not valid base64"},
		"bad image":    {`{"image_base64":"` + b64("BAD image") + `"}`, "image_corrupt"},
		"two inputs":   {`{"image_base64":"` + img + `","image_url":"https://x/y.jpg"}`, "both fill"},
		"url disabled": {`{"image_url":"https://example.com/a.jpg"}`, "url_fetch is disabled"},
	} {
		out, changed, err := h.sc.enrichDoc(context.Background(), []byte(c.doc), h.sc.rules.match("x"))
		if c.want == "" {
			if err != nil || changed || string(out) != c.doc {
				t.Errorf("%s: %s %v %v", name, out, changed, err)
			}
			continue
		}
		var ee *esError
		if !errors.As(err, &ee) || ee.Status != 400 || ee.Type != typeImage || !strings.Contains(ee.Reason, c.want) {
			t.Errorf("%s: want a 400 %s with %q, got %v", name, typeImage, c.want, err)
		}
	}
}

func TestEnrichUpdate(t *testing.T) {
	h := newHarness(t, nil)
	img := b64("pic")
	body := `{"doc":{"image_base64":"` + img + `","x":1},"upsert":{"image_base64":"` + img + `"},"doc_as_upsert":false}`
	out, changed, err := h.sc.enrichUpdate(context.Background(), []byte(body), h.sc.rules.match("x"))
	if err != nil || !changed {
		t.Fatal(err)
	}
	vec := string(esproxy.AppendVector(nil, fakeVector([]byte("pic"))))
	want := `{"doc":{"x":1,"image_embedding":` + vec + `},"upsert":{"image_embedding":` + vec + `},"doc_as_upsert":false}`
	if string(out) != want {
		t.Fatalf("got %s\nwant %s", out, want)
	}
	script := `{"script":{"source":"ctx._source.n++"}}`
	if out, changed, _ := h.sc.enrichUpdate(context.Background(), []byte(script), h.sc.rules.match("x")); changed || string(out) != script {
		t.Fatal("script update changed")
	}
}

func TestRewriteSearch(t *testing.T) {
	h := newHarness(t, nil)
	img := b64("query image")
	tvec := string(esproxy.AppendVector(nil, fakeVector([]byte("text:a red car"))))
	ivec := string(esproxy.AppendVector(nil, fakeVector([]byte("query image"))))
	text := `{"text_embedding":{"model_id":"clip_text","model_text":"a red car"}}`
	image := `{"image_embedding":{"model_id":"clip_image","image":"` + img + `"}}`
	// Exact scores on quantised fields, as the native API returns them.
	rs := `,"rescore_vector":{"oversample":3}`
	for name, c := range map[string]struct{ in, want string }{
		"knn object": {
			`{"knn":{"field":"v","k":3,"num_candidates":10,"query_vector_builder":` + text + `},"size":3}`,
			`{"knn":{"field":"v","k":3,"num_candidates":10,"query_vector":` + tvec + rs + `},"size":3}`},
		"knn array": {
			`{"knn":[{"field":"v","k":1,"query_vector_builder":` + text + `},{"field":"v","k":2,"query_vector_builder":` + image + `}]}`,
			`{"knn":[{"field":"v","k":1,"query_vector":` + tvec + rs + `},{"field":"v","k":2,"query_vector":` + ivec + rs + `}]}`},
		"knn query in bool": {
			`{"query":{"bool":{"must":[{"knn":{"field":"v","query_vector_builder":` + image + `,"filter":{"term":{"a":"<b>"}}}}]}}}`,
			`{"query":{"bool":{"must":[{"knn":{"field":"v","filter":{"term":{"a":"<b>"}},"query_vector":` + ivec + rs + `}}]}}}`},
		"retriever": {
			`{"retriever":{"knn":{"field":"v","k":1,"num_candidates":5,"query_vector_builder":` + text + `}}}`,
			`{"retriever":{"knn":{"field":"v","k":1,"num_candidates":5,"query_vector":` + tvec + rs + `}}}`},
		"client's own rescore kept": {
			`{"knn":{"field":"v","k":1,"rescore_vector":{"oversample":7},"query_vector_builder":` + text + `}}`,
			`{"knn":{"field":"v","k":1,"rescore_vector":{"oversample":7},"query_vector":` + tvec + `}}`},
	} {
		out, changed, err := h.sc.rewriteSearch(context.Background(), []byte(c.in))
		if err != nil || !changed {
			t.Errorf("%s: %v", name, err)
			continue
		}
		var got, want any
		json.Unmarshal(out, &got)
		json.Unmarshal([]byte(c.want), &want)
		gb, _ := json.Marshal(got)
		wb, _ := json.Marshal(want)
		if string(gb) != string(wb) {
			t.Errorf("%s:\ngot  %s\nwant %s", name, out, c.want)
		}
	}
	// rescore_oversample 0 leaves the knn as the client wrote it.
	off := newHarness(t, func(_ *Config, es *esproxy.Config) { es.RescoreOversample = 0 })
	out, _, err := off.sc.rewriteSearch(context.Background(), []byte(`{"knn":{"field":"v","k":1,"query_vector_builder":`+text+`}}`))
	if err != nil || strings.Contains(string(out), "rescore_vector") {
		t.Errorf("oversample 0: %s %v", out, err)
	}
	// Untouched bodies pass byte for byte, including ES-served builders.
	for _, in := range []string{
		`{"query":{"match_all":{}}, "size":1}`,
		`{"knn":{"field":"v","query_vector_builder":{"text_embedding":{"model_id":".multilingual-e5-small","model_text":"x"}}}}`,
	} {
		out, changed, err := h.sc.rewriteSearch(context.Background(), []byte(in))
		if err != nil || changed || string(out) != in {
			t.Errorf("%s: changed=%v err=%v", in, changed, err)
		}
	}
	for name, c := range map[string]struct {
		in     string
		status int
		reason string
	}{
		"both":        {`{"knn":{"field":"v","query_vector":[1],"query_vector_builder":` + text + `}}`, 400, "cannot provide both"},
		"bad image":   {`{"knn":{"field":"v","query_vector_builder":{"image_embedding":{"image":"` + b64("BAD") + `"}}}}`, 400, "image_corrupt"},
		"other model": {`{"knn":{"field":"v","query_vector_builder":{"image_embedding":{"model_id":"x","image":"` + img + `"}}}}`, 400, "unknown model_id"},
		"no input":    {`{"knn":{"field":"v","query_vector_builder":{"image_embedding":{}}}}`, 400, "needs [image]"},
		"busy":        {`{"knn":{"field":"v","query_vector_builder":{"image_embedding":{"image":"` + b64("BUSY") + `"}}}}`, 429, "preprocess_queue_full"},
		"malformed":   {`{"knn":{"query_vector_builder":`, 400, "failed to parse"},
	} {
		_, _, err := h.sc.rewriteSearch(context.Background(), []byte(c.in))
		e := toESError(err, KindImage)
		if err == nil || e.Status != c.status || !strings.Contains(e.Reason, c.reason) {
			t.Errorf("%s: want %d %q, got %v", name, c.status, c.reason, err)
		}
	}
}

func TestToESError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	if e := upstreamError(ctx, ctx.Err()); e.Status != http.StatusGatewayTimeout {
		t.Fatal(e)
	}
	if e := toESError(errors.New("boom"), KindImage); e.Status != 500 || strings.Contains(e.Reason, "boom") {
		t.Fatal("internal errors must not leak their text", e)
	}
}
