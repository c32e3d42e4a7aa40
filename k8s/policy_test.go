package k8s

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// podSpec is one pod template found in a rendered target, with where it
// came from and whether its main containers run for a long time (and so need
// liveness and readiness probes).
type podSpec struct {
	Owner       string // Kind/name
	Spec        corev1.PodSpec
	Labels      map[string]string
	LongRunning bool
	// ProbesByOperator: the operator (ECK) owns the probes of the main
	// containers; the manifests must not set their own.
	ProbesByOperator bool
}

func podSpecs(objs []object) []podSpec {
	var out []podSpec
	for _, o := range objs {
		switch v := o.Typed.(type) {
		case *appsv1.Deployment:
			out = append(out, podSpec{o.id(), v.Spec.Template.Spec, v.Spec.Template.Labels, true, false})
		case *appsv1.StatefulSet:
			out = append(out, podSpec{o.id(), v.Spec.Template.Spec, v.Spec.Template.Labels, true, false})
		case *appsv1.DaemonSet:
			out = append(out, podSpec{o.id(), v.Spec.Template.Spec, v.Spec.Template.Labels, true, false})
		case *batchv1.Job:
			out = append(out, podSpec{o.id(), v.Spec.Template.Spec, v.Spec.Template.Labels, false, false})
		case *batchv1.CronJob:
			tpl := v.Spec.JobTemplate.Spec.Template
			out = append(out, podSpec{o.id(), tpl.Spec, tpl.Labels, false, false})
		case *eckElasticsearch:
			for _, ns := range v.Spec.NodeSets {
				labels := map[string]string{"elasticsearch.k8s.elastic.co/cluster-name": v.Metadata.Name}
				for k, val := range ns.PodTemplate.Labels {
					labels[k] = val
				}
				out = append(out, podSpec{o.id() + "/nodeSets/" + ns.Name, ns.PodTemplate.Spec, labels, true, true})
			}
		}
	}
	return out
}

// policyExceptions allow-lists a policy violation, keyed by
// "target Owner container rule", with the reason. Every entry must still be
// needed (a stale one fails), and there must be a reason.
var policyExceptions = map[string]string{}

// containerRefs lists init and main containers of a pod spec.
func containerRefs(ps podSpec) []struct {
	c    corev1.Container
	init bool
} {
	var out []struct {
		c    corev1.Container
		init bool
	}
	for _, c := range ps.Spec.InitContainers {
		out = append(out, struct {
			c    corev1.Container
			init bool
		}{c, true})
	}
	for _, c := range ps.Spec.Containers {
		out = append(out, struct {
			c    corev1.Container
			init bool
		}{c, false})
	}
	return out
}

var imageRef = regexp.MustCompile(`^(?P<name>[a-z0-9]+(?:[._/-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9._-]+)*)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?$`)

// imageProblem says what is wrong with an image reference, or "".
func imageProblem(ref string) string {
	m := imageRef.FindStringSubmatch(ref)
	if m == nil {
		return "is not a valid image reference"
	}
	tag, digest := m[imageRef.SubexpIndex("tag")], m[imageRef.SubexpIndex("digest")]
	switch {
	case tag == "" && digest == "":
		return "has neither tag nor digest (means :latest)"
	case tag == "latest":
		return "uses :latest"
	}
	return ""
}

// containerViolations returns "rule: detail" for every policy breach of one
// container in a pod spec. The effective security context is the container's
// setting, else the pod's.
func containerViolations(ps podSpec, c corev1.Container, init bool) []string {
	var v []string
	add := func(rule, format string, args ...any) {
		v = append(v, rule+": "+fmt.Sprintf(format, args...))
	}
	if p := imageProblem(c.Image); p != "" && !(ps.ProbesByOperator && c.Image == "") {
		add("image", "%q %s", c.Image, p)
	}
	for _, kind := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := c.Resources.Requests[kind]
		lim, okLim := c.Resources.Limits[kind]
		if !okReq {
			add("requests", "no %s request", kind)
		}
		if !okLim {
			add("limits", "no %s limit", kind)
		}
		if okReq && okLim && req.Cmp(lim) > 0 {
			add("requests", "%s request %s above limit %s", kind, req.String(), lim.String())
		}
	}
	if !init && ps.LongRunning && !ps.ProbesByOperator {
		if c.LivenessProbe == nil {
			add("liveness", "long-running container without livenessProbe")
		}
		if c.ReadinessProbe == nil {
			add("readiness", "long-running container without readinessProbe")
		}
	}
	sc := c.SecurityContext
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	pod := ps.Spec.SecurityContext
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	runAsNonRoot := sc.RunAsNonRoot
	if runAsNonRoot == nil {
		runAsNonRoot = pod.RunAsNonRoot
	}
	if runAsNonRoot == nil || !*runAsNonRoot {
		add("runAsNonRoot", "runAsNonRoot is not true")
	}
	runAsUser := sc.RunAsUser
	if runAsUser == nil {
		runAsUser = pod.RunAsUser
	}
	if runAsUser != nil && *runAsUser == 0 {
		add("runAsNonRoot", "runAsUser is 0")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		add("readOnlyRootFilesystem", "root filesystem is writable")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		add("allowPrivilegeEscalation", "allowPrivilegeEscalation is not false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		add("privileged", "privileged container")
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		add("capabilities", "does not drop ALL capabilities")
	} else if len(sc.Capabilities.Add) > 0 {
		add("capabilities", "adds capabilities %v", sc.Capabilities.Add)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = pod.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		add("seccomp", "seccompProfile is not RuntimeDefault")
	}
	return v
}

// TestContainerPolicy applies the policy to every container (init
// containers included) of every workload in every overlay, and to the pod
// template of the ECK Elasticsearch nodes.
func TestContainerPolicy(t *testing.T) {
	used := map[string]bool{}
	for _, target := range targets(t) {
		t.Run(target, func(t *testing.T) {
			specs := podSpecs(render(t, target))
			if len(specs) == 0 {
				t.Fatal("no workloads rendered")
			}
			for _, ps := range specs {
				if ps.Spec.HostNetwork || ps.Spec.HostPID || ps.Spec.HostIPC {
					t.Errorf("%s: uses host namespaces", ps.Owner)
				}
				for _, vol := range ps.Spec.Volumes {
					if vol.HostPath != nil {
						t.Errorf("%s: hostPath volume %s", ps.Owner, vol.Name)
					}
				}
				if !ps.ProbesByOperator {
					if ps.Spec.AutomountServiceAccountToken == nil || *ps.Spec.AutomountServiceAccountToken {
						t.Errorf("%s: mounts a service account token (nothing in tusou calls the Kubernetes API)", ps.Owner)
					}
				}
				for _, cr := range containerRefs(ps) {
					for _, problem := range containerViolations(ps, cr.c, cr.init) {
						rule, _, _ := strings.Cut(problem, ":")
						key := fmt.Sprintf("%s %s %s %s", target, ps.Owner, cr.c.Name, rule)
						if reason, ok := policyExceptions[key]; ok {
							if strings.TrimSpace(reason) == "" {
								t.Errorf("policy exception %q has no reason", key)
							}
							used[key] = true
							continue
						}
						t.Errorf("%s container %s: %s", ps.Owner, cr.c.Name, problem)
					}
				}
			}
		})
	}
	for key := range policyExceptions {
		if !used[key] {
			t.Errorf("policy exception %q is no longer needed: remove it", key)
		}
	}
}

// TestTritonPlacement: prod Triton gets a GPU on the GPU pool; dev Triton
// runs the CPU model configs and asks for no GPU.
func TestTritonPlacement(t *testing.T) {
	gpu := corev1.ResourceName("nvidia.com/gpu")
	tritonContainer := func(t *testing.T, target string) (corev1.PodSpec, corev1.Container) {
		d := findNamed[*appsv1.Deployment](t, render(t, target), "Deployment", "tusou-triton")
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Name == "triton" {
				return d.Spec.Template.Spec, c
			}
		}
		t.Fatal("no triton container")
		return corev1.PodSpec{}, corev1.Container{}
	}
	for _, target := range []string{"overlays/prod", "overlays/prod-export"} {
		t.Run(target, func(t *testing.T) {
			spec, c := tritonContainer(t, target)
			one := resource.MustParse("1")
			if q, ok := c.Resources.Limits[gpu]; !ok || q.Cmp(one) < 0 {
				t.Errorf("triton limits: want nvidia.com/gpu >= 1, got %v", c.Resources.Limits)
			}
			if q, ok := c.Resources.Requests[gpu]; ok && q.Cmp(c.Resources.Limits[gpu]) != 0 {
				t.Errorf("triton: GPU request %s differs from limit", q.String())
			}
			tolerated := false
			for _, tol := range spec.Tolerations {
				if tol.Key == "nvidia.com/gpu" && (tol.Operator == corev1.TolerationOpExists || tol.Operator == "") &&
					(tol.Effect == "" || tol.Effect == corev1.TaintEffectNoSchedule) {
					tolerated = true
				}
			}
			if !tolerated {
				t.Errorf("triton does not tolerate the nvidia.com/gpu:NoSchedule taint: %v", spec.Tolerations)
			}
			if len(spec.NodeSelector) == 0 && spec.Affinity == nil {
				t.Error("triton has no nodeSelector/affinity for the GPU node pool")
			}
			if slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--model-config-name") }) {
				t.Errorf("prod triton must load the production config.pbtxt, args %v", c.Args)
			}
		})
	}
	t.Run("overlays/dev", func(t *testing.T) {
		_, c := tritonContainer(t, "overlays/dev")
		if _, ok := c.Resources.Limits[gpu]; ok {
			t.Error("dev triton asks for a GPU")
		}
		if !slices.Contains(c.Args, "--model-config-name=cpu") {
			t.Errorf("dev triton must load configs/cpu.pbtxt (--model-config-name=cpu), args %v", c.Args)
		}
	})
}

// TestGPUOnlyInProd: no other workload asks for a GPU anywhere.
func TestGPUOnlyInProd(t *testing.T) {
	for _, target := range targets(t) {
		for _, ps := range podSpecs(render(t, target)) {
			for _, cr := range containerRefs(ps) {
				_, lim := cr.c.Resources.Limits["nvidia.com/gpu"]
				_, req := cr.c.Resources.Requests["nvidia.com/gpu"]
				if (lim || req) && ps.Owner != "Deployment/tusou-triton" {
					t.Errorf("%s: %s container %s asks for a GPU", target, ps.Owner, cr.c.Name)
				}
			}
		}
	}
}
