package sidecar

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/esproxy"
)

// mapResolver answers from a fixed table, so tests can point allow-listed
// names at the local test server (or at any address) without DNS.
type mapResolver map[string][]string

func (m mapResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	addrs, ok := m[host]
	if !ok {
		return nil, fmt.Errorf("no such host %s", host)
	}
	var out []netip.Addr
	for _, a := range addrs {
		out = append(out, netip.MustParseAddr(a))
	}
	return out, nil
}

// imageServer serves /img (the payload), /big (chunked, over the limit),
// /missing (404) and /redirect?to=URL.
func imageServer(t *testing.T, payload []byte) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/img":
			w.Write(payload)
		case "/big":
			for i := 0; i < 64; i++ {
				w.Write(make([]byte, 1024))
				w.(http.Flusher).Flush()
			}
		case "/redirect":
			http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return srv, u.Port()
}

func testFetcher(allowLoopback bool) *fetcher {
	f := newFetcher(URLFetch{
		Enabled: true, Schemes: []string{"http"}, Hosts: []string{"img.test", "*.cdn.test", "10.0.0.1", "169.254.169.254"},
		MaxBytes: 16 << 10, Timeout: 5 * time.Second, MaxRedirects: 2,
	}, mapResolver{
		"img.test":        {"127.0.0.1"},
		"a.cdn.test":      {"127.0.0.1"},
		"evil.test":       {"127.0.0.1"},
		"mixed.cdn.test":  {"93.184.216.34", "10.1.2.3"},
		"meta.cdn.test":   {"169.254.169.254"},
		"v6.cdn.test":     {"::1"},
		"mapped.cdn.test": {"::ffff:127.0.0.1"},
	})
	f.allowLoopback = allowLoopback
	return f
}

func wantRefused(t *testing.T, name string, err error, substr string) {
	t.Helper()
	ae := apierr.As(err)
	if ae == nil || ae.Kind != apierr.InvalidArgument || !strings.Contains(ae.Message, substr) {
		t.Errorf("%s: want an InvalidArgument containing %q, got %v", name, substr, err)
	}
}

func TestFetchRefusesLoopbackEvenWhenHostIsAllowed(t *testing.T) {
	payload := []byte("PNG bytes")
	_, port := imageServer(t, payload)
	f := testFetcher(false)
	defer f.close()
	ctx := context.Background()
	for _, host := range []string{"img.test", "a.cdn.test", "v6.cdn.test", "mapped.cdn.test", "meta.cdn.test", "mixed.cdn.test", "10.0.0.1", "169.254.169.254"} {
		_, err := f.fetch(ctx, "http://"+host+":"+port+"/img")
		wantRefused(t, host, err, "non-public address")
	}

	// The test-only switch proves the same name works when its address is
	// acceptable: the refusal above is the address check, not the name.
	ok := testFetcher(true)
	defer ok.close()
	got, err := ok.fetch(ctx, "http://img.test:"+port+"/img")
	if err != nil || string(got) != string(payload) {
		t.Fatalf("allowed fetch: %q %v", got, err)
	}
	got, err = ok.fetch(ctx, "http://a.cdn.test:"+port+"/img")
	if err != nil || string(got) != string(payload) {
		t.Fatalf("wildcard host: %q %v", got, err)
	}
	// Private and link-local addresses stay refused under the test switch.
	for _, host := range []string{"meta.cdn.test", "mixed.cdn.test", "10.0.0.1"} {
		_, err := ok.fetch(ctx, "http://"+host+":"+port+"/img")
		wantRefused(t, host+" (loopback allowed)", err, "non-public address")
	}
}

func TestFetchAllowLists(t *testing.T) {
	_, port := imageServer(t, []byte("x"))
	f := testFetcher(true)
	defer f.close()
	ctx := context.Background()
	wantRefused(t, "host", errOnly(f.fetch(ctx, "http://evil.test:"+port+"/img")), "not in url_fetch.hosts")
	wantRefused(t, "suffix trick", errOnly(f.fetch(ctx, "http://img.test.evil.test:"+port+"/img")), "not in url_fetch.hosts")
	wantRefused(t, "bare suffix", errOnly(f.fetch(ctx, "http://cdn.test:"+port+"/img")), "not in url_fetch.hosts")
	wantRefused(t, "scheme", errOnly(f.fetch(ctx, "https://img.test:"+port+"/img")), "scheme")
	wantRefused(t, "file", errOnly(f.fetch(ctx, "file:///etc/passwd")), "scheme")
	wantRefused(t, "userinfo", errOnly(f.fetch(ctx, "http://u:p@img.test:"+port+"/img")), "user info")
	// Redirects are checked hop by hop: to a host off the list, and to an
	// allow-listed literal private address.
	wantRefused(t, "redirect host", errOnly(f.fetch(ctx, "http://img.test:"+port+"/redirect?to="+url.QueryEscape("http://evil.test:"+port+"/img"))), "not in url_fetch.hosts")
	wantRefused(t, "redirect private", errOnly(f.fetch(ctx, "http://img.test:"+port+"/redirect?to="+url.QueryEscape("http://10.0.0.1:"+port+"/img"))), "non-public address")
	if got, err := f.fetch(ctx, "http://img.test:"+port+"/redirect?to="+url.QueryEscape("http://a.cdn.test:"+port+"/img")); err != nil || string(got) != "x" {
		t.Errorf("allowed redirect: %q %v", got, err)
	}
	chain := "http://img.test:" + port + "/img"
	for i := 0; i < 3; i++ {
		chain = "http://img.test:" + port + "/redirect?to=" + url.QueryEscape(chain)
	}
	wantRefused(t, "redirect count", errOnly(f.fetch(ctx, chain)), "too many redirects")
	wantRefused(t, "status", errOnly(f.fetch(ctx, "http://img.test:"+port+"/missing")), "HTTP 404")
	_, err := f.fetch(ctx, "http://img.test:"+port+"/big")
	if ae := apierr.As(err); ae == nil || ae.Kind != apierr.TooLarge {
		t.Errorf("size limit: %v", err)
	}
}

func errOnly(_ []byte, err error) error { return err }

// TestImageURLThroughTheSidecar: with url_fetch on, an image_url document
// gets the vector of the fetched bytes; a refused URL fails only its item.
func TestImageURLThroughTheSidecar(t *testing.T) {
	payload := []byte("remote image")
	_, port := imageServer(t, payload)
	h := newHarness(t, func(c *Config, _ *esproxy.Config) {
		c.URLFetch.Enabled = true
		c.URLFetch.Schemes = []string{"http"}
		c.URLFetch.Hosts = []string{"img.test"}
	})
	h.sc.fetch.resolver = mapResolver{"img.test": {"127.0.0.1"}}
	h.sc.fetch.allowLoopback = true
	status, _, resp := h.do("POST", "/p/_bulk", nil, ndjson(
		`{"index":{"_id":"1"}}`, `{"image_url":"http://img.test:`+port+`/img"}`,
		`{"index":{"_id":"2"}}`, `{"image_url":"http://127.0.0.1:`+port+`/img"}`,
	))
	if status != 200 || !strings.Contains(string(resp), `"errors":true`) || !strings.Contains(string(resp), "not in url_fetch.hosts") {
		t.Fatalf("%d %s", status, resp)
	}
	want := `{"image_embedding":` + string(esproxy.AppendVector(nil, fakeVector(payload))) + "}\n"
	if got := string(h.es.last().Body); !strings.HasSuffix(got, want) || strings.Count(got, "\n") != 2 {
		t.Fatalf("upstream %s", got)
	}
	// A url image query builder uses the same fetcher.
	status, _, resp = h.do("POST", "/p/_search", nil, []byte(`{"knn":{"field":"image_embedding","query_vector_builder":{"image_embedding":{"url":"http://img.test:`+port+`/img"}}}}`))
	if status != 200 || !strings.Contains(string(h.es.last().Body), string(esproxy.AppendVector(nil, fakeVector(payload)))) {
		t.Fatalf("url query: %d %s", status, resp)
	}
}

// TestAddressesEmbeddingIPv4AreRefused: every IPv6 form that carries an
// IPv4 address (or reaches one through a translator or relay) is refused,
// whatever the embedded address, as are the IPv4 special ranges.
func TestAddressesEmbeddingIPv4AreRefused(t *testing.T) {
	f := testFetcher(false)
	defer f.close()
	for _, a := range []string{
		"::10.0.0.1", "::127.0.0.1", "::8.8.8.8", // IPv4-compatible ::/96
		"::ffff:10.0.0.1", "::ffff:169.254.169.254", // IPv4-mapped
		"::ffff:0:10.0.0.1", "::ffff:0:8.8.8.8", // SIIT IPv4-translated
		"64:ff9b::a00:1", "64:ff9b::7f00:1", "64:ff9b::808:808", // NAT64 well-known prefix
		"64:ff9b:1::a00:1", "64:ff9b:1:ffff::808:808", // NAT64 local-use 64:ff9b:1::/48
		"2002:a00:1::1", "2002:7f00:1::", "2002:c0a8:101::1", "2002:808:808::1", // 6to4
		"2001:0:4136:e378:8000:63bf:f5ff:fffe",                           // Teredo
		"2001:470:1f05::5efe:a00:1", "2001:470:1f05::200:5efe:a9fe:a9fe", // ISATAP interface ids
		"2001:db8::1", "3fff::1", "100::1", "fc00::1", "fd12::1", "fe80::1", "fec0::1", "ff02::1", "::", "::1",
		"0.0.0.1", "100.64.0.1", "192.0.0.8", "192.0.2.1", "192.88.99.1", "198.18.0.1", "198.51.100.7", "203.0.113.9",
		"240.0.0.1", "255.255.255.255", "224.0.0.1", "169.254.169.254", "172.16.0.1", "192.168.1.1", "10.1.2.3", "127.0.0.53",
	} {
		ip := netip.MustParseAddr(a)
		if err := f.checkAddr(ip); err == nil {
			t.Errorf("%s accepted", a)
		}
	}
	for _, a := range []string{"8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2001:4860:4860::8888", "2a00:1450:4001:80b::200e", "::ffff:8.8.8.8"} {
		if err := f.checkAddr(netip.MustParseAddr(a)); err != nil {
			t.Errorf("public %s refused: %v", a, err)
		}
	}
}
