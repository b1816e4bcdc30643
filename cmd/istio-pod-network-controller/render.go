package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/nft"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

const renderUsage = `Usage: istio-pod-network-controller render [--backend iptables|nftables] -f POD

Prints the rules Istio would install for the pod manifest POD (YAML or JSON; "-" reads stdin):
a line "# iptables-restore" followed by the IPv4 iptables-restore payload and, when IPv6 rules
apply (the pod's first IP in status.podIPs is IPv6, or ISTIO_DUAL_STACK=true on istio-proxy and
the pod has an IPv6 IP), a line "# ip6tables-restore" followed by the IPv6 payload. With
--backend nftables: Istio's native nftables transaction (istio-iptables --native-nftables), as
nft -f reads it. Needs no privileges and touches nothing.

Exit codes: 0 printed; 2 usage error or invalid pod (the error names the annotation or field and
the value); 1 anything else.
`

// readConfig reads the manifest named by path ("-" for stdin) and maps it to its configuration.
func readConfig(path string, stdin io.Reader) (*rules.Config, error) {
	r, name := stdin, "stdin"
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r, name = f, path
	}
	pod, err := podconfig.ReadPod(r, name)
	if err != nil {
		return nil, err
	}
	return podconfig.FromPod(pod)
}

// podFlags parses the -f flag common to render and apply.
func podFlags(fs *flag.FlagSet) *string {
	return fs.String("f", "", `pod manifest (YAML or JSON), "-" for stdin`)
}

func renderCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, renderUsage) }
	file := podFlags(fs)
	backend := fs.String("backend", "iptables", "rule backend: iptables or nftables")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *backend != "iptables" && *backend != "nftables" {
		fmt.Fprintf(stderr, "render: --backend %q: want iptables or nftables\n", *backend)
		return 2
	}
	if *file == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "render: -f POD is required and takes no other arguments")
		return 2
	}
	cfg, err := readConfig(*file, stdin)
	if err != nil {
		fmt.Fprintln(stderr, "render:", err)
		return 2
	}
	if *backend == "nftables" {
		return renderNftables(cfg, stdout, stderr)
	}
	rs, err := rules.Generate(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "render:", err)
		return 2
	}
	out := "# iptables-restore\n" + rs.Payload(rules.IPv4)
	if cfg.EnableIPv6 {
		out += "# ip6tables-restore\n" + rs.Payload(rules.IPv6)
	}
	if _, err := io.WriteString(stdout, out); err != nil {
		return 1
	}
	return 0
}

func renderNftables(cfg *rules.Config, stdout, stderr io.Writer) int {
	rs, err := nft.Generate(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "render:", err)
		return 2
	}
	if _, err := io.WriteString(stdout, rs.Text()); err != nil {
		return 1
	}
	return 0
}
