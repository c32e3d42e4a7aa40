package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/config"
	"github.com/tusou/tusou/models"
)

type fakeModels struct {
	switchedTo []string
	running    bool
	pruned     []string
	aborted    int
}

func (f *fakeModels) Status(context.Context) (*models.Status, error) {
	a := "a"
	st := &models.Status{Alias: "images", Active: &a, Generations: []models.GenerationStatus{{Name: "a", Role: "active", Configured: true}}}
	if f.running {
		st.Switch = &models.SwitchStatus{From: "a", To: f.switchedTo[len(f.switchedTo)-1], State: models.StateBackfilling, Running: true}
	}
	return st, nil
}

func (f *fakeModels) Switch(_ context.Context, to string) (*models.SwitchStatus, bool, error) {
	switch to {
	case "a":
		return &models.SwitchStatus{From: "a", To: "a", State: models.StateDone, Noop: true}, false, nil
	case "zz":
		return nil, false, apierr.New(apierr.NotFound, "unknown_generation", "no generation %q", to)
	}
	if f.running && f.switchedTo[len(f.switchedTo)-1] != to {
		return nil, false, apierr.New(apierr.Conflict, "switch_in_progress", "a switch runs")
	}
	f.switchedTo = append(f.switchedTo, to)
	f.running = true
	return nil, true, nil
}

func (f *fakeModels) Rollback(context.Context) (*models.SwitchStatus, bool, error) {
	return nil, false, apierr.New(apierr.Conflict, "no_previous", "no previous generation")
}

func (f *fakeModels) Prune(_ context.Context, gen string) (models.PruneResult, error) {
	if gen == "" {
		gen = "b"
	}
	if gen == "a" {
		return models.PruneResult{}, apierr.New(apierr.Conflict, "generation_in_use", "a is active")
	}
	f.pruned = append(f.pruned, gen)
	return models.PruneResult{DeletedIndex: "images-" + gen, Generation: gen}, nil
}

func (f *fakeModels) Abort(ctx context.Context) (*models.Status, error) {
	f.aborted++
	f.running = false
	return f.Status(ctx)
}

const adminKey = "admin-key-0123456789"

func newAdminServer(t *testing.T, keys ...string) (http.Handler, *fakeModels) {
	t.Helper()
	cfg := config.Default()
	cfg.Auth.APIKeys = []string{"app-key-0123456789ab"}
	cfg.Auth.AdminKeys = keys
	reg := prometheus.NewRegistry()
	m := &fakeModels{}
	return New(Deps{Config: cfg, Service: &fakeService{}, Logger: zap.NewNop(), Registry: reg, Gatherer: reg, Models: m}), m
}

func adminReq(method, path, body, key string) *http.Request {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		r.Header.Set("Authorization", "ApiKey "+key)
	}
	return r
}

func TestAdminAPIIsOffWithoutAdminKeys(t *testing.T) {
	h, m := newAdminServer(t)
	rec := do(h, adminReq("POST", "/v1/admin/models/switch", `{"to":"b"}`, "app-key-0123456789ab"))
	if code := errorCode(t, rec, http.StatusForbidden); code != "admin_disabled" || !strings.Contains(rec.Body.String(), "auth.admin_keys") {
		t.Fatalf("code %s body %s", code, rec.Body)
	}
	if len(m.switchedTo) != 0 {
		t.Fatal("switched without an admin key")
	}
}

func TestAdminAPIRefusesAppKeys(t *testing.T) {
	h, m := newAdminServer(t, adminKey)
	for _, key := range []string{"", "app-key-0123456789ab", adminKey + "x"} {
		rec := do(h, adminReq("POST", "/v1/admin/models/switch", `{"to":"b"}`, key))
		if code := errorCode(t, rec, http.StatusUnauthorized); code != "unauthorized" || !strings.Contains(rec.Body.String(), "admin key") {
			t.Fatalf("key %q: code %s body %s", key, code, rec.Body)
		}
	}
	if len(m.switchedTo) != 0 {
		t.Fatal("switched with an app key")
	}
	// The admin key is not an app key either.
	rec := do(h, adminReq("POST", "/v1/search/text", `{"text":"x"}`, adminKey))
	errorCode(t, rec, http.StatusUnauthorized)
}

func TestAdminSwitchLifecycle(t *testing.T) {
	h, m := newAdminServer(t, adminKey)
	rec := do(h, adminReq("POST", "/v1/admin/models/switch", `{"to":"b"}`, adminKey))
	if rec.Code != http.StatusAccepted {
		t.Fatalf("switch: %d %s", rec.Code, rec.Body)
	}
	var st models.Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil || st.Switch == nil || st.Switch.To != "b" || !st.Switch.Running || *st.Active != "a" {
		t.Fatalf("status %s (%v)", rec.Body, err)
	}
	// Same target again: still 202, not a second job.
	if rec := do(h, adminReq("POST", "/v1/admin/models/switch", `{"to":"b"}`, adminKey)); rec.Code != http.StatusAccepted || len(m.switchedTo) != 2 {
		t.Fatalf("again: %d %s", rec.Code, rec.Body)
	}
	if code := errorCode(t, do(h, adminReq("POST", "/v1/admin/models/switch", `{"to":"c"}`, adminKey)), http.StatusConflict); code != "switch_in_progress" {
		t.Fatal(code)
	}
	if code := errorCode(t, do(h, adminReq("POST", "/v1/admin/models/switch", `{"to":"zz"}`, adminKey)), http.StatusNotFound); code != "unknown_generation" {
		t.Fatal(code)
	}
	if rec := do(h, adminReq("DELETE", "/v1/admin/models/switch", "", adminKey)); rec.Code != http.StatusOK || m.aborted != 1 {
		t.Fatalf("abort: %d %s", rec.Code, rec.Body)
	}
	// Already active: 200 and a noop.
	rec = do(h, adminReq("POST", "/v1/admin/models/switch", `{"to":"a"}`, adminKey))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"noop":true`) {
		t.Fatalf("noop: %d %s", rec.Code, rec.Body)
	}
	if code := errorCode(t, do(h, adminReq("POST", "/v1/admin/models/rollback", "", adminKey)), http.StatusConflict); code != "no_previous" {
		t.Fatal(code)
	}
}

func TestAdminBadBodies(t *testing.T) {
	h, m := newAdminServer(t, adminKey)
	for body, want := range map[string]string{
		`{"to":`:           "invalid_json",
		`{}`:               "invalid_request",
		`{"to":"b","x":1}`: "invalid_request",
		`{"to":"` + strings.Repeat("b", 5000) + `"}`: "body_too_large",
	} {
		rec := do(h, adminReq("POST", "/v1/admin/models/switch", body, adminKey))
		if rec.Code < 400 || rec.Code > 499 {
			t.Fatalf("%.20q: %d", body, rec.Code)
		}
		if code := errorCode(t, rec, rec.Code); code != want {
			t.Errorf("%.20q: code %s, want %s", body, code, want)
		}
	}
	if len(m.switchedTo) != 0 {
		t.Fatal("a bad body switched")
	}
}

func TestAdminPrune(t *testing.T) {
	h, m := newAdminServer(t, adminKey)
	rec := do(h, adminReq("POST", "/v1/admin/models/prune", "", adminKey))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"deleted_index":"images-b"`) || len(m.pruned) != 1 {
		t.Fatalf("prune: %d %s", rec.Code, rec.Body)
	}
	if code := errorCode(t, do(h, adminReq("POST", "/v1/admin/models/prune", `{"generation":"a"}`, adminKey)), http.StatusConflict); code != "generation_in_use" {
		t.Fatal(code)
	}
}
