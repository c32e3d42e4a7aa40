# syntax=docker/dockerfile:1.7
# tusou gateway image: one Go binary (cgo: libjpeg-turbo, libpng) on a
# distroless runtime with glibc, running as uid 65532 on a read-only root
# filesystem. Build from the repository root:
#   docker build -f deploy/docker/gateway.Dockerfile \
#     --build-arg VERSION="$(git describe --tags --always --dirty)" -t tusou/gateway:dev .
# The go build line below is parsed and re-run by k8s/dockerfile_test.go
# (same flags, tags and CGO setting): keep it a single `go build` command.

# Go toolchain: the same version as go.mod's `go` line.
ARG GO_IMAGE=golang:1.26.8-bookworm
# Distroless publishes no versioned tags; pin the digest at release time with
# --build-arg RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:...
# (docs/operations.md "Images"). cc = glibc + libgcc + libstdc++, Debian 12
# like the builder, so the copied libraries match its glibc.
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${GO_IMAGE} AS build
# cgo libraries of the preprocess package: libjpeg-turbo (JPEG decode with
# DCT scaling) and libpng. k8s/dockerfile_test.go checks that every
# `#cgo LDFLAGS: -lX` of the gateway has its -dev package here.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libturbojpeg0-dev libpng-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=1 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/tusou ./cmd/tusou
# Stage the runtime tree: the binary, the shared libraries distroless/cc
# lacks (it has glibc, libgcc and libstdc++ only) with their own
# dependencies (libpng needs zlib), and the writable blob folder. The test
# above checks this list against the binary's and the libraries' DT_NEEDED.
RUN set -eu; \
    triplet="$(gcc -dumpmachine)"; \
    mkdir -p "/rootfs/usr/lib/${triplet}" /rootfs/usr/local/bin /rootfs/data/blobs; \
    for lib in libturbojpeg.so.0 libpng16.so.16 libz.so.1; do \
      cp -L "/usr/lib/${triplet}/${lib}" "/rootfs/usr/lib/${triplet}/"; \
    done; \
    cp /out/tusou /rootfs/usr/local/bin/tusou; \
    /out/tusou --version

FROM ${RUNTIME_IMAGE}
# Binary and library stay root-owned (not writable by the runtime user); only
# /data belongs to it. In Kubernetes /data and /tmp are emptyDir volumes.
COPY --from=build /rootfs/usr/ /usr/
COPY --from=build --chown=65532:65532 /rootfs/data/ /data/
USER 65532:65532
ENV TUSOU_BLOBS_DIR=/data/blobs
# REST API, /metrics, /healthz, /readyz (9201: ES-compatible sidecar, later).
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/tusou"]
CMD ["serve"]
