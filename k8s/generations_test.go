package k8s

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// resolvedConfig is the output of `tusou config check -o json`: the model
// generations as the real gateway's config package resolves them
// (cmd/tusou/configcheck.go). Decoded strictly, so a renamed field fails.
type resolvedConfig struct {
	Valid       bool                 `json:"valid"`
	Initial     string               `json:"initial"`
	Generations []resolvedGeneration `json:"generations"`
	APIKeys     int                  `json:"api_keys"`
	AdminKeys   int                  `json:"admin_keys"`
}

type resolvedGeneration struct {
	Name          string        `json:"name"`
	TokenizerPath string        `json:"tokenizer_path"`
	ImageModel    resolvedModel `json:"image_model"`
	TextModel     resolvedModel `json:"text_model"`
	Preprocess    struct {
		Size int        `json:"size"`
		Mean [3]float64 `json:"mean"`
		Std  [3]float64 `json:"std"`
	} `json:"preprocess"`
}

type resolvedModel struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Dims    int    `json:"dims"`
}

// gatewayResolved runs the real gateway's `tusou config check -o json` on
// the rendered config.yaml with the gateway container's environment (Secret
// values replaced by stand-ins, as in TestGatewayConfigCheck): the strict
// decode and validation the gateway does at start-up, and the generations
// as it resolves them (unset fields from the triton/text templates).
func gatewayResolved(t *testing.T, objs []object) resolvedConfig {
	t.Helper()
	b := buildGateway(t)
	d := findNamed[*appsv1.Deployment](t, objs, "Deployment", "tusou-gateway")
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte(gatewayConfigYAML(t, objs)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(b.bin, "config", "check", "-o", "json", "--config", file)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, containerEnv(d.Spec.Template.Spec.Containers[0])...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("tusou config check -o json: %v\n%s", err, stderr.String())
	}
	var rc resolvedConfig
	dec := json.NewDecoder(bytes.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rc); err != nil {
		t.Fatalf("tusou config check -o json: %v\n%s", err, stdout)
	}
	if !rc.Valid || len(rc.Generations) == 0 {
		t.Fatalf("tusou config check -o json: no valid generations:\n%s", stdout)
	}
	return rc
}

// gatewayConfigYAML is the config.yaml the gateway's --config reads.
func gatewayConfigYAML(t *testing.T, objs []object) string {
	t.Helper()
	d := findNamed[*appsv1.Deployment](t, objs, "Deployment", "tusou-gateway")
	c := d.Spec.Template.Spec.Containers[0]
	i := slices.Index(c.Args, "--config")
	if i < 0 || i+1 >= len(c.Args) {
		t.Fatalf("gateway args %v: no --config FILE", c.Args)
	}
	file := c.Args[i+1]
	for _, m := range c.VolumeMounts {
		if m.MountPath != path.Dir(file) {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil {
				cm := findNamed[*corev1.ConfigMap](t, objs, "ConfigMap", v.ConfigMap.Name)
				if data, ok := cm.Data[path.Base(file)]; ok {
					return data
				}
			}
		}
	}
	t.Fatalf("--config %s is not a key of a mounted ConfigMap", file)
	return ""
}

// exportTokenizer is where the model export writes the tokenizer of
// clip_text version v, relative to the model repository
// (model_repository/export/tusou_export/export.py version_paths, and
// deploy/docker/export-entrypoint.sh for the tiny models).
func exportTokenizer(v string) string {
	if v == "1" {
		return "clip_text/tokenizer.json"
	}
	return "clip_text/" + v + "/tokenizer.json"
}

var versionPolicyLatest = regexp.MustCompile(`\bversion_policy\s*:?\s*\{\s*latest\s*:?\s*\{\s*num_versions\s*:\s*(\d+)\s*\}\s*\}`)

// tritonServedVersions is how many versions of model the committed
// config.pbtxt makes Triton serve at once (version_policy latest).
func tritonServedVersions(t *testing.T, model string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "model_repository", model, "config.pbtxt"))
	if err != nil {
		t.Fatal(err)
	}
	m := versionPolicyLatest.FindStringSubmatch(pbtxtFields(string(data)))
	if m == nil {
		t.Fatalf("model_repository/%s/config.pbtxt: no version_policy { latest { num_versions: N } }", model)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestGenerationsWiring, for every overlay: each model generation the
// gateway serves pins both Triton versions (an empty version follows
// Triton's newest, silently moving a generation to another embedding
// space), reads the tokenizer the export wrote for its text version, and
// that file is fetched by a gateway init container; Triton's committed
// configs serve as many versions as the generations need at once; admin
// keys come from a Secret, never from the ConfigMap.
func TestGenerationsWiring(t *testing.T) {
	for _, target := range overlays(t) {
		t.Run(target, func(t *testing.T) {
			objs := render(t, target)
			rc := gatewayResolved(t, objs)
			versions := map[string]map[string]bool{"clip_image": {}, "clip_text": {}}
			for _, g := range rc.Generations {
				for _, m := range []resolvedModel{g.ImageModel, g.TextModel} {
					if m.Version == "" {
						t.Errorf("generation %s: %s has no pinned version (Triton would answer with its newest)", g.Name, m.Name)
					}
					if versions[m.Name] == nil {
						t.Errorf("generation %s: model %s is not in model_repository/", g.Name, m.Name)
						continue
					}
					versions[m.Name][m.Version] = true
				}
				if want := "/models/" + exportTokenizer(g.TextModel.Version); g.TokenizerPath != want {
					t.Errorf("generation %s: tokenizer_path %q, want %q (where the export writes clip_text version %s's tokenizer)",
						g.Name, g.TokenizerPath, want, g.TextModel.Version)
				}
			}
			for model, vs := range versions {
				if n := tritonServedVersions(t, model); len(vs) > n {
					t.Errorf("the generations use %d versions of %s, Triton's config.pbtxt serves %d at once", len(vs), model, n)
				}
			}
			checkTokenizersFetched(t, objs, rc)
			checkAdminKeysFromSecret(t, objs, strings.HasPrefix(target, "overlays/prod")) // prod and prod-export
		})
	}
}

// TestProdGenerations: the prod overlay names the two generations a switch
// needs, a = version 1 and b = version 2 of clip_image/clip_text, a
// initial, and Triton serves both versions at once.
func TestProdGenerations(t *testing.T) {
	rc := gatewayResolved(t, render(t, "overlays/prod"))
	want := map[string]string{"a": "1", "b": "2"}
	if len(rc.Generations) != len(want) {
		t.Fatalf("prod gateway has %d generations, want %d (a and b)", len(rc.Generations), len(want))
	}
	for _, g := range rc.Generations {
		v, ok := want[g.Name]
		if !ok {
			t.Errorf("unexpected generation %q", g.Name)
			continue
		}
		if g.ImageModel != (resolvedModel{"clip_image", v, 512}) || g.TextModel != (resolvedModel{"clip_text", v, 512}) {
			t.Errorf("generation %s: image %+v, text %+v; want clip_image/clip_text version %s, 512 dims", g.Name, g.ImageModel, g.TextModel, v)
		}
	}
	if rc.Initial != "a" {
		t.Errorf("models.initial %q, want a", rc.Initial)
	}
	if rc.AdminKeys == 0 {
		t.Error("the admin API is off in prod: TUSOU_AUTH_ADMIN_KEYS does not reach the gateway")
	}
	for _, m := range []string{"clip_image", "clip_text"} {
		if n := tritonServedVersions(t, m); n < 2 {
			t.Errorf("%s config.pbtxt serves %d version(s): a switch needs both generations loaded", m, n)
		}
	}
}

// checkTokenizersFetched: every generation's tokenizer is written, before
// the gateway starts, by an init container that copies it from the model
// repository into the volume the gateway reads it from.
func checkTokenizersFetched(t *testing.T, objs []object, rc resolvedConfig) {
	t.Helper()
	spec := findNamed[*appsv1.Deployment](t, objs, "Deployment", "tusou-gateway").Spec.Template.Spec
	for _, g := range rc.Generations {
		vol, _ := volumeAt(spec.Containers[0], g.TokenizerPath)
		if vol == "" {
			t.Errorf("generation %s: tokenizer %s is on no volume of the gateway", g.Name, g.TokenizerPath)
			continue
		}
		if !slices.ContainsFunc(spec.InitContainers, func(ic corev1.Container) bool {
			v, _ := volumeAt(ic, g.TokenizerPath)
			return v == vol && rcloneWrites(ic.Args, g.TokenizerPath)
		}) {
			t.Errorf("generation %s: tokenizer %s (volume %q) is not written by any gateway init container", g.Name, g.TokenizerPath, vol)
		}
	}
}

// rcloneWrites reports whether rclone with args writes file: `copyto SRC
// FILE`, or `copy|sync SRC DIR` with file under DIR and its name passing
// the --include filters (rclone matches a pattern without a slash against
// the file name at any depth).
func rcloneWrites(args []string, file string) bool {
	var pos, includes []string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--include="); ok {
			includes = append(includes, v)
		} else if !strings.HasPrefix(a, "-") {
			pos = append(pos, a)
		}
	}
	if len(pos) != 3 {
		return false
	}
	switch pos[0] {
	case "copyto":
		return pos[2] == file
	case "copy", "sync":
		if !strings.HasPrefix(file, strings.TrimSuffix(pos[2], "/")+"/") {
			return false
		}
		if len(includes) == 0 {
			return true
		}
		for _, p := range includes {
			if ok, _ := path.Match(p, path.Base(file)); ok && !strings.Contains(p, "/") {
				return true
			}
		}
	}
	return false
}

// volumeAt is the volume (and its mount path) that holds p in container c.
func volumeAt(c corev1.Container, p string) (string, string) {
	best, mount := "", ""
	for _, m := range c.VolumeMounts {
		if (p == m.MountPath || strings.HasPrefix(p, m.MountPath+"/")) && len(m.MountPath) > len(mount) {
			best, mount = m.Name, m.MountPath
		}
	}
	return best, mount
}

// checkAdminKeysFromSecret: no key is in the gateway's ConfigMap, and
// TUSOU_AUTH_ADMIN_KEYS comes from a Secret (required when required).
func checkAdminKeysFromSecret(t *testing.T, objs []object, required bool) {
	t.Helper()
	leaves := gatewayConfig(t, objs).leaves
	for _, k := range []string{"auth.admin_keys", "auth.api_keys"} {
		if _, ok := leaves[k]; ok {
			t.Errorf("config.yaml sets %s: keys belong in a Secret, not a ConfigMap", k)
		}
	}
	c := findNamed[*appsv1.Deployment](t, objs, "Deployment", "tusou-gateway").Spec.Template.Spec.Containers[0]
	i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "TUSOU_AUTH_ADMIN_KEYS" })
	if i < 0 {
		if required {
			t.Error("gateway has no TUSOU_AUTH_ADMIN_KEYS: the admin API (tusou models) is off")
		}
		return
	}
	e := c.Env[i]
	if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
		t.Fatalf("TUSOU_AUTH_ADMIN_KEYS is not read from a Secret: %+v", e)
	}
	ref := e.ValueFrom.SecretKeyRef
	if ref.Name == "tusou-gateway-api-keys" {
		t.Error("admin keys come from the API keys' Secret: an application key must not switch models")
	}
	if optional := ref.Optional != nil && *ref.Optional; optional == required {
		t.Errorf("Secret %s for TUSOU_AUTH_ADMIN_KEYS: optional=%v, want %v", ref.Name, optional, !required)
	}
}
