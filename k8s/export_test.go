package k8s

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// pbtxtFields strips comments and returns the text, so that checks look at
// real fields only.
func pbtxtFields(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		inStr := byte(0)
		for i := 0; i < len(line); i++ {
			c := line[i]
			if inStr != 0 {
				if c == '\\' {
					i++
				} else if c == inStr {
					inStr = 0
				}
			} else if c == '"' || c == '\'' {
				inStr = c
			} else if c == '#' {
				line = line[:i]
				break
			}
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// withoutField removes `name [...]` / `name {...}` / `name: [...]` from
// comment-free pbtxt, matching brackets.
func withoutField(s, name string) string {
	re := regexp.MustCompile(`\b` + name + `\s*:?\s*[\[{]`)
	for {
		loc := re.FindStringIndex(s)
		if loc == nil {
			return s
		}
		depth, end := 0, -1
		for i := loc[1] - 1; i < len(s); i++ {
			switch s[i] {
			case '[', '{':
				depth++
			case ']', '}':
				depth--
			}
			if depth == 0 {
				end = i + 1
				break
			}
		}
		if end < 0 {
			return s
		}
		s = s[:loc[0]] + s[end:]
	}
}

func squash(s string) string { return strings.Join(strings.Fields(s), " ") }

func needPython(t *testing.T) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not on PATH: the export scripts are not exercised")
	}
	return py
}

// TestTritonCPUConfig runs deploy/docker/triton_cpu_config.py on the
// committed production configs and on a GPU-heavy sample: the CPU variant
// must have one KIND_CPU instance group, no GPU-only settings, and be
// otherwise identical.
func TestTritonCPUConfig(t *testing.T) {
	py := needPython(t)
	root := repoRoot(t)
	script := filepath.Join(root, "deploy", "docker", "triton_cpu_config.py")
	inputs := map[string]string{
		"sample": `name: "sample"
max_batch_size: 8  # gpus: [0] inside a comment stays untouched
parameters { key: "note" value: { string_value: "KIND_GPU gpus cuda" } }
instance_group [ { count: 2, kind: KIND_GPU, gpus: [ 0, 1 ] } ]
dynamic_batching { max_queue_delay_microseconds: 100 }
optimization {
  cuda { graphs: true }
  execution_accelerators {
    gpu_execution_accelerator [ { name: "tensorrt" parameters { key: "precision_mode" value: "FP16" } } ]
  }
}
`,
	}
	configs, _ := filepath.Glob(filepath.Join(root, "model_repository", "clip_*", "config.pbtxt"))
	for _, p := range configs {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		model := filepath.Base(filepath.Dir(p))
		inputs[model] = string(data)
		// The optional TensorRT block, switched on as an operator would.
		if trt := uncommentTRT(string(data)); trt != string(data) {
			inputs[model+"-tensorrt"] = trt
		}
	}
	validator := tritonConfigValidator(t)
	for name, src := range inputs {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), name)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "config.pbtxt"), []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(py, script, dir).CombinedOutput(); err != nil {
				t.Fatalf("triton_cpu_config.py: %v\n%s", err, out)
			}
			data, err := os.ReadFile(filepath.Join(dir, "configs", "cpu.pbtxt"))
			if err != nil {
				t.Fatal(err)
			}
			in, out := pbtxtFields(src), pbtxtFields(string(data))
			if n := strings.Count(out, "instance_group"); n != 1 {
				t.Errorf("cpu.pbtxt has %d instance_group fields, want 1", n)
			}
			if !regexp.MustCompile(`kind:\s*KIND_CPU`).MatchString(out) {
				t.Error("cpu.pbtxt has no kind: KIND_CPU")
			}
			for _, gpuOnly := range []string{"kind: KIND_GPU", "gpus", "gpu_execution_accelerator", "cuda {"} {
				if strings.Contains(withoutField(out, "parameters"), gpuOnly) {
					t.Errorf("cpu.pbtxt still has %q", gpuOnly)
				}
			}
			strip := func(s string) string {
				for _, f := range []string{"instance_group", "gpus", "gpu_execution_accelerator", "cuda"} {
					s = withoutField(s, f)
				}
				for _, f := range []string{"execution_accelerators", "optimization"} {
					s = regexp.MustCompile(`\b`+f+`\s*:?\s*\{\s*\}`).ReplaceAllString(s, "")
				}
				return squash(s)
			}
			if strip(in) != strip(out) {
				t.Errorf("cpu.pbtxt differs from config.pbtxt beyond placement:\n in: %s\nout: %s", strip(in), strip(out))
			}
			if validator != "" {
				check := exec.Command(validator, "-c", validatePy, filepath.Join(dir, "config.pbtxt"), filepath.Join(dir, "configs", "cpu.pbtxt"))
				if out, err := check.CombinedOutput(); err != nil {
					t.Errorf("Triton's model_config.proto rejects the result: %v\n%s", err, out)
				}
			}
			// Comments of the original survive (they document the contract).
			if strings.Contains(src, "#") && !strings.Contains(string(data), strings.SplitN(strings.SplitN(src, "#", 2)[1], "\n", 2)[0]) {
				t.Error("the first comment of config.pbtxt is missing from cpu.pbtxt")
			}
		})
	}
}

// tinyVersions are the committed tiny model versions: the generations a
// (1) and b (2) of the local stack and of the k8s dev overlay.
var tinyVersions = []string{"1", "2"}

// TestExportEntrypointTiny runs the export image's entrypoint in tiny mode
// against the checkout (no network): it must produce the exact layout
// Triton (both placements) and the gateway expect, every tiny version (two
// generations) with its tokenizer, and a second run must find the
// repository complete and leave it alone.
func TestExportEntrypointTiny(t *testing.T) {
	needPython(t)
	root := repoRoot(t)
	for _, f := range []string{
		"model_repository/clip_image/config.pbtxt", "model_repository/clip_text/config.pbtxt",
		"model_repository/tiny/clip_image/1/model.onnx", "model_repository/tiny/clip_text/1/model.onnx",
		"model_repository/tiny/clip_image/2/model.onnx", "model_repository/tiny/clip_text/2/model.onnx",
		"model_repository/tiny/clip_text/tokenizer.json",
	} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Fatalf("%s is missing: the export entrypoint cannot be exercised", f)
		}
	}
	home := t.TempDir()
	for link, target := range map[string]string{
		"model_repository": filepath.Join(root, "model_repository"),
		"bin":              filepath.Join(root, "deploy", "docker"),
	} {
		if err := os.Symlink(target, filepath.Join(home, link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(home, "SOURCE_DIGEST"), []byte("test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "models")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func() string {
		cmd := exec.Command("sh", filepath.Join(root, "deploy", "docker", "export-entrypoint.sh"))
		cmd.Env = append(os.Environ(), "TUSOU_HOME="+home, "MODEL_REPO_OUT="+out, "EXPORT_MODE=tiny")
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("export-entrypoint.sh (tiny): %v\n%s", err, b)
		}
		return string(b)
	}
	run()
	for _, m := range []string{"clip_image", "clip_text"} {
		want, _ := os.ReadFile(filepath.Join(root, "model_repository", m, "config.pbtxt"))
		got, err := os.ReadFile(filepath.Join(out, m, "config.pbtxt"))
		if err != nil || string(got) != string(want) {
			t.Errorf("%s/config.pbtxt is not the committed production config (%v)", m, err)
		}
		cpu, err := os.ReadFile(filepath.Join(out, m, "configs", "cpu.pbtxt"))
		if err != nil || !strings.Contains(pbtxtFields(string(cpu)), "KIND_CPU") {
			t.Errorf("%s/configs/cpu.pbtxt missing or not KIND_CPU (%v)", m, err)
		}
		for _, v := range tinyVersions {
			onnxWant, _ := os.ReadFile(filepath.Join(root, "model_repository", "tiny", m, v, "model.onnx"))
			onnxGot, err := os.ReadFile(filepath.Join(out, m, v, "model.onnx"))
			if err != nil || string(onnxGot) != string(onnxWant) {
				t.Errorf("%s/%s/model.onnx is not the tiny model (%v)", m, v, err)
			}
		}
	}
	// Each version's tokenizer where a real export writes it (version 1:
	// clip_text/tokenizer.json, N: clip_text/N/tokenizer.json), which is
	// where the gateway's generations look for it.
	tokWant, _ := os.ReadFile(filepath.Join(root, "model_repository", "tiny", "clip_text", "tokenizer.json"))
	for _, v := range tinyVersions {
		rel := filepath.Join("clip_text", v, "tokenizer.json")
		if v == "1" {
			rel = filepath.Join("clip_text", "tokenizer.json")
		}
		if got, err := os.ReadFile(filepath.Join(out, rel)); err != nil || string(got) != string(tokWant) {
			t.Errorf("%s is not the tiny tokenizer (%v)", rel, err)
		}
	}
	if _, err := os.Stat(filepath.Join(out, ".staging")); !os.IsNotExist(err) {
		t.Error("staging folder left behind")
	}
	if second := run(); !strings.Contains(second, "is complete") {
		t.Errorf("second run rebuilt a complete repository:\n%s", second)
	}
}

// fakeExportMain stands in for `python3 -m tusou_export export` in
// TestExportEntrypointVersionN: it writes what a real export writes for
// --version N (export.py version_paths), without the tokenizer when
// FAKE_NO_TOKENIZER is set.
const fakeExportMain = `
import argparse, json, os, pathlib
ap = argparse.ArgumentParser()
ap.add_argument("cmd")
ap.add_argument("--out", type=pathlib.Path)
ap.add_argument("--version", type=int, default=1)
a = ap.parse_args()
v = a.version
files = [f"clip_image/{v}/model.onnx", f"clip_text/{v}/model.onnx"]
if not os.environ.get("FAKE_NO_TOKENIZER"):
    files.append("clip_text/tokenizer.json" if v == 1 else f"clip_text/{v}/tokenizer.json")
for rel in files:
    (a.out / rel).parent.mkdir(parents=True, exist_ok=True)
    (a.out / rel).write_text(rel)
(a.out / ("export_manifest.json" if v == 1 else f"export_manifest.v{v}.json")).write_text(json.dumps({"version": v}))
`

// TestExportEntrypointVersionN runs the entrypoint in real mode with
// EXPORT_ARGS="--version 2" (the next generation, overlays/prod-export)
// against a stand-in exporter: the repository holds version 2 with its own
// tokenizer and manifest and the production configs; an export that lacks
// version 2's tokenizer fails and leaves the repository alone.
func TestExportEntrypointVersionN(t *testing.T) {
	needPython(t)
	root := repoRoot(t)
	home := t.TempDir()
	for _, m := range []string{"clip_image", "clip_text"} {
		data, err := os.ReadFile(filepath.Join(root, "model_repository", m, "config.pbtxt"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(home, "model_repository", m), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(home, "model_repository", m, "config.pbtxt"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pkg := filepath.Join(home, "model_repository", "export", "tusou_export")
	if err := os.MkdirAll(pkg, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string]string{"__init__.py": "", "__main__.py": fakeExportMain} {
		if err := os.WriteFile(filepath.Join(pkg, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(root, "deploy", "docker"), filepath.Join(home, "bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, "SOURCE_DIGEST"), []byte("test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(out string, env ...string) (string, error) {
		cmd := exec.Command("sh", filepath.Join(root, "deploy", "docker", "export-entrypoint.sh"))
		cmd.Env = append(os.Environ(), append([]string{"TUSOU_HOME=" + home, "MODEL_REPO_OUT=" + out,
			"EXPORT_MODE=real", "EXPORT_ARGS=--version 2"}, env...)...)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}

	out := t.TempDir()
	if b, err := run(out); err != nil {
		t.Fatalf("export-entrypoint.sh (real, --version 2): %v\n%s", err, b)
	}
	for _, rel := range []string{"clip_image/2/model.onnx", "clip_text/2/model.onnx", "clip_text/2/tokenizer.json",
		"export_manifest.v2.json", "clip_image/config.pbtxt", "clip_text/configs/cpu.pbtxt"} {
		if _, err := os.Stat(filepath.Join(out, rel)); err != nil {
			t.Errorf("%s: %v", rel, err)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "clip_image", "1")); !os.IsNotExist(err) {
		t.Error("a --version 2 export wrote version 1")
	}

	bad := t.TempDir()
	b, err := run(bad, "FAKE_NO_TOKENIZER=1")
	if err == nil || !strings.Contains(b, "missing clip_text/2/tokenizer.json") {
		t.Errorf("an export without version 2's tokenizer: err %v, want a failure naming clip_text/2/tokenizer.json\n%s", err, b)
	}
	if _, err := os.Stat(filepath.Join(bad, "clip_text")); !os.IsNotExist(err) {
		t.Error("a failed export moved models into the repository")
	}
}

// uncommentTRT enables the optional block between "# TRT-BEGIN" and
// "# TRT-END" of a committed config, as its comments tell operators to.
func uncommentTRT(s string) string {
	lines := strings.Split(s, "\n")
	in := false
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "# TRT-BEGIN"):
			in = true
		case strings.HasPrefix(l, "# TRT-END"):
			in = false
		case in:
			lines[i] = strings.TrimPrefix(strings.TrimPrefix(l, "#"), " ")
		}
	}
	return strings.Join(lines, "\n")
}

// validatePy parses Triton configs with Triton's own protobuf schema and
// checks the CPU one: one KIND_CPU group, no GPU execution accelerators.
const validatePy = `
import sys
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
src = text_format.Parse(open(sys.argv[1]).read(), mc.ModelConfig())
cpu = text_format.Parse(open(sys.argv[2]).read(), mc.ModelConfig())
assert [g.kind for g in cpu.instance_group] == [mc.ModelInstanceGroup.KIND_CPU], cpu.instance_group
assert not cpu.optimization.execution_accelerators.gpu_execution_accelerator
for f in ("name", "platform", "backend", "max_batch_size", "input", "output", "dynamic_batching",
          "model_warmup", "version_policy", "parameters", "default_model_filename"):
    assert getattr(src, f) == getattr(cpu, f), f
`

// tritonConfigValidator finds a Python that has tritonclient's
// model_config_pb2 (the export venvs do), or returns "" to skip that check.
func tritonConfigValidator(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	for _, c := range []string{".local/venv-export/bin/python", ".local/venv-check/bin/python", "python3"} {
		py := c
		if strings.Contains(c, "/") {
			py = filepath.Join(root, c)
		}
		if err := exec.Command(py, "-c", "import tritonclient.grpc.model_config_pb2").Run(); err == nil {
			return py
		}
	}
	t.Log("no Python with tritonclient found: CPU configs are not parsed with Triton's schema")
	return ""
}
