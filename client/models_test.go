package client

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/tusou/tusou/client/clienttest"
)

// contractStatus is the Status example of the admin API contract, verbatim
// but for updated_at.
const contractStatus = `{"alias":"images","active":"a","next":"b","previous":null,
 "generations":[{"name":"a","role":"active","index":"images-clip_image-1-1a2b3c4d-000001","documents":300,
   "image_model":{"name":"clip_image","version":"1"},"text_model":{"name":"clip_text","version":"1"},
   "dims":512,"fingerprint":"9f86d081","configured":true}],
 "switch":{"from":"a","to":"b","state":"backfilling","running":true,"total":300,"scanned":120,"created":118,
   "skipped":2,"deleted":0,"failed":0,"missing_originals":0,"docs_per_second":85.3,
   "started_at":"2026-12-06T04:00:00Z","updated_at":"2026-12-06T04:00:02Z","finished_at":null,"error":null}}`

func TestModelsStatusDecodesTheContractExample(t *testing.T) {
	var s ModelsStatus
	if err := json.Unmarshal([]byte(contractStatus), &s); err != nil {
		t.Fatal(err)
	}
	g := s.Generation("a")
	if s.Alias != "images" || s.Active != "a" || s.Next != "b" || s.Previous != "" || g == nil || s.Generation("b") != nil {
		t.Fatalf("%+v", s)
	}
	if g.Role != RoleActive || g.Documents != 300 || g.ImageModel.String() != "clip_image@1" || g.TextModel.String() != "clip_text@1" ||
		g.Dims != 512 || g.Fingerprint != "9f86d081" || !g.Configured || g.Index != "images-clip_image-1-1a2b3c4d-000001" {
		t.Fatalf("generation %+v", *g)
	}
	sw := s.Switch
	if sw == nil || sw.From != "a" || sw.To != "b" || sw.State != SwitchBackfilling || !sw.Running || sw.Finished() ||
		sw.Total != 300 || sw.Scanned != 120 || sw.Created != 118 || sw.Skipped != 2 || sw.DocsPerSecond != 85.3 ||
		!sw.StartedAt.Equal(time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC)) || !sw.FinishedAt.IsZero() || sw.Error != "" {
		t.Fatalf("switch %+v", sw)
	}
	if string(s.Raw) != contractStatus {
		t.Fatalf("Raw must keep the answer as sent: %s", s.Raw)
	}
}

func fakeModels(t *testing.T) *clienttest.Gateway {
	t.Helper()
	g := clienttest.New()
	t.Cleanup(g.Close)
	g.AdminKeys = []string{"adm1n"}
	g.APIKey = "api"
	g.Models = &clienttest.Models{Active: "a", Documents: 300, Generations: []clienttest.Generation{
		{Name: "a", ImageModel: "clip_image", ImageVersion: "1", TextModel: "clip_text", TextVersion: "1"},
		{Name: "b", ImageModel: "clip_image", ImageVersion: "2", TextModel: "clip_text", TextVersion: "2"},
		{Name: "c", ImageModel: "clip_image", ImageVersion: "3", TextModel: "clip_text", TextVersion: "3"},
	}}
	return g
}

func TestModelsSwitchFollowedToDone(t *testing.T) {
	g := fakeModels(t)
	ctx := context.Background()
	c := newClient(t, g.URL, WithAPIKey("api"), WithAdminKey("adm1n"))
	s, err := c.ModelsSwitch(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if s.Next != "b" || s.Switch == nil || !s.Switch.Running || s.Switch.To != "b" || s.Switch.From != "a" || s.Switch.StartedAt.IsZero() {
		t.Fatalf("switch answer %+v %+v", s, s.Switch)
	}
	started := s.Switch.StartedAt
	var states []string
	for range 20 {
		if s, err = c.ModelsStatus(ctx); err != nil {
			t.Fatal(err)
		}
		states = append(states, s.Switch.State)
		if s.Switch.Finished() {
			break
		}
	}
	if s.Switch.State != SwitchDone || s.Switch.Running || !s.Switch.StartedAt.Equal(started) || s.Switch.FinishedAt.IsZero() {
		t.Fatalf("states %v, last %+v", states, s.Switch)
	}
	if s.Active != "b" || s.Previous != "a" || s.Next != "" || s.Generation("a").Role != RolePrevious || s.Generation("c").Role != RoleUnused {
		t.Fatalf("after the switch: %+v", s)
	}
	if s.Switch.Total != 300 || s.Switch.Created != 300 {
		t.Fatalf("counts %+v", s.Switch)
	}
	// Again: nothing to do.
	if s, err = c.ModelsSwitch(ctx, "b"); err != nil || !s.Switch.Noop || s.Switch.State != SwitchDone {
		t.Fatalf("second switch: %+v %v", s, err)
	}
	// Prune the previous generation; then there is none.
	p, err := c.ModelsPrune(ctx, "")
	if err != nil || p.Generation != "a" || p.DeletedIndex != "images-a-000001" {
		t.Fatalf("prune %+v %v", p, err)
	}
	_, err = c.ModelsRollback(ctx)
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 409 || apiErr.Code != "no_previous" {
		t.Fatalf("rollback without previous: %v", err)
	}
}

func TestModelsRefusals(t *testing.T) {
	g := fakeModels(t)
	ctx := context.Background()
	code := func(err error) string {
		var apiErr *APIError
		if !errors.As(err, &apiErr) {
			t.Fatalf("want an APIError, got %v", err)
		}
		return apiErr.Code
	}
	// The API key is not an admin key, and is not sent to the admin API.
	if _, err := newClient(t, g.URL, WithAPIKey("adm1n")).ModelsStatus(ctx); code(err) != "unauthorized" {
		t.Fatalf("admin call with only the API key: %v", err)
	}
	c := newClient(t, g.URL, WithAdminKey("adm1n"))
	if _, err := c.ModelsSwitch(ctx, "zz"); code(err) != "unknown_generation" {
		t.Fatal(err)
	}
	if _, err := c.ModelsSwitch(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ModelsSwitch(ctx, "c"); code(err) != "switch_in_progress" {
		t.Fatal(err)
	}
	if _, err := c.ModelsPrune(ctx, "b"); code(err) != "generation_in_use" {
		t.Fatal(err)
	}
	s, err := c.ModelsAbort(ctx)
	if err != nil || s.Switch.State != SwitchAborted || s.Switch.Running || s.Next != "" || s.Switch.Error == "" {
		t.Fatalf("abort: %+v %v", s, err)
	}
	g.AdminKeys = nil
	if _, err := c.ModelsStatus(ctx); code(err) != "admin_disabled" {
		t.Fatal(err)
	}
}

func TestModelsUnsafeCallsAreNotRepeated(t *testing.T) {
	g := fakeModels(t)
	ctx := context.Background()
	c := newClient(t, g.URL, WithAdminKey("adm1n"))
	recordSleeps(c)
	g.Models.Previous = "c"
	// A 502 may come from a proxy that passed the rollback on: not repeated.
	g.FailNext(1, 502, "")
	if _, err := c.ModelsRollback(ctx); err == nil {
		t.Fatal("a rollback answered 502 must not be repeated")
	}
	if n := g.Requests()["POST /v1/admin/models/rollback"]; n != 1 {
		t.Fatalf("%d rollback requests, want 1", n)
	}
	// A 503 is the gateway turning it away: repeated.
	g.FailNext(1, 503, "")
	if s, err := c.ModelsRollback(ctx); err != nil || s.Switch.To != "c" {
		t.Fatalf("rollback after a 503: %+v %v", s, err)
	}
	// A refused connection never reached a gateway: repeated.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	down := newClient(t, "http://"+addr, WithAdminKey("adm1n"), WithRetry(Retry{MaxAttempts: 3, Initial: time.Millisecond, Max: time.Millisecond}))
	recordSleeps(down)
	var te *TransportError
	if _, err := down.ModelsPrune(ctx, "a"); !errors.As(err, &te) || te.Attempts != 3 {
		t.Fatalf("prune against a closed port: %v", err)
	}
	// A switch is safe to repeat whatever the failure.
	g.FailNext(1, 502, "")
	if _, err := c.ModelsSwitch(ctx, "c"); err != nil {
		t.Fatal(err)
	}
}
