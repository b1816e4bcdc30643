#!/usr/bin/env bash
# Builds the real tools the end-to-end and chart tests use, from the Go module proxy, and caches them
# per machine under $TOOLS_DIR (default ~/.cache/istio-pod-network-controller/tools). A cached binary
# is reused; the cold kube-apiserver build takes about 8.5 minutes on 2 cores.
#
#   test/tools/build.sh [kube] [etcd] [helm] [containerd] [pilot-agent]   (no argument: the first four)
#
# kube is kube-apiserver, kube-controller-manager, kube-scheduler and kubelet in one binary; each
# component's name is accepted for it.
#
# containerd is containerd, containerd-shim-runc-v2 and ctr (the real node's runtime; it also needs
# Debian's runc and containernetworking-plugins, see docs/e2e.md).
#
# pilot-agent (Istio's, for the rule engine benchmark's comparison with `pilot-agent istio-iptables`)
# is built only when asked for.
#
# Prints nothing on success but the tools directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
TOOLS_DIR=${TOOLS_DIR:-$HOME/.cache/istio-pod-network-controller/tools}
K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
HELM_VERSION=v3.22.0
CONTAINERD_VERSION=v2.4.2
ISTIO_VERSION=v0.0.0-20260827124520-eed52ebb66ad # the version test/conformance's goldens come from
mkdir -p "$TOOLS_DIR"
# One build at a time per machine (the Go callers in test/e2e/cluster take the same lock).
exec 9>"$TOOLS_DIR/.build.lock"
flock 9

build_module() { # name version dir ldflags
	local name=$1 version=$2 dir=$3 ldflags=$4 out="$TOOLS_DIR/$1-$2"
	if [ ! -x "$out" ]; then
		echo "building $name $version (cached afterwards in $TOOLS_DIR)" >&2
		(cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp" .)
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
	build_module kube "$v" "$here/kube" "$ld"
	for c in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
		ln -sf "kube-$v" "$TOOLS_DIR/$c"
	done
}

etcd() { build_module etcd "$ETCD_VERSION" "$here/etcd" ""; }

helm() {
	local out="$TOOLS_DIR/helm-$HELM_VERSION"
	if [ ! -x "$out" ]; then
		echo "building helm $HELM_VERSION" >&2
		local tmp; tmp=$(mktemp -d)
		GOBIN=$tmp CGO_ENABLED=0 go install -trimpath -ldflags "-s -w \
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
		echo "building containerd $v:$missing" >&2
		local tmp pkgs=""; tmp=$(mktemp -d)
		for c in $missing; do pkgs="$pkgs github.com/containerd/containerd/v2/cmd/$c@$v"; done
		# shellcheck disable=SC2086 # one package per word
		GOBIN=$tmp CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" -tags "no_btrfs no_devmapper no_zfs" $pkgs
		for c in $missing; do mv "$tmp/$c" "$TOOLS_DIR/$c-$v"; done
		rm -rf "$tmp"
	fi
	for c in $cmds; do ln -sf "$c-$v" "$TOOLS_DIR/$c"; done
}

pilot_agent() {
	local out="$TOOLS_DIR/pilot-agent-$ISTIO_VERSION"
	if [ ! -x "$out" ]; then
		echo "building pilot-agent $ISTIO_VERSION" >&2
		(cd "$here/pilot-agent" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out.tmp" istio.io/istio/pilot/cmd/pilot-agent)
		mv "$out.tmp" "$out"
	fi
	ln -sf "pilot-agent-$ISTIO_VERSION" "$TOOLS_DIR/pilot-agent"
}

[ $# -gt 0 ] || set -- etcd helm kube containerd
for t in "$@"; do
	case $t in
	kube | kube-apiserver | kube-controller-manager | kube-scheduler | kubelet) kube ;;
	etcd) etcd ;;
	helm) helm ;;
	containerd | containerd-shim-runc-v2 | ctr) containerd ;;
	pilot-agent) pilot_agent ;;
	*) echo "build.sh: unknown tool \"$t\" (want kube (or one of its components), etcd, helm, containerd or pilot-agent)" >&2; exit 2 ;;
	esac
done
echo "$TOOLS_DIR"
