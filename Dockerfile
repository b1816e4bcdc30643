# syntax=docker/dockerfile:1
# Two images from one build (see `make images`; needs a Docker engine with BuildKit):
#   --target controller  the controller binary with iptables (legacy and nft) on a slim Debian base
#   --target wait        the wait binary alone, FROM scratch, running as a non-root UID
# Both binaries are built by `make build`, exactly as outside a container: static (CGO_ENABLED=0),
# -trimpath, -ldflags '-s -w'.

ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-trixie AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS TARGETARCH VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH make build BIN=/out VERSION=$VERSION

# The init container of every mesh pod: nothing but the static binary. The injection template runs
# it as istio-proxy's UID/GID; 1337 is Istio's default.
FROM scratch AS wait
COPY --from=build /out/istio-pod-network-wait /istio-pod-network-wait
USER 1337:1337
ENTRYPOINT ["/istio-pod-network-wait"]

# The node controller (the default target). iptables brings iptables-legacy-* and iptables-nft-*
# (and ip6tables-*): the controller uses the node's backend. util-linux brings nsenter, used for pods
# with their own user namespace.
FROM debian:trixie-slim AS controller
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables util-linux \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/istio-pod-network-controller /usr/local/bin/istio-pod-network-controller
USER 0:0
ENTRYPOINT ["/usr/local/bin/istio-pod-network-controller"]
CMD ["run"]
