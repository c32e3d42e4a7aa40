package k8s

import (
	"net"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// TestGatewayBalancesOverTritonPods: the gateway reaches Triton through the
// headless Service with a dns:/// target, so its gRPC client sees one address
// per ready Triton pod and round-robins batches over them; the Service
// selects the Triton pods and exposes their gRPC port.
func TestGatewayBalancesOverTritonPods(t *testing.T) {
	for _, target := range targets(t) {
		if !strings.HasPrefix(target, "overlays/") {
			continue
		}
		t.Run(target, func(t *testing.T) {
			objs := render(t, target)
			gw := findNamed[*appsv1.Deployment](t, objs, "Deployment", "tusou-gateway")
			tr := findNamed[*appsv1.Deployment](t, objs, "Deployment", "tusou-triton")
			var addr string
			for _, c := range gw.Spec.Template.Spec.Containers {
				for _, e := range c.Env {
					if e.Name == "TUSOU_TRITON_GRPC_ADDR" {
						addr = e.Value
					}
				}
			}
			hostPort, ok := strings.CutPrefix(addr, "dns:///")
			if !ok {
				t.Fatalf("TUSOU_TRITON_GRPC_ADDR %q: want dns:///<headless service>:<port> so batches spread over Triton pods", addr)
			}
			host, port, err := net.SplitHostPort(hostPort)
			if err != nil {
				t.Fatal(err)
			}
			svc := findNamed[*corev1.Service](t, objs, "Service", host)
			if svc.Spec.ClusterIP != corev1.ClusterIPNone {
				t.Errorf("Service %s is not headless (clusterIP %q): gRPC connections would pin to one pod", host, svc.Spec.ClusterIP)
			}
			for k, v := range svc.Spec.Selector {
				if tr.Spec.Template.Labels[k] != v {
					t.Errorf("Service %s selector %s=%s does not select the Triton pods", host, k, v)
				}
			}
			found := false
			for _, p := range svc.Spec.Ports {
				// Headless: clients connect to pod IP:port, so the port must be
				// the container's gRPC port itself.
				if strconv.Itoa(int(p.Port)) == port && (p.TargetPort.String() == "grpc" || p.TargetPort.String() == port) {
					found = true
				}
			}
			if !found {
				t.Errorf("Service %s has no port %s to Triton's gRPC port", host, port)
			}
		})
	}
}
