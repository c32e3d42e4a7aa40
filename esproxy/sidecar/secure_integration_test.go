//go:build integration

package sidecar_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tusou/tusou/esproxy"
	"github.com/tusou/tusou/esproxy/sidecar"
	"github.com/tusou/tusou/internal/testutil"
	"github.com/tusou/tusou/preprocess"
)

// The sidecar in front of the local stack's secured Elasticsearch node
// (HTTPS, authentication on, file-realm users; make up starts it): in
// forward mode Elasticsearch judges each client's own credentials, and no
// inference is spent on a client it turns away; in replace mode only the
// sidecar's own API keys admit a client, and Elasticsearch sees the
// gateway's credentials.

// embedCount counts the embeddings a sidecar asks for, images and texts.
type embedCount struct{ n atomic.Int64 }

func (c *embedCount) value() int64 { return c.n.Load() }

func (c *embedCount) images(e sidecar.ImageEmbedder) sidecar.ImageEmbedder {
	return countingImages{e, c}
}

func (c *embedCount) texts(e sidecar.TextEmbedder) sidecar.TextEmbedder { return countingTexts{e, c} }

type countingImages struct {
	sidecar.ImageEmbedder
	c *embedCount
}

func (e countingImages) Embed(ctx context.Context, data []byte) ([]float32, preprocess.Info, error) {
	e.c.n.Add(1)
	return e.ImageEmbedder.Embed(ctx, data)
}

type countingTexts struct {
	sidecar.TextEmbedder
	c *embedCount
}

func (e countingTexts) Embed(ctx context.Context, text string) ([]float32, error) {
	e.c.n.Add(1)
	return e.TextEmbedder.Embed(ctx, text)
}

// startSecureSidecar serves a sidecar whose upstream is the secured node.
func startSecureSidecar(t *testing.T, sec testutil.SecureES, mutate func(*sidecar.Config, *esproxy.Config)) *stack {
	t.Helper()
	return startSidecarES(t, func(c *sidecar.Config, e *esproxy.Config) {
		e.Addresses = []string{sec.URL}
		e.CACert = sec.CACert
		if mutate != nil {
			mutate(c, e)
		}
	})
}

// secureIndex creates a test index on the secured node (as the test user)
// and deletes it after the test.
func secureIndex(t *testing.T, sec testutil.SecureES) string {
	t.Helper()
	idx := randomName("tusou-sc-sec-")
	do := func(method, body string) (int, string) {
		req, _ := http.NewRequest(method, sec.URL+"/"+idx, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := sec.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if status, body := do("PUT", mapping); status != 200 {
		t.Fatalf("create %s on the secured node: %d %s", idx, status, body)
	}
	t.Cleanup(func() { do("DELETE", "") })
	return idx
}

func basic(user, password string) http.Header {
	return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))}}
}

func apiKey(key string) http.Header { return http.Header{"Authorization": {"ApiKey " + key}} }

const textQuery = `{"knn":{"field":"image_embedding","k":1,"num_candidates":10,"query_vector_builder":{"text_embedding":{"model_id":"clip_text","model_text":"a photo"}}}}`

// wantESRefusal checks a refusal that Elasticsearch made (not the sidecar):
// its status, a security_exception whose reason holds want.
func wantESRefusal(t *testing.T, what string, wantStatus int, want string, status int, body []byte) {
	t.Helper()
	if status != wantStatus || !strings.Contains(string(body), `"security_exception"`) || !strings.Contains(string(body), want) {
		t.Fatalf("%s: got %d %s, want %d security_exception with %q", what, status, body, wantStatus, want)
	}
	if strings.Contains(string(body), "sidecar") {
		t.Fatalf("%s: refused by the sidecar, want Elasticsearch's own refusal: %s", what, body)
	}
}

// TestForwardModeOnSecuredNode: the client's own credentials decide. No
// credentials or a wrong password: Elasticsearch's 401 with its challenge,
// and no embedding computed. A role without delete: documents with images
// are embedded and indexed, the delete the sidecar lets through gets
// Elasticsearch's 403. A user with the rights: the delete succeeds.
func TestForwardModeOnSecuredNode(t *testing.T) {
	sec, err := testutil.LoadSecureES()
	if err != nil {
		t.Fatal(err)
	}
	s := startSecureSidecar(t, sec, nil)
	idx := secureIndex(t, sec)
	img := loadFixtures(t)[0]
	doc := []byte(`{"image_base64":"` + img.b64 + `","file":"` + img.File + `"}`)
	bulk := []byte(`{"index":{"_index":"` + idx + `","_id":"b1"}}` + "\n" + string(doc) + "\n")

	for name, hdr := range map[string]http.Header{
		"no credentials": nil,
		"wrong password": basic(sec.NoDeleteUsername, sec.NoDeletePassword+"x"),
	} {
		reason := "missing authentication credentials"
		if hdr != nil {
			reason = "unable to authenticate user [" + sec.NoDeleteUsername + "]"
		}
		status, h, body := rawDo(t, "POST", s.url, "/"+idx+"/_search", hdr, []byte(textQuery))
		wantESRefusal(t, name+": search with a text query builder", 401, reason, status, body)
		if !strings.Contains(strings.Join(h.Values("WWW-Authenticate"), ";"), `Basic realm="security"`) {
			t.Errorf("%s: 401 without Elasticsearch's challenge: %v", name, h)
		}
		status, _, body = rawDo(t, "PUT", s.url, "/"+idx+"/_doc/1", hdr, doc)
		wantESRefusal(t, name+": index a document with an image", 401, reason, status, body)
		status, _, body = rawDo(t, "POST", s.url, "/_bulk", http.Header{"Authorization": hdr.Values("Authorization"), "Content-Type": {"application/x-ndjson"}}, bulk)
		wantESRefusal(t, name+": bulk with an image", 401, reason, status, body)
	}
	if n := s.embeds.value(); n != 0 {
		t.Fatalf("%d embeddings computed for clients Elasticsearch refused", n)
	}

	// No delete rights: writes and searches pass with their embeddings.
	nodel := basic(sec.NoDeleteUsername, sec.NoDeletePassword)
	status, _, body := rawDo(t, "PUT", s.url, "/"+idx+"/_doc/1?refresh=true", nodel, doc)
	if status != 201 {
		t.Fatalf("index as %s: %d %s", sec.NoDeleteUsername, status, body)
	}
	status, _, body = rawDo(t, "POST", s.url, "/"+idx+"/_search", nodel, []byte(textQuery))
	if status != 200 || !strings.Contains(string(body), `"_id":"1"`) {
		t.Fatalf("search as %s: %d %s", sec.NoDeleteUsername, status, body)
	}
	if n := s.embeds.value(); n != 2 {
		t.Fatalf("%d embeddings for one document and one query, want 2", n)
	}
	status, _, body = rawDo(t, "DELETE", s.url, "/"+idx+"/_doc/1", nodel, nil)
	wantESRefusal(t, "delete as "+sec.NoDeleteUsername, 403, "indices:data/write/delete", status, body)
	t.Logf("Elasticsearch's refusal, passed through: %s", body)
	if !strings.Contains(string(body), sec.NoDeleteUsername) {
		t.Fatalf("403 does not name the client's user %s: %s", sec.NoDeleteUsername, body)
	}
	status, _, body = rawDo(t, "GET", s.url, "/"+idx+"/_doc/1", nodel, nil)
	if status != 200 || !strings.Contains(string(body), `"found":true`) {
		t.Fatalf("document gone after a refused delete: %d %s", status, body)
	}

	// Full rights: the same delete passes.
	status, _, body = rawDo(t, "DELETE", s.url, "/"+idx+"/_doc/1", basic(sec.Username, sec.Password), nil)
	if status != 200 || !strings.Contains(string(body), `"result":"deleted"`) {
		t.Fatalf("delete as %s: %d %s", sec.Username, status, body)
	}
}

// TestReplaceModeOnSecuredNode: only the sidecar's own API key admits a
// client, whatever Elasticsearch credentials it brings, and nothing is
// embedded for the others. Upstream, Elasticsearch sees the gateway's
// credentials (here the user without delete rights): the admitted
// client's documents are indexed, and its delete gets the 403 that names
// the gateway's user.
func TestReplaceModeOnSecuredNode(t *testing.T) {
	sec, err := testutil.LoadSecureES()
	if err != nil {
		t.Fatal(err)
	}
	var b [16]byte
	rand.Read(b[:])
	key := hex.EncodeToString(b[:])
	s := startSecureSidecar(t, sec, func(c *sidecar.Config, e *esproxy.Config) {
		c.Credentials = sidecar.CredentialsReplace
		c.APIKeys = []string{key}
		e.Username, e.Password = sec.NoDeleteUsername, sec.NoDeletePassword
	})
	idx := secureIndex(t, sec)
	img := loadFixtures(t)[0]
	doc := []byte(`{"image_base64":"` + img.b64 + `","file":"` + img.File + `"}`)

	for name, hdr := range map[string]http.Header{
		"no credentials": nil,
		// Valid on Elasticsearch, but not the sidecar's key.
		"the client's own Elasticsearch user": basic(sec.Username, sec.Password),
		"another API key":                     apiKey(key + "x"),
	} {
		for _, req := range []struct {
			method, path string
			body         []byte
		}{{"POST", "/" + idx + "/_search", []byte(textQuery)}, {"PUT", "/" + idx + "/_doc/1", doc}, {"GET", "/" + idx + "/_doc/1", nil}} {
			status, h, body := rawDo(t, req.method, s.url, req.path, hdr, req.body)
			if status != 401 || !strings.Contains(string(body), `"security_exception"`) || h.Get("WWW-Authenticate") != "ApiKey" {
				t.Fatalf("%s: %s %s: %d %v %s, want the sidecar's 401 with an ApiKey challenge", name, req.method, req.path, status, h, body)
			}
		}
	}
	if n := s.embeds.value(); n != 0 {
		t.Fatalf("%d embeddings computed for clients without the sidecar's key", n)
	}

	admitted := apiKey(key)
	status, _, body := rawDo(t, "PUT", s.url, "/"+idx+"/_doc/1?refresh=true", admitted, doc)
	if status != 201 {
		t.Fatalf("index with the sidecar's key: %d %s", status, body)
	}
	status, _, body = rawDo(t, "POST", s.url, "/"+idx+"/_search", admitted, []byte(textQuery))
	if status != 200 || !strings.Contains(string(body), `"_id":"1"`) {
		t.Fatalf("search with the sidecar's key: %d %s", status, body)
	}
	status, _, body = rawDo(t, "DELETE", s.url, "/"+idx+"/_doc/1", admitted, nil)
	wantESRefusal(t, "delete with the sidecar's key as the gateway's user", 403, "indices:data/write/delete", status, body)
	if !strings.Contains(string(body), sec.NoDeleteUsername) {
		t.Fatalf("403 does not name the gateway's user %s: %s", sec.NoDeleteUsername, body)
	}
}
