#!/usr/bin/env bash
# The one list of Debian packages that `make demo`, `make test` and .ci/run need, and their
# installation. Prints nothing when everything is there.
#
#   test/tools/deps.sh [--root-for "make demo"]
#
# Missing packages are installed as root (`apt-get update` only then, quietly; the output goes to a
# log whose end is shown on failure). Without root it stops at once, naming the command to run.
# --root-for also stops at once without root, naming the command: for what cannot run without it.
set -euo pipefail

# Each entry: package | what it is needed for | the commands or files that show it is installed.
packages=(
	"iptables | the rules: iptables-nft and -legacy, both families | iptables-nft-restore iptables-legacy-restore ip6tables-nft-restore"
	"nftables | the nftables backend's tests | nft"
	"iproute2 | namespaces, veths and bridges in the tests | ip"
	"util-linux | nsenter, setpriv, unshare, flock | nsenter setpriv unshare flock"
	"make | the entry points | make"
	"git | the version stamp, the duplicate-code check | git"
	"runc | the real node's containers, under containerd | runc"
	"containernetworking-plugins | the real node's pod network: bridge, host-local | /usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/loopback"
	"mmdebstrap | the controller image's Debian root file system | mmdebstrap"
	"debian-archive-keyring | mmdebstrap's check of Debian's signatures | /usr/share/keyrings/debian-archive-keyring.gpg"
	"ca-certificates | the Go module proxy and Debian's mirror over TLS | /etc/ssl/certs/ca-certificates.crt"
)

root_for=""
while [ $# -gt 0 ]; do
	case $1 in
	--root-for) root_for=${2:?"--root-for needs the command, e.g. \"make demo\""}; shift 2 ;;
	*) echo "deps.sh: unknown argument \"$1\" (want --root-for COMMAND)" >&2; exit 2 ;;
	esac
done

if [ -n "$root_for" ] && [ "$(id -u)" -ne 0 ]; then
	echo "$root_for needs root (network namespaces, iptables, cgroups, a kubelet and containerd): run sudo $root_for" >&2
	exit 1
fi

missing=()
for entry in "${packages[@]}"; do
	IFS='|' read -r pkg _ shown <<<"$entry"
	pkg=${pkg// /}
	for what in $shown; do
		if [ "${what#/}" != "$what" ]; then
			[ -e "$what" ] && continue
		else
			command -v "$what" >/dev/null 2>&1 && continue
		fi
		missing+=("$pkg")
		break
	done
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
	echo "deps.sh: missing: ${missing[*]} (Debian package names; this machine has no apt-get: install their equivalents)" >&2
	exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "deps.sh: missing Debian packages: run sudo apt-get install -y ${missing[*]}" >&2
	exit 1
fi
log=${TMPDIR:-/tmp}/istio-pod-network-controller-deps.log
echo "deps.sh: installing Debian packages: ${missing[*]} (log: $log)" >&2
start=$SECONDS
if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
	echo "deps.sh: installing ${missing[*]} failed; the end of $log:" >&2
	tail -n 20 "$log" >&2
	exit 1
fi
echo "deps.sh: installed in $((SECONDS - start)) s" >&2
