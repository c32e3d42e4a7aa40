package k8s

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

func imageTag(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[i+1:]
	}
	return ""
}

func imageName(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[:i]
	}
	return ref
}

func finalUser(t *testing.T, dockerfileName string) string {
	d := findDockerfile(t, dockerfileName)
	users := commands[*instructions.UserCommand](d.stages[len(d.stages)-1])
	if len(users) == 0 {
		t.Fatalf("%s: no USER", dockerfileName)
	}
	return users[len(users)-1].User
}

func uidOf(c corev1.Container, pod *corev1.PodSecurityContext) string {
	if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
		return strconv.FormatInt(*c.SecurityContext.RunAsUser, 10)
	}
	if pod != nil && pod.RunAsUser != nil {
		return strconv.FormatInt(*pod.RunAsUser, 10)
	}
	return ""
}

// TestVersionsAgree: compose and Kubernetes run the same Elasticsearch and
// Triton versions, every object-storage sync uses the same rclone, and the
// images' users and ports are the ones the manifests assume.
func TestVersionsAgree(t *testing.T) {
	p, err := loadCompose(t, exampleEnv(t), "gpu")
	if err != nil {
		t.Fatal(err)
	}
	composeES := imageTag(p.Services["elasticsearch"].Image)
	composeTriton := p.Services["triton"].Image
	exportChecked := false
	for _, target := range overlays(t) {
		objs := render(t, target)
		es := find[*eckElasticsearch](objs)[0]
		if es.Spec.Version != composeES {
			t.Errorf("%s: ECK Elasticsearch %s, compose %s", target, es.Spec.Version, composeES)
		}
		var rclone []string
		for _, ps := range podSpecs(objs) {
			for _, cr := range containerRefs(ps) {
				if imageName(cr.c.Image) == "rclone/rclone" && !slices.Contains(rclone, cr.c.Image) {
					rclone = append(rclone, cr.c.Image)
				}
			}
		}
		if len(rclone) != 1 {
			t.Errorf("%s: rclone images %v, want one version everywhere", target, rclone)
		}
		tr := findNamed[*appsv1.Deployment](t, objs, "Deployment", "tusou-triton").Spec.Template.Spec
		if tr.Containers[0].Image != composeTriton {
			t.Errorf("%s: Triton image %s, compose %s", target, tr.Containers[0].Image, composeTriton)
		}
		if got, want := uidOf(tr.Containers[0], tr.SecurityContext)+":1000", p.Services["triton"].User; got != want {
			t.Errorf("%s: Triton runs as %s, compose as %s", target, got, want)
		}
		gw := findNamed[*appsv1.Deployment](t, objs, "Deployment", "tusou-gateway").Spec.Template.Spec
		gwUser := finalUser(t, "gateway.Dockerfile")
		if uid, _, _ := strings.Cut(gwUser, ":"); uidOf(gw.Containers[0], gw.SecurityContext) != uid {
			t.Errorf("%s: gateway runAsUser %s, image USER %s", target, uidOf(gw.Containers[0], gw.SecurityContext), gwUser)
		}
		if p.Services["gateway"].User != gwUser {
			t.Errorf("compose gateway user %s, image USER %s", p.Services["gateway"].User, gwUser)
		}
		port := gw.Containers[0].Ports[0].ContainerPort
		exposed := commands[*instructions.ExposeCommand](findDockerfile(t, "gateway.Dockerfile").stages[len(findDockerfile(t, "gateway.Dockerfile").stages)-1])
		if len(exposed) == 0 || !slices.Contains(exposed[0].Ports, strconv.Itoa(int(port))) {
			t.Errorf("%s: gateway container port %d is not EXPOSEd by the image", target, port)
		}
		for _, job := range find[*batchv1.Job](objs) {
			spec := job.Spec.Template.Spec
			for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
				if strings.HasSuffix(imageName(c.Image), "tusou/export") {
					exportChecked = true
					exportUser := finalUser(t, "export.Dockerfile")
					if uid, _, _ := strings.Cut(exportUser, ":"); uidOf(c, spec.SecurityContext) != uid {
						t.Errorf("%s: export container runs as %s, image USER %s", target, uidOf(c, spec.SecurityContext), exportUser)
					}
				}
			}
		}
	}
	if !exportChecked {
		t.Error("no overlay runs the export image: its user was not checked")
	}
}
