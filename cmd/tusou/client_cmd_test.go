package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tusou/tusou/client/clienttest"
	"github.com/tusou/tusou/ingest"
)

func exitStatus(err error) int {
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if err != nil {
		return 1
	}
	return 0
}

func TestIngestCommand(t *testing.T) {
	g := clienttest.New()
	defer g.Close()
	g.Reject = func(name string, _ []byte) *clienttest.ItemError {
		if name == "bad.jpg" {
			return &clienttest.ItemError{Status: 422, Code: "image_corrupt", Message: "damaged"}
		}
		return nil
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "good.jpg"), []byte("\xff\xd8\xffgood"), 0o644)
	os.WriteFile(filepath.Join(dir, "bad.jpg"), []byte("\xff\xd8\xffbad"), 0o644)
	report := filepath.Join(t.TempDir(), "r.jsonl")
	var stdout, stderr bytes.Buffer
	// Flags after the path, repeated --metadata, key from the environment.
	g.APIKey = "k3y"
	t.Setenv("TUSOU_API_KEY", "k3y")
	err := run([]string{"ingest", dir, "--url", g.URL, "--metadata", "album=a", "--metadata", "by=me", "-o", "json",
		"--report", report, "--progress", "off"}, &stdout, &stderr)
	if exitStatus(err) != exitFailed {
		t.Fatalf("err %v, want exit %d", err, exitFailed)
	}
	var s ingest.Summary
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil || s.Indexed != 1 || s.Failed != 1 {
		t.Fatalf("summary %s (%v)", stdout.String(), err)
	}
	for _, img := range g.Images() {
		if img.Metadata["album"] != "a" || img.Metadata["by"] != "me" || img.Metadata["image_name"] != "good.jpg" {
			t.Fatalf("metadata %v", img.Metadata)
		}
	}
	if raw, _ := os.ReadFile(report); !strings.Contains(string(raw), `"code":"image_corrupt"`) {
		t.Fatalf("report %s", raw)
	}
	// All indexed now but bad.jpg: text summary, same exit status.
	stdout.Reset()
	err = run([]string{"ingest", "--url", g.URL, "--report", "", "--progress", "off", dir}, &stdout, &stderr)
	if exitStatus(err) != exitFailed || !strings.Contains(stdout.String(), "already indexed") {
		t.Fatalf("err %v\n%s", err, stdout.String())
	}
}

func TestIngestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"ingest"},
		{"ingest", ".", "--metadata", "novalue"},
		{"ingest", ".", "-o", "yaml"},
		{"ingest", ".", "--progress", "fancy"},
		{"ingest", ".", "--url", "localhost:8080"},
		{"search"},
		{"search", "--text", "a", "--image", "b"},
		{"search", "--text", "a", "--filter", "[1]"},
	} {
		var out bytes.Buffer
		if err := run(args, &out, &out); exitStatus(err) != exitUsage {
			t.Errorf("%v: err %v, want exit %d", args, err, exitUsage)
		}
	}
}

func TestSearchCommand(t *testing.T) {
	g := clienttest.New()
	defer g.Close()
	id := g.Put([]byte("a"), map[string]any{"relative_path": "2024/cat.jpg"})
	var stdout, stderr bytes.Buffer
	if err := run([]string{"search", "--url", g.URL, "--text", "一只猫", "--k", "5"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), id+"  2024/cat.jpg") || !strings.Contains(stdout.String(), "1 hits") {
		t.Fatalf("table:\n%s", stdout.String())
	}
	stdout.Reset()
	if err := run([]string{"search", "--url", g.URL, "--similar", id, "-o", "json"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	var res struct{ Hits []any }
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil || res.Hits == nil || len(res.Hits) != 0 {
		t.Fatalf("json: %s (%v)", stdout.String(), err)
	}
	if err := run([]string{"search", "--url", g.URL, "--similar", "missing"}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "image_not_found") {
		t.Fatalf("err %v", err)
	}
}
