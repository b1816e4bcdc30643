# Every build, test and benchmark entry point. Run the tests as root: the privileged ones
# (network namespaces, iptables, cgroups) skip on a laptop without root and fail under CI=true.

GO        ?= go
BIN       ?= bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Built the way the Dockerfile builds them: static, trimmed, stripped.
GOFLAGS_BUILD = -trimpath -ldflags "-s -w -X main.version=$(VERSION)"
IMAGE_REPO ?= ghcr.io/redhat-cop
FUZZTIME  ?= 5s
NODE      ?= real# make demo: real or simulated

.PHONY: all build test unit fuzz injection-test chart-test bench demo demo-deps deps tools images lint clean

all: build

build: ## the controller and the wait binaries, static
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/istio-pod-network-controller ./cmd/istio-pod-network-controller
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/istio-pod-network-wait ./cmd/istio-pod-network-wait

tools: ## kube-apiserver, etcd and helm from the Go module proxy, cached per machine
	test/tools/build.sh

test: deps lint unit fuzz injection-test ## everything: unit, root, end-to-end, chart and injection tests

deps: ## the Debian packages the tests and the demo need (installed as root; without root: the command to run)
	@test/tools/deps.sh

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

unit: tools ## all Go tests of the main module, end-to-end included (E2E=1)
	E2E=1 $(GO) test -count=1 -timeout 45m ./...

fuzz: ## every fuzz target, briefly (a finding is saved under the package's testdata/fuzz and fails)
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; test/tools/fuzz.sh $$pkg $$f $(FUZZTIME); \
	  done; done

injection-test: ## Istio's own injector with our template (separate module: istio.io/istio)
	cd test/injection && $(GO) test -count=1 ./...

chart-test: tools injection-test ## the Helm chart: lint, golden files, and on the local API server its manifests, admission policies and injected pods under Pod Security "restricted"
	E2E=1 $(GO) test -count=1 ./test/chart/

bench: tools ## benchmarks: the rule engine, the wait binary and the 110-pod burst
	$(GO) test -run '^$$' -bench . -benchtime 30x ./netsetup/ ./initwait/...
	E2E=1 $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./test/e2e/...

demo: demo-deps tools build ## a real node here (kubelet, containerd, the chart installed with helm), mesh pods released, what an admin sees; NODE=simulated: the simulated node
	$(GO) run ./test/demo -node=$(NODE)

demo-deps:
	@test/tools/deps.sh --root-for "make demo"

images: ## container images (needs a Docker engine with BuildKit; the binaries are built by `make build` inside)
	docker build --target controller --build-arg VERSION=$(VERSION) -t $(IMAGE_REPO)/istio-pod-network-controller:$(VERSION) .
	docker build --target wait --build-arg VERSION=$(VERSION) -t $(IMAGE_REPO)/istio-pod-network-wait:$(VERSION) .

clean:
	rm -rf $(BIN)
