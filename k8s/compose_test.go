package k8s

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/dotenv"
	"github.com/compose-spec/compose-go/v2/types"
)

// composeExceptions allow-lists compose policy breaches: "service rule" ->
// reason. Stale entries fail the test.
var composeExceptions = map[string]string{
	"elasticsearch read_only": "Elasticsearch writes its keystore and config under /usr/share/elasticsearch/config at start-up; the data volume alone is not enough",
	"gateway healthcheck":     "the distroless gateway image has no shell or HTTP client to probe with; nothing depends on the gateway being healthy (Kubernetes probes /healthz and /readyz itself)",
}

// loadCompose loads deploy/compose.yaml the way `docker compose --env-file
// deploy/compose.env.example --profile <p>` would: schema-validated (unknown
// keys fail), interpolated from the example env file only (not this
// machine's environment), with consistency checks (depends_on targets
// exist, networks and volumes are declared).
func loadCompose(t *testing.T, env map[string]string, profiles ...string) (*types.Project, error) {
	t.Helper()
	root := repoRoot(t)
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(root, "deploy", "compose.yaml")},
		cli.WithWorkingDirectory(filepath.Join(root, "deploy")),
		cli.WithEnv(envList),
		cli.WithProfiles(profiles),
		cli.WithConsistency(true),
	)
	if err != nil {
		return nil, err
	}
	return opts.LoadProject(context.Background())
}

func exampleEnv(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(t), "deploy", "compose.env.example"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env, err := dotenv.ParseWithLookup(f, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("compose.env.example: %v", err)
	}
	return env
}

// TestComposeProfiles loads the stack for each profile and checks its
// wiring and hardening.
func TestComposeProfiles(t *testing.T) {
	env := exampleEnv(t)
	if _, ok := env["ELASTIC_PASSWORD"]; !ok {
		t.Error("compose.env.example does not set ELASTIC_PASSWORD")
	}
	if !slices.Contains([]string{"cpu", "gpu"}, env["COMPOSE_PROFILES"]) {
		t.Errorf("compose.env.example COMPOSE_PROFILES=%q, want cpu or gpu", env["COMPOSE_PROFILES"])
	}
	used := map[string]bool{}
	for _, profile := range []string{"gpu", "cpu"} {
		t.Run(profile, func(t *testing.T) {
			p, err := loadCompose(t, env, profile)
			if err != nil {
				t.Fatalf("docker compose --profile %s config: %v", profile, err)
			}
			want := []string{"elasticsearch", "gateway", "model-export"}
			tritonSvc := map[string]string{"gpu": "triton", "cpu": "triton-cpu"}[profile]
			want = append(want, tritonSvc)
			slices.Sort(want)
			got := p.ServiceNames()
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Fatalf("services %v, want %v", got, want)
			}
			fail := func(svc, rule, format string, args ...any) {
				key := svc + " " + rule
				if reason, ok := composeExceptions[key]; ok && reason != "" {
					used[key] = true
					return
				}
				t.Errorf(svc+": "+format, args...)
			}
			for name, s := range p.Services {
				oneShot := s.Restart == types.RestartPolicyNo
				if prob := imageProblem(s.Image); prob != "" {
					fail(name, "image", "image %q %s", s.Image, prob)
				}
				if s.User == "" || s.User == "root" || s.User == "0" || strings.HasPrefix(s.User, "0:") || strings.HasPrefix(s.User, "root:") {
					fail(name, "user", "runs as root (user %q)", s.User)
				}
				if !s.ReadOnly {
					fail(name, "read_only", "root filesystem is writable")
				}
				if !slices.Contains(s.CapDrop, "ALL") || len(s.CapAdd) > 0 {
					fail(name, "capabilities", "cap_drop %v cap_add %v, want drop ALL and add nothing", s.CapDrop, s.CapAdd)
				}
				if !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
					fail(name, "no-new-privileges", "security_opt %v lacks no-new-privileges:true", s.SecurityOpt)
				}
				if s.Privileged {
					fail(name, "privileged", "privileged")
				}
				if !oneShot && (s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) == 0) {
					fail(name, "healthcheck", "long-running service without healthcheck")
				}
				for _, port := range s.Ports {
					if name != "gateway" && port.HostIP != "127.0.0.1" {
						fail(name, "ports", "port %d published on %q; only the gateway is published beyond localhost", port.Target, port.HostIP)
					}
				}
				for dep, cfg := range s.DependsOn {
					target, enabled := p.Services[dep]
					if !enabled {
						if cfg.Required {
							t.Errorf("%s depends on %s, which profile %s disables, with required: true", name, dep, profile)
						}
						continue
					}
					switch cfg.Condition {
					case types.ServiceConditionHealthy:
						if target.HealthCheck == nil || target.HealthCheck.Disable || len(target.HealthCheck.Test) == 0 {
							t.Errorf("%s waits for %s to be healthy, but %s has no healthcheck", name, dep, dep)
						}
					case types.ServiceConditionCompletedSuccessfully:
						if target.Restart != types.RestartPolicyNo {
							t.Errorf("%s waits for %s to complete, but %s restarts (%q)", name, dep, dep, target.Restart)
						}
					default:
						t.Errorf("%s depends on %s with condition %q; want service_healthy or service_completed_successfully", name, dep, cfg.Condition)
					}
				}
			}

			// Triton: placement per profile, and reachable as "triton".
			tr := p.Services[tritonSvc]
			hasGPU := tr.Deploy != nil && tr.Deploy.Resources.Reservations != nil &&
				slices.ContainsFunc(tr.Deploy.Resources.Reservations.Devices, func(d types.DeviceRequest) bool {
					return slices.Contains(d.Capabilities, "gpu")
				})
			cpuConfigs := slices.Contains(tr.Command, "--model-config-name=cpu")
			if profile == "gpu" && (!hasGPU || cpuConfigs) {
				t.Errorf("gpu profile: triton must reserve a GPU and load config.pbtxt (devices %v, command %v)", hasGPU, tr.Command)
			}
			if profile == "cpu" && (hasGPU || !cpuConfigs) {
				t.Errorf("cpu profile: triton-cpu must reserve no GPU and load configs/cpu.pbtxt (devices %v, command %v)", hasGPU, tr.Command)
			}
			gw := p.Services["gateway"]
			host, _, err := net.SplitHostPort(deref(gw.Environment["TUSOU_TRITON_GRPC_ADDR"]))
			if err != nil {
				t.Fatalf("gateway TUSOU_TRITON_GRPC_ADDR: %v", err)
			}
			reachable := host == tritonSvc
			for _, n := range tr.Networks {
				if n != nil && slices.Contains(n.Aliases, host) {
					reachable = true
				}
			}
			if !reachable {
				t.Errorf("gateway dials %q, which is neither the name nor an alias of %s", host, tritonSvc)
			}
			if _, ok := gw.DependsOn[tritonSvc]; !ok {
				t.Errorf("gateway does not wait for %s", tritonSvc)
			}
			if deref(gw.Environment["TUSOU_ELASTICSEARCH_PASSWORD"]) != deref(p.Services["elasticsearch"].Environment["ELASTIC_PASSWORD"]) {
				t.Error("gateway TUSOU_ELASTICSEARCH_PASSWORD differs from Elasticsearch's ELASTIC_PASSWORD")
			}
			if deref(p.Services["elasticsearch"].Environment["xpack.security.enabled"]) != "true" {
				t.Error("Elasticsearch security must be on")
			}
			// The model repository volume: written by the export only.
			for name, s := range p.Services {
				for _, v := range s.Volumes {
					if v.Source == "model-repo" && (name == "model-export") == v.ReadOnly {
						t.Errorf("%s mounts model-repo read_only=%v; only model-export may write it", name, v.ReadOnly)
					}
				}
			}
		})
	}
	for key := range composeExceptions {
		if !used[key] {
			t.Errorf("compose exception %q is no longer needed: remove it", key)
		}
	}
}

// TestComposeNeedsPassword: without ELASTIC_PASSWORD the stack refuses to
// load rather than starting Elasticsearch with an empty password.
func TestComposeNeedsPassword(t *testing.T) {
	env := exampleEnv(t)
	delete(env, "ELASTIC_PASSWORD")
	if _, err := loadCompose(t, env, "cpu"); err == nil || !strings.Contains(err.Error(), "ELASTIC_PASSWORD") {
		t.Errorf("want an error naming ELASTIC_PASSWORD, got %v", err)
	}
}

// TestComposeGatewaySettingsExist: the TUSOU_* variables the compose
// gateway sets are real settings (the gateway rejects unknown ones).
func TestComposeGatewaySettingsExist(t *testing.T) {
	ref := loadReference(t)
	p, err := loadCompose(t, exampleEnv(t), "cpu")
	if err != nil {
		t.Fatal(err)
	}
	for k := range p.Services["gateway"].Environment {
		if _, ok := ref.byEnv[k]; strings.HasPrefix(k, "TUSOU_") && !ok {
			t.Errorf("gateway environment %s is not a gateway setting (docs/configuration.md)", k)
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
