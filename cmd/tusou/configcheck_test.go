package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigCheckJSON: -o json prints the generations resolved the way the
// gateway resolves them (unset fields from the triton/text templates), and
// counts keys without printing them.
func TestConfigCheckJSON(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tusou.yaml")
	yaml := `
text:
  tokenizer_path: /models/clip_text/tokenizer.json
auth:
  admin_keys: ["admin-key-0123456789abcdef"]
models:
  initial: b
  generations:
    - name: a
      image_model: {version: "1"}
      text_model: {version: "1"}
    - name: b
      tokenizer_path: /models/clip_text/2/tokenizer.json
      image_model: {version: "2"}
      text_model: {version: "2"}
      preprocess: {size: 256}
`
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run([]string{"config", "check", "-o", "json", "--config", file}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "admin-key-0123456789abcdef") {
		t.Fatalf("the summary prints a key:\n%s", out.String())
	}
	var s configSummary
	dec := json.NewDecoder(&out)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		t.Fatal(err)
	}
	if !s.Valid || s.Initial != "b" || s.AdminKeys != 1 || s.APIKeys != 0 || len(s.Generations) != 2 {
		t.Fatalf("summary %+v", s)
	}
	a, b := s.Generations[0], s.Generations[1]
	if a.Name != "a" || a.TokenizerPath != "/models/clip_text/tokenizer.json" ||
		a.ImageModel != (modelSummary{"clip_image", "1", 512}) || a.TextModel != (modelSummary{"clip_text", "1", 512}) ||
		a.Preprocess.Size != 224 {
		t.Errorf("generation a resolved to %+v", a)
	}
	if b.Name != "b" || b.TokenizerPath != "/models/clip_text/2/tokenizer.json" ||
		b.ImageModel.Version != "2" || b.TextModel.Version != "2" || b.Preprocess.Size != 256 || b.Preprocess.Mean != a.Preprocess.Mean {
		t.Errorf("generation b resolved to %+v", b)
	}

	out.Reset()
	if err := run([]string{"config", "check", "--config", file}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	want := "configuration is valid\n" +
		"generation a: image clip_image@1, text clip_text@1, 512 dims, tokenizer /models/clip_text/tokenizer.json\n" +
		"generation b (initial): image clip_image@2, text clip_text@2, 512 dims, tokenizer /models/clip_text/2/tokenizer.json\n"
	if out.String() != want {
		t.Errorf("text output:\n%s\nwant:\n%s", out.String(), want)
	}
	if err := run([]string{"config", "check", "-o", "yaml", "--config", file}, &out, &bytes.Buffer{}); err == nil {
		t.Error("-o yaml accepted")
	}
}
