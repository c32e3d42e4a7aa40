package gateway

import (
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

func TestRefreshParameter(t *testing.T) {
	h, svc, _ := newTestServer(t, nil)
	for _, q := range []string{"", "?refresh=wait_for", "?refresh=true", "?refresh=false", "?refresh"} {
		b, ct := multipartBody(t, nil, map[string][]byte{"a.jpg": {1}})
		if rec := do(h, withCT(httptest.NewRequest("POST", "/v1/images"+q, b), ct)); rec.Code != 201 {
			t.Fatalf("POST %s: %d %s", q, rec.Code, rec.Body)
		}
		if rec := do(h, httptest.NewRequest("DELETE", "/v1/images/x"+q, nil)); rec.Code != 200 {
			t.Fatalf("DELETE %s: %d %s", q, rec.Code, rec.Body)
		}
	}
	// "" is the configured default; a bare ?refresh means true, as in Elasticsearch.
	want := []string{"", "", "wait_for", "wait_for", "true", "true", "false", "false", "true", "true"}
	if !reflect.DeepEqual(svc.refreshes, want) {
		t.Fatalf("refresh passed to the service %q, want %q", svc.refreshes, want)
	}

	for _, req := range []*httptest.ResponseRecorder{
		do(h, withCT(httptest.NewRequest("POST", "/v1/images?refresh=soon", strings.NewReader("img")), "image/jpeg")),
		do(h, httptest.NewRequest("DELETE", "/v1/images/x?refresh=1", nil)),
	} {
		if code := errorCode(t, req, 400); code != "invalid_refresh" || !strings.Contains(req.Body.String(), "refresh must be wait_for, true or false") {
			t.Errorf("bad refresh: code %s body %s", code, req.Body)
		}
	}
	if len(svc.refreshes) != len(want) {
		t.Errorf("the service was called despite a bad refresh parameter")
	}
}
