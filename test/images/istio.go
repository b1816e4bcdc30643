package images

// Istio's images for the real-node istiod test (test/realnode/istiod_linux_test.go). They are not
// the project's images (All does not list them, the Dockerfile has no stage for them): Istio's
// istiod chart and injector refer to them as <global.hub>/pilot:<global.tag> and
// <global.hub>/proxyv2:<global.tag>, so they carry Istio's names, users and entrypoints.

// Istiod is Istio's control plane as Istio's pilot Dockerfile packs it: pilot-discovery (built from
// the Go module proxy by `test/tools/build.sh pilot-discovery`) at /usr/local/bin, user 1337:1337.
// Istio's base is distroless; scratch holds what pilot-discovery reads in-cluster (nothing).
var Istiod = Spec{
	Target:     "istiod",
	Name:       "pilot",
	Comment:    []string{"Istio's istiod (pilot-discovery), for the real-node istiod test."},
	Files:      []File{{Binary: "pilot-discovery", Path: "/usr/local/bin/pilot-discovery"}},
	User:       "1337:1337",
	Entrypoint: []string{"/usr/local/bin/pilot-discovery"},
}

// ProxyStandin stands in for Istio's proxyv2 image (no Envoy build can be had here): its entrypoint
// /usr/local/bin/pilot-agent is the stand-in binary (test/realnode/standin), which serves
// istio-proxy's ports for `proxy sidecar ...` and runs Istio's real pilot-agent, at
// /usr/local/bin/istio-pilot-agent, for `istio-iptables ...` (istio-init). Like Istio's image it
// holds iptables (Istio's base is Debian's iptables too); the base is the controller's, so its root
// file system cache is shared.
var ProxyStandin = Spec{
	Target: "proxyv2-standin",
	Name:   "proxyv2",
	Comment: []string{"A stand-in for Istio's proxyv2: no Envoy; Istio's own pilot-agent for istio-init's",
		"istio-iptables."},
	Base: Controller.Base,
	Files: []File{
		{Binary: "standin", Path: "/usr/local/bin/pilot-agent"},
		{Binary: "pilot-agent", Path: "/usr/local/bin/istio-pilot-agent"},
	},
	User:       "1337:1337",
	Entrypoint: []string{"/usr/local/bin/pilot-agent"},
}

// Istio lists Istio's images for Build, with the binaries' names their Files expect in BinDir:
// pilot-discovery and pilot-agent from test/tools/build.sh, standin from test/realnode/standin.
func Istio() []Spec { return []Spec{Istiod, ProxyStandin} }
