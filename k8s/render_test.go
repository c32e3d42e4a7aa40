package k8s

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// object is one rendered Kubernetes object, decoded strictly into its Go type.
type object struct {
	APIVersion, Kind, Name, Namespace string
	YAML                              []byte
	Typed                             any
}

func (o object) id() string { return o.Kind + "/" + o.Name }

// eckElasticsearch is the subset of ECK's elasticsearch.k8s.elastic.co/v1
// Elasticsearch resource that tusou uses. Decoded strictly: a field outside
// this subset fails the test, so a typo (or a field ECK would ignore) cannot
// slip through; add fields here deliberately when the manifests need them.
type eckElasticsearch struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		Version string `json:"version"`
		HTTP    *struct {
			TLS *struct {
				SelfSignedCertificate *struct {
					Disabled        bool `json:"disabled,omitempty"`
					SubjectAltNames []struct {
						DNS string `json:"dns,omitempty"`
						IP  string `json:"ip,omitempty"`
					} `json:"subjectAltNames,omitempty"`
				} `json:"selfSignedCertificate,omitempty"`
			} `json:"tls,omitempty"`
		} `json:"http,omitempty"`
		NodeSets []struct {
			Name                 string                         `json:"name"`
			Count                int32                          `json:"count"`
			Config               map[string]any                 `json:"config,omitempty"`
			PodTemplate          corev1.PodTemplateSpec         `json:"podTemplate"`
			VolumeClaimTemplates []corev1.PersistentVolumeClaim `json:"volumeClaimTemplates,omitempty"`
		} `json:"nodeSets"`
		PodDisruptionBudget *struct {
			Spec policyv1.PodDisruptionBudgetSpec `json:"spec"`
		} `json:"podDisruptionBudget,omitempty"`
		UpdateStrategy *struct {
			ChangeBudget *struct {
				MaxSurge       *int32 `json:"maxSurge,omitempty"`
				MaxUnavailable *int32 `json:"maxUnavailable,omitempty"`
			} `json:"changeBudget,omitempty"`
		} `json:"updateStrategy,omitempty"`
	} `json:"spec"`
}

// newTyped maps apiVersion+kind to the Go type the object is decoded into.
// An object of any other kind fails the test: add its type here first.
var newTyped = map[string]func() any{
	"v1/Namespace":      func() any { return &corev1.Namespace{} },
	"v1/ServiceAccount": func() any { return &corev1.ServiceAccount{} },
	"v1/Service":        func() any { return &corev1.Service{} },
	"v1/ConfigMap":      func() any { return &corev1.ConfigMap{} },
	"v1/Secret":         func() any { return &corev1.Secret{} },
	"v1/PersistentVolumeClaim": func() any {
		return &corev1.PersistentVolumeClaim{}
	},
	"apps/v1/Deployment":                       func() any { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":                      func() any { return &appsv1.StatefulSet{} },
	"apps/v1/DaemonSet":                        func() any { return &appsv1.DaemonSet{} },
	"batch/v1/Job":                             func() any { return &batchv1.Job{} },
	"batch/v1/CronJob":                         func() any { return &batchv1.CronJob{} },
	"policy/v1/PodDisruptionBudget":            func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy":       func() any { return &networkingv1.NetworkPolicy{} },
	"networking.k8s.io/v1/Ingress":             func() any { return &networkingv1.Ingress{} },
	"autoscaling/v2/HorizontalPodAutoscaler":   func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"rbac.authorization.k8s.io/v1/Role":        func() any { return &rbacv1.Role{} },
	"rbac.authorization.k8s.io/v1/RoleBinding": func() any { return &rbacv1.RoleBinding{} },
	"rbac.authorization.k8s.io/v1/ClusterRole": func() any { return &rbacv1.ClusterRole{} },
	"rbac.authorization.k8s.io/v1/ClusterRoleBinding": func() any {
		return &rbacv1.ClusterRoleBinding{}
	},
	"elasticsearch.k8s.elastic.co/v1/Elasticsearch": func() any { return &eckElasticsearch{} },
	"monitoring.coreos.com/v1/PrometheusRule":       func() any { return &monitoringv1.PrometheusRule{} },
}

// scratchDir holds files shared by tests of one run (the gateway binary).
var scratchDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tusou-k8s-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	scratchDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// repoRoot is the tusou repository root (this module lives in k8s/).
func repoRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(wd)
	if _, err := os.Stat(filepath.Join(root, "k8s", "go.mod")); err != nil {
		t.Fatalf("run the tests from k8s/ (repository root not found from %s)", wd)
	}
	return root
}

// targets lists what is rendered: the base and every overlay directory.
func targets(t testing.TB) []string {
	t.Helper()
	dirs := []string{"base"}
	entries, err := os.ReadDir(filepath.Join(repoRoot(t), "k8s", "overlays"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, "overlays/"+e.Name())
		}
	}
	sort.Strings(dirs)
	return dirs
}

var (
	renderMu    sync.Mutex
	renderCache = map[string][]object{}
)

// render builds k8s/<target> with kustomize in-process (the same library
// `kubectl apply -k` uses) and decodes every object strictly.
func render(t testing.TB, target string) []object {
	t.Helper()
	renderMu.Lock()
	defer renderMu.Unlock()
	if objs, ok := renderCache[target]; ok {
		return objs
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(repoRoot(t), "k8s", filepath.FromSlash(target)))
	if err != nil {
		t.Fatalf("kustomize build k8s/%s: %v", target, err)
	}
	var objs []object
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatalf("k8s/%s: %s: %v", target, r.CurId(), err)
		}
		o := object{
			APIVersion: r.GetApiVersion(), Kind: r.GetKind(),
			Name: r.GetName(), Namespace: r.GetNamespace(), YAML: y,
		}
		mk, ok := newTyped[o.APIVersion+"/"+o.Kind]
		if !ok {
			t.Fatalf("k8s/%s: %s %s: no Go type registered for this apiVersion/kind (add it to newTyped)", target, o.APIVersion, o.id())
		}
		o.Typed = mk()
		if err := yaml.UnmarshalStrict(y, o.Typed); err != nil {
			t.Fatalf("k8s/%s: %s does not decode strictly into %T: %v", target, o.id(), o.Typed, err)
		}
		objs = append(objs, o)
	}
	renderCache[target] = objs
	return objs
}

func find[T any](objs []object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.Typed.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func findNamed[T any](t testing.TB, objs []object, kind, name string) T {
	t.Helper()
	for _, o := range objs {
		if o.Kind == kind && o.Name == name {
			return o.Typed.(T)
		}
	}
	var zero T
	t.Fatalf("no %s/%s rendered", kind, name)
	return zero
}

// TestRenderStrict renders every target and decodes every object strictly
// (unknown or duplicate fields fail), and checks basic hygiene.
func TestRenderStrict(t *testing.T) {
	for _, target := range targets(t) {
		t.Run(target, func(t *testing.T) {
			objs := render(t, target)
			if len(objs) == 0 {
				t.Fatal("rendered nothing")
			}
			seen := map[string]bool{}
			for _, o := range objs {
				key := o.Namespace + "/" + o.id()
				if seen[key] {
					t.Errorf("%s rendered twice", key)
				}
				seen[key] = true
				if strings.HasPrefix(target, "overlays/") && o.Kind != "Namespace" && o.Namespace == "" &&
					!strings.HasPrefix(o.Kind, "Cluster") {
					t.Errorf("%s has no namespace (every overlay sets one)", o.id())
				}
				if o.Kind != "Namespace" && o.Kind != "Elasticsearch" {
					labels := o.Typed.(metav1.Object).GetLabels()
					if labels["app.kubernetes.io/part-of"] != "tusou" {
						t.Errorf("%s lacks label app.kubernetes.io/part-of=tusou", o.id())
					}
				}
			}
		})
	}
}

// TestEveryKustomizationIsRendered makes sure no kustomization or component
// under k8s/ escapes the checks: each is a target or used by one.
func TestEveryKustomizationIsRendered(t *testing.T) {
	root := filepath.Join(repoRoot(t), "k8s")
	rendered := map[string]bool{}
	for _, target := range targets(t) {
		rendered[target] = true
		var k struct {
			Resources  []string `json:"resources"`
			Components []string `json:"components"`
		}
		data, err := os.ReadFile(filepath.Join(root, target, "kustomization.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(data, &k); err != nil {
			t.Fatal(err)
		}
		for _, ref := range append(k.Resources, k.Components...) {
			rel, err := filepath.Rel(root, filepath.Join(root, target, ref))
			if err == nil {
				rendered[filepath.ToSlash(rel)] = true
			}
		}
	}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Name() == "kustomization.yaml" {
			rel, _ := filepath.Rel(root, filepath.Dir(p))
			if !rendered[filepath.ToSlash(rel)] {
				t.Errorf("k8s/%s is neither rendered by the tests nor used by a rendered kustomization", rel)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// String helpers shared by the tests.
func fmtList(xs []string) string { return fmt.Sprintf("[%s]", strings.Join(xs, ", ")) }
