// Package k8s holds tusou's deployment checks: its tests render every
// kustomize overlay under k8s/ in-process and decode each object strictly into
// the Kubernetes API types, enforce the security and operability policy on
// every container, validate deploy/compose.yaml with the Compose loader, lint
// the Dockerfiles under deploy/docker/ and rebuild the gateway with the exact
// go build line of its Dockerfile.
//
// It is a separate Go module (github.com/tusou/tusou/k8s) so that kustomize,
// the Kubernetes API types, compose-go and BuildKit's parser never enter the
// gateway binary's dependency graph. Run with `cd k8s && go test ./...`.
package k8s
