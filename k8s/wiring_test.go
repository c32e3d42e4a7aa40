package k8s

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const (
	gatewayApp = "tusou-gateway"
	tritonApp  = "tusou-triton"
)

// externalSecrets are Secrets the manifests reference but do not create,
// with who creates them. Anything else referenced must be rendered.
func externalSecrets(esName string) map[string]string {
	return map[string]string{
		esName + "-es-elastic-user":      "ECK, for the Elasticsearch resource",
		esName + "-es-http-certs-public": "ECK, for the Elasticsearch resource",
		"tusou-gateway-api-keys":         "the operator (docs/operations.md), required in prod",
		"tusou-gateway-admin-keys":       "the operator (docs/operations.md §7), required in prod",
		"tusou-model-repo-credentials":   "optional: static object-storage keys when workload identity is not used",
		"tusou-gateway-tls":              "cert-manager or the operator, for the Ingress",
		"tusou-originals-s3":             "the operator (docs/operations.md), object-storage keys for the originals, prod",
		"tusou-originals-s3-ca":          "the operator or cert-manager, the CA of the object store's certificate, prod",
	}
}

func esName(t *testing.T, objs []object) string {
	t.Helper()
	es := find[*eckElasticsearch](objs)
	if len(es) != 1 {
		t.Fatalf("want exactly one ECK Elasticsearch resource, got %d", len(es))
	}
	return es[0].Metadata.Name
}

func overlays(t *testing.T) []string {
	var out []string
	for _, target := range targets(t) {
		if strings.HasPrefix(target, "overlays/") {
			out = append(out, target)
		}
	}
	return out
}

// TestReferences: every ConfigMap, Secret, ServiceAccount, PVC and
// Service that an object points at exists in the same render (or is a
// documented external Secret), so `kubectl apply -k` yields pods that start.
func TestReferences(t *testing.T) {
	for _, target := range overlays(t) {
		t.Run(target, func(t *testing.T) {
			objs := render(t, target)
			have := map[string]bool{}
			for _, o := range objs {
				have[o.Kind+"/"+o.Name] = true
			}
			ext := externalSecrets(esName(t, objs))
			need := func(owner, kind, name string, optional bool) {
				if have[kind+"/"+name] || optional {
					return
				}
				if kind == "Secret" {
					if _, ok := ext[name]; ok {
						return
					}
				}
				t.Errorf("%s references %s/%s, which is not rendered", owner, kind, name)
			}
			for _, ps := range podSpecs(objs) {
				if ps.ProbesByOperator {
					continue
				}
				sa := ps.Spec.ServiceAccountName
				if sa == "" {
					t.Errorf("%s: no serviceAccountName (the default account is shared)", ps.Owner)
				} else {
					need(ps.Owner, "ServiceAccount", sa, false)
				}
				for _, v := range ps.Spec.Volumes {
					switch {
					case v.ConfigMap != nil:
						need(ps.Owner, "ConfigMap", v.ConfigMap.Name, v.ConfigMap.Optional != nil && *v.ConfigMap.Optional)
					case v.Secret != nil:
						need(ps.Owner, "Secret", v.Secret.SecretName, v.Secret.Optional != nil && *v.Secret.Optional)
					case v.PersistentVolumeClaim != nil:
						need(ps.Owner, "PersistentVolumeClaim", v.PersistentVolumeClaim.ClaimName, false)
					}
				}
				for _, cr := range containerRefs(ps) {
					owner := ps.Owner + " container " + cr.c.Name
					mounts := map[string]bool{}
					for _, m := range cr.c.VolumeMounts {
						mounts[m.Name] = true
						if !slices.ContainsFunc(ps.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name }) {
							t.Errorf("%s mounts undefined volume %s", owner, m.Name)
						}
					}
					for _, ef := range cr.c.EnvFrom {
						if ef.ConfigMapRef != nil {
							need(owner, "ConfigMap", ef.ConfigMapRef.Name, ef.ConfigMapRef.Optional != nil && *ef.ConfigMapRef.Optional)
						}
						if ef.SecretRef != nil {
							need(owner, "Secret", ef.SecretRef.Name, ef.SecretRef.Optional != nil && *ef.SecretRef.Optional)
						}
					}
					for _, e := range cr.c.Env {
						if e.ValueFrom == nil {
							continue
						}
						if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
							need(owner, "ConfigMap", r.Name, r.Optional != nil && *r.Optional)
						}
						if r := e.ValueFrom.SecretKeyRef; r != nil {
							need(owner, "Secret", r.Name, r.Optional != nil && *r.Optional)
						}
					}
				}
			}
			// Services select pods and name container ports that exist.
			for _, svc := range find[*corev1.Service](objs) {
				specs := matchingPods(objs, svc.Spec.Selector)
				if len(specs) == 0 {
					t.Errorf("Service/%s selects no pods (%v)", svc.Name, svc.Spec.Selector)
				}
				for _, p := range svc.Spec.Ports {
					if p.TargetPort.Type == intstr.String && !slices.ContainsFunc(specs, func(ps podSpec) bool { return hasPort(ps, p.TargetPort.StrVal) }) {
						t.Errorf("Service/%s port %s targets container port %q, which no selected pod has", svc.Name, p.Name, p.TargetPort.StrVal)
					}
				}
			}
			for _, pdb := range find[*policyv1.PodDisruptionBudget](objs) {
				sel, err := metav1.LabelSelectorAsMap(pdb.Spec.Selector)
				if err != nil || len(matchingPods(objs, sel)) == 0 {
					t.Errorf("PodDisruptionBudget/%s selects no pods", pdb.Name)
				}
			}
			for _, ing := range find[*networkingv1.Ingress](objs) {
				for _, rule := range ing.Spec.Rules {
					for _, p := range rule.HTTP.Paths {
						svc := p.Backend.Service
						if svc == nil {
							continue
						}
						s := findNamed[*corev1.Service](t, objs, "Service", svc.Name)
						if !slices.ContainsFunc(s.Spec.Ports, func(sp corev1.ServicePort) bool {
							return sp.Name == svc.Port.Name || (svc.Port.Number != 0 && sp.Port == svc.Port.Number)
						}) {
							t.Errorf("Ingress/%s: service %s has no port %v", ing.Name, svc.Name, svc.Port)
						}
					}
				}
			}
			for _, hpa := range find[*autoscalingv2.HorizontalPodAutoscaler](objs) {
				ref := hpa.Spec.ScaleTargetRef
				need("HorizontalPodAutoscaler/"+hpa.Name, ref.Kind, ref.Name, false)
			}
		})
	}
}

func matchingPods(objs []object, selector map[string]string) []podSpec {
	var out []podSpec
	if len(selector) == 0 {
		return nil
	}
	sel := labels.SelectorFromSet(selector)
	for _, ps := range podSpecs(objs) {
		if sel.Matches(labels.Set(ps.Labels)) {
			out = append(out, ps)
		}
	}
	return out
}

func hasPort(ps podSpec, name string) bool {
	for _, c := range ps.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}

// TestPodDisruptionBudgets: the gateway, Triton and Elasticsearch each have
// one in every overlay (ECK makes Elasticsearch's unless the resource sets it).
func TestPodDisruptionBudgets(t *testing.T) {
	for _, target := range overlays(t) {
		objs := render(t, target)
		for _, app := range []string{gatewayApp, tritonApp} {
			found := false
			for _, pdb := range find[*policyv1.PodDisruptionBudget](objs) {
				if pdb.Spec.Selector.MatchLabels["app.kubernetes.io/name"] == app {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: no PodDisruptionBudget for %s", target, app)
			}
		}
	}
}

// TestNetworkPolicies: default-deny ingress, and only the gateway reaches
// Triton's inference ports and Elasticsearch's HTTP port (plus the ECK
// operator on 9200, and Prometheus on Triton's metrics port).
func TestNetworkPolicies(t *testing.T) {
	gatewayPeer := func(p networkingv1.NetworkPolicyPeer) bool {
		return p.NamespaceSelector == nil && p.IPBlock == nil && p.PodSelector != nil &&
			len(p.PodSelector.MatchExpressions) == 0 &&
			len(p.PodSelector.MatchLabels) == 1 && p.PodSelector.MatchLabels["app.kubernetes.io/name"] == gatewayApp
	}
	eckOperator := func(p networkingv1.NetworkPolicyPeer) bool {
		return p.NamespaceSelector != nil && p.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] == "elastic-system" &&
			p.PodSelector != nil && p.PodSelector.MatchLabels["control-plane"] == "elastic-operator"
	}
	for _, target := range overlays(t) {
		t.Run(target, func(t *testing.T) {
			objs := render(t, target)
			policies := find[*networkingv1.NetworkPolicy](objs)
			defaultDeny := false
			for _, np := range policies {
				if len(np.Spec.PodSelector.MatchLabels) == 0 && len(np.Spec.PodSelector.MatchExpressions) == 0 &&
					slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) && len(np.Spec.Ingress) == 0 {
					defaultDeny = true
				}
			}
			if !defaultDeny {
				t.Error("no default-deny ingress NetworkPolicy")
			}
			// allowed reports whether any policy selecting podLabels lets
			// peer-matching traffic reach port, and returns the offending
			// rules that let anyone else in.
			check := func(what string, podLabels map[string]string, port int32, ok func(networkingv1.NetworkPolicyPeer) bool) {
				selected := false
				for _, np := range policies {
					sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
					if err != nil {
						t.Fatal(err)
					}
					if len(np.Spec.PodSelector.MatchLabels) == 0 || !sel.Matches(labels.Set(podLabels)) {
						continue
					}
					selected = true
					for _, rule := range np.Spec.Ingress {
						covers := len(rule.Ports) == 0 || slices.ContainsFunc(rule.Ports, func(p networkingv1.NetworkPolicyPort) bool {
							return p.Port == nil || (p.Port.Type == intstr.Int && p.Port.IntVal == port)
						})
						if !covers {
							continue
						}
						if len(rule.From) == 0 {
							t.Errorf("NetworkPolicy/%s lets every source reach %s port %d", np.Name, what, port)
						}
						for _, peer := range rule.From {
							if !ok(peer) {
								t.Errorf("NetworkPolicy/%s lets %+v reach %s port %d", np.Name, peer, what, port)
							}
						}
					}
				}
				if !selected {
					t.Errorf("no NetworkPolicy selects %s pods", what)
				}
			}
			tritonPods := matchingPods(objs, map[string]string{"app.kubernetes.io/name": tritonApp})
			if len(tritonPods) != 1 {
				t.Fatalf("want one Triton workload, got %d", len(tritonPods))
			}
			for _, port := range []int32{8000, 8001} {
				check("Triton", tritonPods[0].Labels, port, gatewayPeer)
			}
			name := esName(t, objs)
			esLabels := map[string]string{"elasticsearch.k8s.elastic.co/cluster-name": name}
			check("Elasticsearch", esLabels, 9200, func(p networkingv1.NetworkPolicyPeer) bool { return gatewayPeer(p) || eckOperator(p) })
			check("Elasticsearch", esLabels, 9300, func(p networkingv1.NetworkPolicyPeer) bool {
				return p.NamespaceSelector == nil && p.PodSelector != nil && p.PodSelector.MatchLabels["elasticsearch.k8s.elastic.co/cluster-name"] == name
			})
		})
	}
}

// TestElasticsearchWiring: the gateway's address, password and CA come from
// what ECK creates for the Elasticsearch resource in the same overlay.
func TestElasticsearchWiring(t *testing.T) {
	for _, target := range overlays(t) {
		t.Run(target, func(t *testing.T) {
			objs := render(t, target)
			name := esName(t, objs)
			es := find[*eckElasticsearch](objs)[0]
			if !strings.HasPrefix(es.Spec.Version, "8.19.") {
				t.Errorf("Elasticsearch version %q, want 8.19.x", es.Spec.Version)
			}
			d := findNamed[*appsv1.Deployment](t, objs, "Deployment", "tusou-gateway")
			c := d.Spec.Template.Spec.Containers[0]
			env := map[string]corev1.EnvVar{}
			for _, e := range c.Env {
				env[e.Name] = e
			}
			addr, err := url.Parse(env["TUSOU_ELASTICSEARCH_ADDRESSES"].Value)
			if err != nil || addr.Scheme != "https" || addr.Hostname() != name+"-es-http" || addr.Port() != "9200" {
				t.Errorf("TUSOU_ELASTICSEARCH_ADDRESSES = %q, want https://%s-es-http:9200 (ECK's TLS service)", env["TUSOU_ELASTICSEARCH_ADDRESSES"].Value, name)
			}
			pw := env["TUSOU_ELASTICSEARCH_PASSWORD"]
			if pw.ValueFrom == nil || pw.ValueFrom.SecretKeyRef == nil ||
				pw.ValueFrom.SecretKeyRef.Name != name+"-es-elastic-user" || pw.ValueFrom.SecretKeyRef.Key != "elastic" {
				t.Errorf("TUSOU_ELASTICSEARCH_PASSWORD must come from secret %s-es-elastic-user key elastic, got %+v", name, pw.ValueFrom)
			}
			if env["TUSOU_ELASTICSEARCH_USERNAME"].Value != "elastic" {
				t.Errorf("TUSOU_ELASTICSEARCH_USERNAME = %q, want elastic (the key of the ECK secret)", env["TUSOU_ELASTICSEARCH_USERNAME"].Value)
			}
			caMounted := false
			for _, v := range d.Spec.Template.Spec.Volumes {
				if v.Secret != nil && v.Secret.SecretName == name+"-es-http-certs-public" {
					caMounted = slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == v.Name })
				}
			}
			if !caMounted {
				t.Errorf("gateway does not mount ECK's CA secret %s-es-http-certs-public", name)
			}
			for _, ns := range es.Spec.NodeSets {
				if ns.Count < 1 {
					t.Errorf("nodeSet %s: count %d", ns.Name, ns.Count)
				}
			}
		})
	}
	total := func(target string) int32 {
		var n int32
		for _, ns := range find[*eckElasticsearch](render(t, target))[0].Spec.NodeSets {
			n += ns.Count
		}
		return n
	}
	if n := total("overlays/dev"); n != 1 {
		t.Errorf("dev Elasticsearch: %d nodes, want 1", n)
	}
	if n := total("overlays/prod"); n != 3 {
		t.Errorf("prod Elasticsearch: %d nodes, want 3", n)
	}
}

// TestProdAutoscaling: the gateway HPA scales on CPU and on the Triton
// queue depth, and owns the replica count.
func TestProdAutoscaling(t *testing.T) {
	objs := render(t, "overlays/prod")
	hpa := findNamed[*autoscalingv2.HorizontalPodAutoscaler](t, objs, "HorizontalPodAutoscaler", "tusou-gateway")
	var cpu, queue bool
	for _, m := range hpa.Spec.Metrics {
		if m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource.Name == corev1.ResourceCPU {
			cpu = true
		}
		if m.Type == autoscalingv2.PodsMetricSourceType && m.Pods.Metric.Name == "tusou_triton_queue_depth" {
			queue = m.Pods.Target.Type == autoscalingv2.AverageValueMetricType && m.Pods.Target.AverageValue != nil
		}
	}
	if !cpu || !queue {
		t.Errorf("HPA metrics: want CPU utilisation and Pods tusou_triton_queue_depth AverageValue, got %+v", hpa.Spec.Metrics)
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 || hpa.Spec.MaxReplicas <= *hpa.Spec.MinReplicas {
		t.Errorf("HPA replicas: min %v max %d", hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
	}
	d := findNamed[*appsv1.Deployment](t, objs, "Deployment", hpa.Spec.ScaleTargetRef.Name)
	if d.Spec.Replicas != nil {
		t.Errorf("Deployment/%s sets spec.replicas=%d although an HPA owns it: every apply would reset the autoscaler", d.Name, *d.Spec.Replicas)
	}
	// CPU utilisation is relative to requests: without them the HPA is blind.
	for _, c := range d.Spec.Template.Spec.Containers {
		if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
			t.Errorf("container %s has no CPU request for the HPA to measure against", c.Name)
		}
	}
}

// TestIngressSizing: nginx must pass bodies at least as large as the
// gateway accepts (so oversized uploads get the gateway's JSON 413) and wait
// longer than the gateway's own request deadline.
func TestIngressSizing(t *testing.T) {
	objs := render(t, "overlays/prod")
	ing := findNamed[*networkingv1.Ingress](t, objs, "Ingress", "tusou-gateway")
	ann := ing.Annotations
	body, err := resource.ParseQuantity(strings.TrimSuffix(strings.ToUpper(ann["nginx.ingress.kubernetes.io/proxy-body-size"]), "B") + "i")
	if err != nil {
		t.Fatalf("proxy-body-size %q: %v", ann["nginx.ingress.kubernetes.io/proxy-body-size"], err)
	}
	cfg := gatewayConfig(t, objs)
	maxBody := cfg.int64(t, "server.max_body_bytes")
	if body.Value() < maxBody {
		t.Errorf("ingress proxy-body-size %s < gateway server.max_body_bytes %d", body.String(), maxBody)
	}
	reqTimeout := cfg.duration(t, "server.request_timeout")
	for _, k := range []string{"proxy-read-timeout", "proxy-send-timeout"} {
		secs, err := strconv.Atoi(ann["nginx.ingress.kubernetes.io/"+k])
		if err != nil {
			t.Errorf("%s: %v", k, err)
			continue
		}
		if float64(secs) <= reqTimeout.Seconds() {
			t.Errorf("ingress %s %ds <= gateway server.request_timeout %s", k, secs, reqTimeout)
		}
	}
	if ing.Spec.IngressClassName == nil || *ing.Spec.IngressClassName != "nginx" {
		t.Error("ingressClassName must be nginx (the annotations are ingress-nginx's)")
	}
	if len(ing.Spec.TLS) == 0 {
		t.Error("ingress without TLS")
	}
}
