package k8s

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// blobsSection mirrors the gateway's blobs settings (config.Blobs and
// blobstore.S3Config; docs/configuration.md), decoded strictly so a key the
// gateway does not know fails here too.
type blobsSection struct {
	Backend string `json:"backend"`
	Dir     string `json:"dir"`
	S3      struct {
		Endpoint      string `json:"endpoint"`
		Bucket        string `json:"bucket"`
		Region        string `json:"region"`
		AccessKey     string `json:"access_key"`
		SecretKey     string `json:"secret_key"`
		SecretKeyFile string `json:"secret_key_file"`
		TLS           bool   `json:"tls"`
		CACert        string `json:"ca_cert"`
		Prefix        string `json:"prefix"`
	} `json:"s3"`
}

// renderedBlobs strictly decodes the blobs section of the gateway's
// rendered config.yaml.
func renderedBlobs(t *testing.T, objs []object) blobsSection {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(gatewayConfigYAML(t, objs)), &doc); err != nil {
		t.Fatal(err)
	}
	raw, err := yaml.Marshal(doc["blobs"])
	if err != nil {
		t.Fatal(err)
	}
	var b blobsSection
	if err := yaml.UnmarshalStrict(raw, &b); err != nil {
		t.Fatalf("gateway config.yaml blobs: %v", err)
	}
	return b
}

// secretFile checks that file is a key of a Secret volume mounted in c and
// returns the Secret's name.
func secretFile(t *testing.T, ps corev1.PodSpec, c corev1.Container, setting, file string) string {
	t.Helper()
	name, mount := volumeAt(c, file)
	i := slices.IndexFunc(ps.Volumes, func(v corev1.Volume) bool { return v.Name == name })
	if name == "" || i < 0 || ps.Volumes[i].Secret == nil {
		t.Fatalf("%s %s is not in a mounted Secret volume", setting, file)
	}
	sv := ps.Volumes[i].Secret
	if sv.Optional != nil && *sv.Optional {
		t.Errorf("%s: Secret %s is optional, so a pod could start without the file", setting, sv.SecretName)
	}
	rel := strings.TrimPrefix(file, mount+"/")
	if len(sv.Items) > 0 && !slices.ContainsFunc(sv.Items, func(k corev1.KeyToPath) bool { return k.Path == rel }) {
		t.Errorf("%s %s: Secret volume %s projects no item at %s", setting, file, name, rel)
	}
	return sv.SecretName
}

// TestProdOriginalsInObjectStorage: the prod overlay keeps every original
// in S3-compatible object storage over TLS, with its keys from a Secret and
// none in the ConfigMap, and the real gateway reads it that way.
func TestProdOriginalsInObjectStorage(t *testing.T) {
	objs := render(t, "overlays/prod")
	b := renderedBlobs(t, objs)
	s3 := b.S3
	if b.Backend != "s3" {
		t.Fatalf("blobs.backend is %q, want s3: originals would not be kept for re-embedding", b.Backend)
	}
	if s3.Endpoint == "" || strings.Contains(s3.Endpoint, "://") || s3.Bucket == "" {
		t.Errorf("blobs.s3 endpoint %q / bucket %q: want host[:port] and a bucket", s3.Endpoint, s3.Bucket)
	}
	if !s3.TLS || s3.CACert == "" {
		t.Errorf("blobs.s3: tls %v, ca_cert %q: originals must travel over verified TLS", s3.TLS, s3.CACert)
	}
	if s3.AccessKey != "" || s3.SecretKey != "" {
		t.Error("blobs.s3 keys are in the ConfigMap: they belong in a Secret")
	}
	if s3.SecretKeyFile == "" {
		t.Fatal("blobs.s3.secret_key_file is not set: the secret key has no source but the ConfigMap")
	}

	ps := findNamed[*appsv1.Deployment](t, objs, "Deployment", "tusou-gateway").Spec.Template.Spec
	c := ps.Containers[0]
	keys := secretFile(t, ps, c, "blobs.s3.secret_key_file", s3.SecretKeyFile)
	secretFile(t, ps, c, "blobs.s3.ca_cert", s3.CACert)
	var accessFromSecret bool
	for _, e := range c.Env {
		switch e.Name {
		case "TUSOU_BLOBS_S3_SECRET_KEY":
			t.Error("TUSOU_BLOBS_S3_SECRET_KEY is set besides secret_key_file")
		case "TUSOU_BLOBS_S3_ACCESS_KEY":
			r := e.ValueFrom
			if e.Value != "" || r == nil || r.SecretKeyRef == nil || r.SecretKeyRef.Name != keys ||
				(r.SecretKeyRef.Optional != nil && *r.SecretKeyRef.Optional) {
				t.Errorf("TUSOU_BLOBS_S3_ACCESS_KEY must come from the required Secret %s (as the secret key does): %+v", keys, e)
			}
			accessFromSecret = true
		}
	}
	if !accessFromSecret {
		t.Error("the gateway gets no TUSOU_BLOBS_S3_ACCESS_KEY")
	}

	// The real gateway sees backend s3: without the access key from the
	// Secret, its own validation names the missing setting.
	bin := buildGateway(t).bin
	var env []string
	for _, kv := range containerEnv(c) {
		if !strings.HasPrefix(kv, "TUSOU_BLOBS_S3_ACCESS_KEY=") {
			env = append(env, kv)
		}
	}
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte(gatewayConfigYAML(t, objs)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := configCheck(t, bin, file, env)
	if err == nil || !strings.Contains(out, "blobs.s3.access_key: must be set") {
		t.Errorf("without TUSOU_BLOBS_S3_ACCESS_KEY, tusou config check: %v\n%s", err, out)
	}
}
