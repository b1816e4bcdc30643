#!/usr/bin/env bash
# Builds the real tools the end-to-end and chart tests use, from the Go module proxy, and caches them
# per machine under $TOOLS_DIR (default ~/.cache/istio-pod-network-controller/tools). A cached binary
# is reused; the cold kube-apiserver build takes about 8.5 minutes on 2 cores.
#
#   test/tools/build.sh [kube] [etcd] [helm] [containerd] [crictl] [kubectl] [pilot-agent] [pilot-discovery]
#   (no argument: all)
#
# kube is kube-apiserver, kube-controller-manager, kube-scheduler and kubelet in one binary; each
# component's name is accepted for it.
#
# containerd is containerd, containerd-shim-runc-v2 and ctr (the real node's runtime; it also needs
# Debian's runc and containernetworking-plugins, see docs/e2e.md); crictl is the CRI client of the
# real node's clean stop.
#
# kubectl (k8s.io/kubectl) runs the README's troubleshooting commands in the real-node tests and the demo.
#
# pilot-agent (Istio's): the nftables backend's twin tests and the rule engine benchmark compare
# with its `istio-iptables`.
#
# pilot-discovery (Istio's istiod, same Istio version): the real injection webhook of the real-node
# istiod test (test/realnode/istiod_linux_test.go), packed as a local image by test/images.
#
# Prints nothing on stdout but the tools directory. On stderr, one line per tool it builds ("building
# kube v1.37.2 (step 1 of 4, about 12 min cold)…", a line every 2 minutes while it runs, then the time
# it took); each build's own output goes to $TOOLS_DIR/logs/NAME-VERSION.log, whose end is shown
# when it fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
TOOLS_DIR=${TOOLS_DIR:-$HOME/.cache/istio-pod-network-controller/tools}
K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
HELM_VERSION=v3.22.0
CONTAINERD_VERSION=v2.4.2
CRICTL_VERSION=v1.37.0
KUBECTL_VERSION=v0.37.2 # k8s.io/kubectl's version of kubectl v1.37.2
ISTIO_VERSION=v0.0.0-20260827124520-eed52ebb66ad # the version test/conformance's goldens come from
mkdir -p "$TOOLS_DIR"

# The steps: the tools asked for that are not cached yet, counted before the first one starts.
step_n=0 step_m=0
step() { # name version estimate command...: runs the command with its output in the tool's log
	local name=$1 version=$2 est=$3 log="$TOOLS_DIR/logs/$1-$2.log" start=$SECONDS pid shown=0
	shift 3
	step_n=$((step_n + 1))
	mkdir -p "$TOOLS_DIR/logs"
	echo "build.sh: building $name $version (step $step_n of $step_m, about $est cold; log: $log)…" >&2
	"$@" >"$log" 2>&1 &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		sleep 1
		if [ $((SECONDS - start - shown)) -ge 120 ]; then
			shown=$((SECONDS - start))
			echo "build.sh:   … $name: $((shown / 60)) min so far" >&2
		fi
	done
	if ! wait "$pid"; then
		echo "build.sh: building $name $version failed after $(took "$start"); the end of $log:" >&2
		tail -n 30 "$log" >&2
		exit 1
	fi
	echo "build.sh: built $name $version in $(took "$start")" >&2
}
took() { local s=$((SECONDS - $1)); echo "$((s / 60)) min $((s % 60)) s"; }
in_dir() { local d=$1; shift; cd "$d" && "$@"; }

build_module() { # name version dir ldflags estimate
	local name=$1 version=$2 dir=$3 ldflags=$4 est=$5 out="$TOOLS_DIR/$1-$2"
	if [ ! -x "$out" ]; then
		step "$name" "$version" "$est" in_dir "$dir" env CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp" .
		mv "$out.tmp" "$out"
	fi
	ln -sf "$name-$version" "$TOOLS_DIR/$name"
}

# kube: kube-apiserver, kube-controller-manager, kube-scheduler and kubelet in one multi-call binary
# (one link instead of four), with a symlink per component.
kube() {
	local v=$K8S_VERSION minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
	local ld=""
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ld="$ld -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor"
	done
	build_module kube "$v" "$here/kube" "$ld" "12 min"
	for c in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
		ln -sf "kube-$v" "$TOOLS_DIR/$c"
	done
}

etcd() { build_module etcd "$ETCD_VERSION" "$here/etcd" "" "1.5 min"; }

kubectl() {
	local v=$KUBECTL_VERSION minor=${KUBECTL_VERSION#v0.}; minor=${minor%%.*}
	local ld=""
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ld="$ld -X $p.gitVersion=v1.${KUBECTL_VERSION#v0.} -X $p.gitMajor=1 -X $p.gitMinor=$minor"
	done
	build_module kubectl "$v" "$here/kubectl" "$ld" "2-4 min"
}

helm() {
	local out="$TOOLS_DIR/helm-$HELM_VERSION"
	if [ ! -x "$out" ]; then
		local tmp; tmp=$(mktemp -d)
		step helm "$HELM_VERSION" "2 min" env GOBIN="$tmp" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w \
			-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
			-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37" \
			"helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
		mv "$tmp/helm" "$out"; rm -rf "$tmp"
	fi
	ln -sf "helm-$HELM_VERSION" "$TOOLS_DIR/helm"
}

# containerd: the daemon, its runc shim (found on PATH by containerd) and ctr, each versioned.
containerd() {
	local v=$CONTAINERD_VERSION cmds="containerd containerd-shim-runc-v2 ctr" c missing=""
	for c in $cmds; do [ -x "$TOOLS_DIR/$c-$v" ] || missing="$missing $c"; done
	if [ -n "$missing" ]; then
		local tmp pkgs=""; tmp=$(mktemp -d)
		for c in $missing; do pkgs="$pkgs github.com/containerd/containerd/v2/cmd/$c@$v"; done
		# shellcheck disable=SC2086 # one package per word
		step containerd "$v" "2 min" env GOBIN="$tmp" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" -tags "no_btrfs no_devmapper no_zfs" $pkgs
		for c in $missing; do mv "$tmp/$c" "$TOOLS_DIR/$c-$v"; done
		rm -rf "$tmp"
	fi
	for c in $cmds; do ln -sf "$c-$v" "$TOOLS_DIR/$c"; done
}

# crictl: the CRI client the real node's clean stop uses (remove every sandbox through the CRI).
crictl() {
	local out="$TOOLS_DIR/crictl-$CRICTL_VERSION"
	if [ ! -x "$out" ]; then
		local tmp; tmp=$(mktemp -d)
		step crictl "$CRICTL_VERSION" "1 min" env GOBIN="$tmp" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
		mv "$tmp/crictl" "$out"; rm -rf "$tmp"
	fi
	ln -sf "crictl-$CRICTL_VERSION" "$TOOLS_DIR/crictl"
}

# istio_binary NAME ESTIMATE: Istio's pilot/cmd/NAME at ISTIO_VERSION, built in its module test/tools/NAME.
istio_binary() {
	local name=$1 estimate=$2
	local out="$TOOLS_DIR/$name-$ISTIO_VERSION"
	if [ ! -x "$out" ]; then
		step "$name" "$ISTIO_VERSION" "$estimate" in_dir "$here/$name" env CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out.tmp" "istio.io/istio/pilot/cmd/$name"
		mv "$out.tmp" "$out"
	fi
	ln -sf "$name-$ISTIO_VERSION" "$TOOLS_DIR/$name"
}

pilot_agent() { istio_binary pilot-agent "10 min"; }

pilot_discovery() { istio_binary pilot-discovery "12 min"; }

# cached reports whether every binary of tool t is in the cache.
cached() {
	case $1 in
	kube) [ -x "$TOOLS_DIR/kube-$K8S_VERSION" ] ;;
	etcd) [ -x "$TOOLS_DIR/etcd-$ETCD_VERSION" ] ;;
	helm) [ -x "$TOOLS_DIR/helm-$HELM_VERSION" ] ;;
	kubectl) [ -x "$TOOLS_DIR/kubectl-$KUBECTL_VERSION" ] ;;
	crictl) [ -x "$TOOLS_DIR/crictl-$CRICTL_VERSION" ] ;;
	containerd) [ -x "$TOOLS_DIR/containerd-$CONTAINERD_VERSION" ] && [ -x "$TOOLS_DIR/ctr-$CONTAINERD_VERSION" ] &&
		[ -x "$TOOLS_DIR/containerd-shim-runc-v2-$CONTAINERD_VERSION" ] ;;
	pilot-agent) [ -x "$TOOLS_DIR/pilot-agent-$ISTIO_VERSION" ] ;;
	pilot-discovery) [ -x "$TOOLS_DIR/pilot-discovery-$ISTIO_VERSION" ] ;;
	esac
}

[ $# -gt 0 ] || set -- etcd helm kube containerd crictl kubectl pilot-agent pilot-discovery
tools=()
for t in "$@"; do
	case $t in
	kube | kube-apiserver | kube-controller-manager | kube-scheduler | kubelet) t=kube ;;
	etcd | helm | kubectl | crictl | pilot-agent | pilot-discovery) ;;
	containerd | containerd-shim-runc-v2 | ctr) t=containerd ;;
	*) echo "build.sh: unknown tool \"$t\" (want kube (or one of its components), etcd, helm, containerd, crictl, kubectl, pilot-agent or pilot-discovery)" >&2; exit 2 ;;
	esac
	case " ${tools[*]} " in *" $t "*) ;; *) tools+=("$t") ;; esac
done
for t in "${tools[@]}"; do cached "$t" || step_m=$((step_m + 1)); done
# One build at a time per machine (the Go callers in test/e2e/cluster take the same lock); when
# everything asked for is cached, nothing is built and nobody waits for an unrelated build.
if [ "$step_m" -gt 0 ]; then
	exec 9>"$TOOLS_DIR/.build.lock"
	flock 9
fi
for t in "${tools[@]}"; do "${t//-/_}"; done
echo "$TOOLS_DIR"
