//go:build integration

package sidecar_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"

	"github.com/tusou/tusou/esproxy"
	"github.com/tusou/tusou/esproxy/sidecar"
)

const compat7 = "application/vnd.elasticsearch+json;compatible-with=7"

// rawDo sends a request whose path is used exactly as written (no
// cleaning, no re-encoding) and returns status and body.
func rawDo(t *testing.T, method, base, path string, header http.Header, body []byte) (int, http.Header, []byte) {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	p, q, _ := strings.Cut(path, "?")
	// Opaque is sent verbatim as the request target. A path starting with
	// "//" can only be sent in absolute form (Elasticsearch refuses that
	// form; the sidecar reads it like any other).
	u.Opaque = p
	if strings.HasPrefix(p, "//") {
		u.Opaque = "//" + u.Host + p
	}
	u.RawQuery = q
	req, err := http.NewRequest(method, base, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.URL = u
	for k, v := range header {
		req.Header[k] = v
	}
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// esState is what a refused request must not change: the mapping, the
// documents (ids and sources, after a refresh) and the aliases of an index.
func esState(t *testing.T, index string) string {
	t.Helper()
	get := func(path string) string {
		status, _, b := rawDo(t, "GET", esURL, path, nil, nil)
		return fmt.Sprintf("%d %s\n", status, b)
	}
	rawDo(t, "POST", esURL, "/"+index+"/_refresh", nil, nil)
	_, _, b := rawDo(t, "GET", esURL, "/"+index+"/_search?size=100&track_total_hits=true", nil, nil)
	var res struct {
		Hits struct {
			Total struct{ Value int }
			Hits  []struct {
				ID     string          `json:"_id"`
				Source json.RawMessage `json:"_source"`
			}
		}
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("search %s: %s", index, b)
	}
	docs := []string{fmt.Sprint(res.Hits.Total.Value)}
	for _, h := range res.Hits.Hits {
		docs = append(docs, h.ID+"="+string(h.Source))
	}
	sort.Strings(docs[1:])
	return get("/"+index+"/_mapping") + get("/"+index+"/_alias") + strings.Join(docs, "\n")
}

func mustES(t *testing.T, method, path, body string) {
	t.Helper()
	status, _, b := rawDo(t, method, esURL, path, nil, []byte(body))
	if status >= 300 {
		t.Fatalf("%s %s directly: %d %s", method, path, status, b)
	}
}

func wantSidecarRefusal(t *testing.T, what string, status int, body []byte) {
	t.Helper()
	var e struct {
		Error  struct{ Type, Reason string }
		Status int
	}
	json.Unmarshal(body, &e)
	if status != http.StatusForbidden || e.Status != 403 || e.Error.Type != "security_exception" || !strings.Contains(e.Error.Reason, "sidecar") {
		t.Errorf("%s: want the sidecar's 403, got %d %s", what, status, body)
	}
}

// TestRefuseListBypassesOnRealNode sends the v7-compatible typed routes and
// every path trick at the real Elasticsearch through the sidecar: each is
// refused, and the index (mapping, documents, aliases) is exactly as before.
// A control shows the first two shapes change state when sent to
// Elasticsearch directly, so "unchanged" is a real check.
func TestRefuseListBypassesOnRealNode(t *testing.T) {
	s := startSidecar(t, nil)
	idx := randomName("tusou-sc-sec-")
	t.Cleanup(func() { deleteIndex(idx) })
	mustES(t, "PUT", "/"+idx, `{"settings":{"number_of_shards":1,"number_of_replicas":0},"mappings":{"properties":{"title":{"type":"keyword"}}}}`)
	mustES(t, "PUT", "/"+idx+"/_doc/1?refresh=true", `{"title":"original"}`)

	v7 := http.Header{"Content-Type": {compat7}, "Accept": {compat7}}
	mappingBody := `{"_doc":{"properties":{"evil":{"type":"keyword"}}}}`
	ctrl := randomName("tusou-sc-ctrl-")
	t.Cleanup(func() { deleteIndex(ctrl) })
	mustES(t, "PUT", "/"+ctrl, `{"settings":{"number_of_shards":1,"number_of_replicas":0},"mappings":{"properties":{"title":{"type":"keyword"}}}}`)
	before := esState(t, ctrl)
	rawDo(t, "PUT", esURL, "/"+ctrl+"/_doc/_mapping?include_type_name=true", v7, []byte(mappingBody))
	rawDo(t, "POST", esURL, "/"+ctrl+"/_count/_delete_by_query", v7, []byte(`{"query":{"match_all":{}}}`))
	if after := esState(t, ctrl); after == before || !strings.Contains(after, "evil") || !strings.Contains(after, "_delete_by_query") {
		t.Fatalf("control: the typed routes did not change the index when sent directly; the test proves nothing:\n%s", after)
	}

	before = esState(t, idx)
	for _, c := range []struct {
		name, method, path string
		header             http.Header
		body               string
	}{
		{"v7 typed put mapping", "PUT", "/IDX/_doc/_mapping?include_type_name=true", v7, mappingBody},
		{"typed put mapping, v8 media type", "PUT", "/IDX/_doc/_mapping", nil, `{"properties":{"evil":{"type":"keyword"}}}`},
		{"v7 typed delete by query", "POST", "/*/_count/_delete_by_query", v7, `{"query":{"match_all":{}}}`},
		{"v7 typed delete by query on the index", "POST", "/IDX/_count/_delete_by_query", v7, `{"query":{"match_all":{}}}`},
		{"v7 typed update by query", "POST", "/IDX/_mget/_update_by_query", v7, `{"script":{"source":"ctx._source.title='pwned'"}}`},
		{"_doc with an API id", "PUT", "/IDX/_doc/_update_by_query", v7, `{"title":"pwned"}`},
		{"_pit tail", "POST", "/IDX/_pit/_delete_by_query", v7, `{}`},
		{"_refresh tail", "POST", "/IDX/_refresh/_delete_by_query", v7, `{}`},
		{"_field_caps tail", "POST", "/IDX/_field_caps/_delete_by_query", v7, `{}`},
		{"_mget tail", "POST", "/IDX/_mget/_delete_by_query", v7, `{}`},
		{"v7 on a plain write", "PUT", "/IDX/_doc/2", v7, `{"title":"new"}`},
		{"v7 in Accept only", "PUT", "/IDX/_doc/2", http.Header{"Accept": {compat7}}, `{"title":"new"}`},
		{"encoded underscore", "PUT", "/IDX/%5Fdoc/_mapping", v7, mappingBody},
		{"encoded underscore id", "PUT", "/IDX/_doc/%5Fmapping", v7, mappingBody},
		{"encoded slash", "PUT", "/IDX%2F_mapping", nil, `{"properties":{"evil":{"type":"keyword"}}}`},
		{"double slash", "PUT", "/IDX//_doc/2", nil, `{"title":"new"}`},
		{"leading double slash", "PUT", "//IDX/_doc/2", nil, `{"title":"new"}`},
		{"trailing slash", "PUT", "/IDX/_doc/2/", nil, `{"title":"new"}`},
		{"dot dot", "PUT", "/IDX/_doc/../_mapping", nil, `{"properties":{"evil":{"type":"keyword"}}}`},
		{"upper case", "PUT", "/IDX/_DOC/2", nil, `{"title":"new"}`},
		{"path parameter", "PUT", "/IDX/_doc/2;x=1", nil, `{"title":"new"}`},
		{"wildcard write", "PUT", "/IDX*/_doc/2", nil, `{"title":"new"}`},
		{"_all write", "PUT", "/_all/_mapping", nil, `{"properties":{"evil":{"type":"keyword"}}}`},
		{"method override", "GET", "/IDX/_doc/1", http.Header{"X-HTTP-Method-Override": {"DELETE"}}, ``},
		{"HEAD search", "HEAD", "/IDX/_search", nil, ``},
		{"include_type_name", "PUT", "/IDX/_mapping?include_type_name=true", nil, mappingBody},
		{"delete the index", "DELETE", "/IDX", nil, ``},
	} {
		path := strings.ReplaceAll(c.path, "IDX", idx)
		status, _, body := rawDo(t, c.method, s.url, path, c.header, []byte(c.body))
		if c.method == "HEAD" {
			if status != http.StatusForbidden {
				t.Errorf("%s: %d", c.name, status)
			}
			continue
		}
		wantSidecarRefusal(t, c.name+" ("+c.method+" "+path+")", status, body)
	}
	if after := esState(t, idx); after != before {
		t.Fatalf("a refused request changed Elasticsearch:\nbefore %s\nafter  %s", before, after)
	}
	// The legitimate forms still work through the sidecar.
	if status, _, body := rawDo(t, "PUT", s.url, "/"+idx+"/_doc/2?refresh=true", nil, []byte(`{"title":"new"}`)); status != 201 {
		t.Fatalf("plain write: %d %s", status, body)
	}
	if status, _, body := rawDo(t, "GET", s.url, "/"+idx+"/_doc/a%2Fb", nil, nil); status != 404 || !strings.Contains(string(body), `"_id":"a/b"`) {
		t.Fatalf("id with an encoded slash: %d %s", status, body)
	}
}

// TestGatewayIndexIsReadOnlyOnRealNode: the gateway's alias and its
// concrete index are searchable through the sidecar but neither writable
// nor deletable, and no index can be attached to the alias.
func TestGatewayIndexIsReadOnlyOnRealNode(t *testing.T) {
	alias := randomName("tusou-sc-gw-")
	concrete := alias + "-clip-000001"
	other := randomName("tusou-sc-new-")
	t.Cleanup(func() { deleteIndex(concrete); deleteIndex(other) })
	mustES(t, "PUT", "/"+concrete, `{"settings":{"number_of_shards":1,"number_of_replicas":0},"mappings":{"properties":{"title":{"type":"keyword"}}},"aliases":{"`+alias+`":{"is_write_index":true}}}`)
	mustES(t, "PUT", "/"+concrete+"/_doc/1?refresh=true", `{"title":"gateway doc"}`)
	s := startSidecarES(t, func(c *sidecar.Config, es *esproxy.Config) {
		es.Index = alias
		c.Allow = []string{"indices.put_mapping", "delete_by_query", "indices.delete", "indices.update_aliases"}
	})
	before := esState(t, concrete)
	for _, c := range []struct{ method, path, body string }{
		{"PUT", "/ALIAS/_doc/2?refresh=true", `{"title":"x"}`},
		{"PUT", "/CONCRETE/_doc/2?refresh=true", `{"title":"x"}`},
		{"POST", "/ALIAS/_update/1", `{"doc":{"title":"x"}}`},
		{"DELETE", "/ALIAS/_doc/1", ``},
		{"PUT", "/ALIAS/_mapping", `{"properties":{"evil":{"type":"keyword"}}}`},
		{"POST", "/ALIAS*/_delete_by_query", `{"query":{"match_all":{}}}`},
		{"DELETE", "/CONCRETE", ``},
		{"PUT", "/CONCRETE/_alias/other-alias", ``},
		{"POST", "/_aliases", `{"actions":[{"remove":{"index":"CONCRETE","alias":"ALIAS"}}]}`},
	} {
		path := strings.NewReplacer("CONCRETE", concrete, "ALIAS", alias).Replace(c.path)
		body := strings.NewReplacer("CONCRETE", concrete, "ALIAS", alias).Replace(c.body)
		status, _, resp := rawDo(t, c.method, s.url, path, nil, []byte(body))
		wantSidecarRefusal(t, c.method+" "+path, status, resp)
	}
	// Bulk: the gateway's items fail in place, the others are written.
	bulk := fmt.Sprintf("{\"index\":{\"_index\":%q,\"_id\":\"3\"}}\n{\"title\":\"x\"}\n{\"delete\":{\"_index\":%q,\"_id\":\"1\"}}\n{\"index\":{\"_index\":%q,\"_id\":\"1\"}}\n{\"title\":\"ok\"}\n", alias, concrete, other)
	status, _, resp := rawDo(t, "POST", s.url, "/_bulk?refresh=true", http.Header{"Content-Type": {"application/x-ndjson"}}, []byte(bulk))
	var ans struct {
		Errors bool
		Items  []map[string]struct{ Status int }
	}
	json.Unmarshal(resp, &ans)
	if status != 200 || len(ans.Items) != 3 || ans.Items[0]["index"].Status != 403 || ans.Items[1]["delete"].Status != 403 || ans.Items[2]["index"].Status != 201 {
		t.Fatalf("bulk: %d %s", status, resp)
	}
	// No index may join the gateway's alias, by creation or alias call.
	for _, c := range []struct{ method, path, body string }{
		{"PUT", "/" + other + "-2", `{"aliases":{"` + alias + `":{}}}`},
		{"PUT", "/" + other + "-2", `{"aliases":{"` + alias + `":{"is_write_index":true}},"settings":{"number_of_shards":1}}`},
		{"PUT", "/" + other + "/_alias/" + alias, ``},
		{"POST", "/_aliases", `{"actions":[{"add":{"index":"` + other + `","alias":"` + alias + `"}}]}`},
	} {
		status, _, resp := rawDo(t, c.method, s.url, c.path, nil, []byte(c.body))
		wantSidecarRefusal(t, c.method+" "+c.path+" "+c.body, status, resp)
	}
	if after := esState(t, concrete); after != before {
		t.Fatalf("the gateway's index changed:\nbefore %s\nafter  %s", before, after)
	}
	status, _, resp = rawDo(t, "GET", esURL, "/_alias/"+alias, nil, nil)
	if status != 200 || strings.Contains(string(resp), other) || !strings.Contains(string(resp), concrete) {
		t.Fatalf("alias %s now: %d %s", alias, status, resp)
	}
	if status, _, _ := rawDo(t, "HEAD", esURL, "/"+other+"-2", nil, nil); status != 404 {
		t.Fatalf("refused create-index made the index anyway: %d", status)
	}
	// Searches and reads pass.
	status, _, resp = rawDo(t, "POST", s.url, "/"+alias+"/_search", nil, []byte(`{"query":{"match_all":{}}}`))
	if status != 200 || !strings.Contains(string(resp), "gateway doc") {
		t.Fatalf("search of the gateway's alias: %d %s", status, resp)
	}
	if status, _, resp := rawDo(t, "GET", s.url, "/"+alias+"/_doc/1", nil, nil); status != 200 {
		t.Fatalf("get from the gateway's alias: %d %s", status, resp)
	}
}

// TestCreateIndexBodiesOnRealNode: settings outside the allowed set and
// aliases are refused before Elasticsearch creates anything; allowed
// bodies create the index.
func TestCreateIndexBodiesOnRealNode(t *testing.T) {
	s := startSidecar(t, nil)
	name := randomName("tusou-sc-ci-")
	t.Cleanup(func() { deleteIndex(name) })
	for _, body := range []string{
		`{"aliases":{"` + name + `-alias":{}}}`,
		`{"settings":{"index.default_pipeline":"x"}}`,
		`{"settings":{"index":{"blocks":{"write":true}}}}`,
		`{"settings":{"index.hidden":true}}`,
	} {
		status, _, resp := rawDo(t, "PUT", s.url, "/"+name, nil, []byte(body))
		wantSidecarRefusal(t, body, status, resp)
		if st, _, _ := rawDo(t, "HEAD", esURL, "/"+name, nil, nil); st != 404 {
			t.Fatalf("%s: the index exists after the refusal", body)
		}
	}
	status, _, resp := rawDo(t, "PUT", s.url, "/"+name, nil, []byte(`{"settings":{"index":{"number_of_shards":1,"number_of_replicas":0},"refresh_interval":"5s"},"mappings":{"properties":{"t":{"type":"keyword"}}}}`))
	if status != 200 || !strings.Contains(string(resp), `"acknowledged":true`) {
		t.Fatalf("allowed create: %d %s", status, resp)
	}
}

// TestMsearchAdmissionOnRealStack: a small gzip body carrying ~1M
// query_vector_builders is refused before any is parsed or embedded, and
// the sidecar keeps serving.
func TestMsearchAdmissionOnRealStack(t *testing.T) {
	s := startSidecar(t, nil)
	item := []byte("{}\n{\"knn\":{\"field\":\"image_embedding\",\"k\":1,\"num_candidates\":1,\"query_vector_builder\":{\"text_embedding\":{\"model_id\":\"clip_text\",\"model_text\":\"cat\"}}}}\n")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	for i := 0; i < 1<<20; i++ {
		zw.Write(item)
	}
	zw.Close()
	status, _, resp := rawDo(t, "POST", s.url, "/_msearch", http.Header{"Content-Type": {"application/x-ndjson"}, "Content-Encoding": {"gzip"}}, gz.Bytes())
	if status != 400 || !strings.Contains(string(resp), "max_query_builders") {
		t.Fatalf("%d KiB gzip with 1M builders: %d %s", gz.Len()>>10, status, resp)
	}
	idx := randomName("tusou-sc-ms-")
	t.Cleanup(func() { deleteIndex(idx) })
	mustES(t, "PUT", "/"+idx, mapping)
	status, _, resp = rawDo(t, "POST", s.url, "/"+idx+"/_msearch", http.Header{"Content-Type": {"application/x-ndjson"}}, bytes.Repeat(item, 3))
	if status != 200 || strings.Count(string(resp), `"status":200`) != 3 {
		t.Fatalf("msearch with 3 builders after the refusal: %d %s", status, resp)
	}
}

// TestForwardModeOnUnsecuredNode: the inference admission probe lets a
// client without credentials through when Elasticsearch has no security
// (this node): Elasticsearch would serve it anyway. Refusal on a secured
// node is covered by the unit tests (TestForwardModeAuthenticatesBeforeInference).
func TestForwardModeOnUnsecuredNode(t *testing.T) {
	s := startSidecar(t, nil)
	idx := randomName("tusou-sc-fw-")
	t.Cleanup(func() { deleteIndex(idx) })
	mustES(t, "PUT", "/"+idx, mapping)
	status, _, resp := rawDo(t, "POST", s.url, "/"+idx+"/_search", nil, []byte(`{"knn":{"field":"image_embedding","k":1,"num_candidates":1,"query_vector_builder":{"text_embedding":{"model_id":"clip_text","model_text":"a cat"}}}}`))
	if status != 200 {
		t.Fatalf("anonymous search on an unsecured node: %d %s", status, resp)
	}
}
