package controller

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
)

// Defaults of the command line (see docs/controller.md).
const (
	DefaultWaitContainerName = "istio-pod-network-wait"
	DefaultDriftPeriod       = 60 * time.Second
	DefaultMetricsAddress    = ":9402"
	DefaultHealthAddress     = ":9403"
	DefaultDiscovery         = "named,cni-cache,proc-uid,proc-ip"
	DefaultHostProc          = "/proc"
	DefaultCNIResultsDir     = "/var/lib/cni/results"
	DefaultNetnsDirs         = "/var/run/netns,/run/netns"
	DefaultLockDir           = "/var/run/istio-pod-network-controller/locks"
	DefaultKubeAPIQPS        = 50
	DefaultKubeAPIBurst      = 100
	DefaultWorkers           = 8
)

// NodeConfig is what every subcommand that works on this node's namespaces needs (run, inspect).
type NodeConfig struct {
	Kubeconfig        string // empty: in-cluster
	WaitContainerName string
	IPTablesBackend   string // auto, legacy or nft
	RulesBackend      string // iptables or nftables (contract.Backend)
	Discovery         string // comma list of netns.Strategy names (or their deprecated aliases)
	HostProc          string
	NetnsDirs         string // comma list
	CNIResultsDir     string
	LockDir           string
}

// Config is the configuration of the run subcommand.
type Config struct {
	NodeConfig
	NodeName       string
	DriftPeriod    time.Duration
	MetricsAddress string
	HealthAddress  string
	KubeAPIQPS     float64
	KubeAPIBurst   int
	Workers        int
	ReleaseRecord  bool // write the release record into each programmed namespace
	LocalDiscovery bool // watch CNIResultsDir for new sandboxes
	Endpoints      EndpointConfig
}

// DefaultNodeConfig returns the defaults, with KUBECONFIG from getenv.
func DefaultNodeConfig(getenv func(string) string) NodeConfig {
	return NodeConfig{
		Kubeconfig:        getenv("KUBECONFIG"),
		WaitContainerName: DefaultWaitContainerName,
		IPTablesBackend:   "auto",
		RulesBackend:      string(contract.BackendIPTables),
		Discovery:         DefaultDiscovery,
		HostProc:          DefaultHostProc,
		NetnsDirs:         DefaultNetnsDirs,
		CNIResultsDir:     DefaultCNIResultsDir,
		LockDir:           DefaultLockDir,
	}
}

// DefaultConfig returns the defaults, with NODE_NAME and KUBECONFIG from getenv.
func DefaultConfig(getenv func(string) string) Config {
	return Config{
		NodeConfig:     DefaultNodeConfig(getenv),
		NodeName:       getenv("NODE_NAME"),
		DriftPeriod:    DefaultDriftPeriod,
		MetricsAddress: DefaultMetricsAddress,
		HealthAddress:  DefaultHealthAddress,
		KubeAPIQPS:     DefaultKubeAPIQPS,
		KubeAPIBurst:   DefaultKubeAPIBurst,
		Workers:        DefaultWorkers,
		ReleaseRecord:  true,
		LocalDiscovery: true,
		Endpoints:      DefaultEndpointConfig(),
	}
}

// AddFlags registers the node flags on fs, with c's values as defaults. A deprecated name (a
// --discovery alias) prints a warning to fs.Output() when it is parsed.
func (c *NodeConfig) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Kubeconfig, "kubeconfig", c.Kubeconfig, "kubeconfig file (env KUBECONFIG); empty: in-cluster configuration")
	fs.StringVar(&c.WaitContainerName, "wait-container-name", c.WaitContainerName, "name of the wait init container that marks the pods to program")
	fs.StringVar(&c.IPTablesBackend, "iptables-backend", c.IPTablesBackend, "iptables backend: auto (the node's), legacy or nft")
	fs.StringVar(&c.RulesBackend, "rules-backend", c.RulesBackend, "rules backend of the pods not released yet: iptables (Istio's istio-init rules) "+
		"or nftables (Istio's native nftables rules, values.global.nativeNftables; over netlink, no nft binary); released pods keep theirs")
	fs.Var(&discoveryValue{p: &c.Discovery, fs: fs}, "discovery", "namespace discovery strategies, in order: comma list of "+
		"named (named namespaces by pod IP), cni-cache (the runtime's CNI result records of the pod UID; proof), "+
		"proc-uid (/proc scan for the pod UID's cgroups; proof, needs CAP_SYS_PTRACE), proc-ip (/proc scan by pod IP; needs CAP_SYS_PTRACE); "+
		"at least one of cni-cache, proc-uid (the old names netns, cgroup, ip are deprecated aliases of named, proc-uid, proc-ip)")
	fs.StringVar(&c.HostProc, "host-proc", c.HostProc, "the host's /proc")
	fs.StringVar(&c.NetnsDirs, "netns-dirs", c.NetnsDirs, "comma list of directories holding named network namespaces")
	fs.StringVar(&c.CNIResultsDir, "cni-results-dir", c.CNIResultsDir, "libcni's result cache (the runtime's root-owned record of each sandbox's netns), read by the cni-cache strategy")
	fs.StringVar(&c.LockDir, "lock-dir", c.LockDir, "writable directory for the per-pod xtables lock files")
}

// AddFlags registers the run flags on fs, with c's values as defaults.
func (c *Config) AddFlags(fs *flag.FlagSet) {
	c.NodeConfig.AddFlags(fs)
	fs.StringVar(&c.NodeName, "node-name", c.NodeName, "name of this node (env NODE_NAME; required)")
	fs.DurationVar(&c.DriftPeriod, "drift-period", c.DriftPeriod, "how often the rules of every released pod are verified")
	fs.StringVar(&c.MetricsAddress, "metrics-bind-address", c.MetricsAddress, "host:port serving /metrics")
	fs.StringVar(&c.HealthAddress, "health-probe-bind-address", c.HealthAddress, "host:port serving /healthz and /readyz")
	deprecatedAlias(fs, "metrics-address", "metrics-bind-address")
	deprecatedAlias(fs, "health-address", "health-probe-bind-address")
	c.Endpoints.AddFlags(fs)
	fs.Float64Var(&c.KubeAPIQPS, "kube-api-qps", c.KubeAPIQPS, "queries per second to the API server")
	fs.IntVar(&c.KubeAPIBurst, "kube-api-burst", c.KubeAPIBurst, "burst of queries to the API server")
	fs.IntVar(&c.Workers, "workers", c.Workers, "pods processed in parallel")
	fs.BoolVar(&c.ReleaseRecord, "release-record", c.ReleaseRecord, "also write the release record (lo's alias) into each pod's namespace once its rules are verified, "+
		"which the wait container reads without the API server; false: annotations only")
	fs.BoolVar(&c.LocalDiscovery, "local-discovery", c.LocalDiscovery, "watch --cni-results-dir for new sandboxes and program them without waiting "+
		"for the pod IP in the API; false: pods are found through the API server only")
}

// FlagError is an invalid flag value.
type FlagError struct {
	Flag   string
	Value  string
	Reason string
}

func (e *FlagError) Error() string {
	return fmt.Sprintf("flag --%s: invalid value %q: %s", e.Flag, e.Value, e.Reason)
}

// Validate checks every node flag; the error joins one *FlagError per bad flag.
func (c *NodeConfig) Validate() error {
	var errs []error
	bad := func(flag, value, reason string) { errs = append(errs, &FlagError{flag, value, reason}) }
	if msgs := validation.IsDNS1123Label(c.WaitContainerName); len(msgs) > 0 {
		bad("wait-container-name", c.WaitContainerName, "not a container name: "+strings.Join(msgs, "; "))
	}
	if _, err := netsetup.ParseBackend(c.IPTablesBackend); err != nil {
		bad("iptables-backend", c.IPTablesBackend, "want auto, legacy or nft")
	}
	if _, err := contract.ParseBackend(c.RulesBackend); err != nil {
		bad("rules-backend", c.RulesBackend, "want iptables or nftables")
	}
	if s, err := c.Strategies(); err != nil {
		bad("discovery", c.Discovery, err.Error())
	} else if err := (netns.Options{Strategies: s}).Validate(); err != nil {
		bad("discovery", c.Discovery, err.Error())
	}
	if !filepath.IsAbs(c.HostProc) {
		bad("host-proc", c.HostProc, "want an absolute path")
	}
	if !filepath.IsAbs(c.CNIResultsDir) {
		bad("cni-results-dir", c.CNIResultsDir, "want an absolute path")
	}
	if len(splitList(c.NetnsDirs)) == 0 {
		bad("netns-dirs", c.NetnsDirs, "empty: list at least one directory (turn named namespaces off with --discovery)")
	}
	for _, d := range splitList(c.NetnsDirs) {
		if !filepath.IsAbs(d) {
			bad("netns-dirs", c.NetnsDirs, fmt.Sprintf("%q is not an absolute path", d))
			break
		}
	}
	if !filepath.IsAbs(c.LockDir) {
		bad("lock-dir", c.LockDir, "want an absolute path")
	}
	return errors.Join(errs...)
}

// Validate checks every run flag; the error joins one *FlagError per bad flag.
func (c *Config) Validate() error {
	var errs []error
	if err := c.NodeConfig.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Endpoints.Validate(); err != nil {
		errs = append(errs, err)
	}
	bad := func(flag, value, reason string) { errs = append(errs, &FlagError{flag, value, reason}) }
	switch msgs := validation.IsDNS1123Subdomain(c.NodeName); {
	case c.NodeName == "":
		bad("node-name", c.NodeName, "required (or set NODE_NAME)")
	case len(msgs) > 0:
		bad("node-name", c.NodeName, "not a node name: "+strings.Join(msgs, "; "))
	}
	if c.DriftPeriod < time.Second {
		bad("drift-period", c.DriftPeriod.String(), "want at least 1s")
	}
	if err := validAddress(c.MetricsAddress); err != nil {
		bad("metrics-bind-address", c.MetricsAddress, err.Error())
	}
	if err := validAddress(c.HealthAddress); err != nil {
		bad("health-probe-bind-address", c.HealthAddress, err.Error())
	} else if c.HealthAddress == c.MetricsAddress {
		bad("health-probe-bind-address", c.HealthAddress, "same as --metrics-bind-address")
	}
	if !(c.KubeAPIQPS > 0 && c.KubeAPIQPS <= 10000) {
		bad("kube-api-qps", strconv.FormatFloat(c.KubeAPIQPS, 'g', -1, 64), "want more than 0 and at most 10000")
	}
	if c.KubeAPIBurst < 1 || c.KubeAPIBurst > 100000 {
		bad("kube-api-burst", strconv.Itoa(c.KubeAPIBurst), "want 1 to 100000")
	}
	if c.Workers < 1 || c.Workers > 64 {
		bad("workers", strconv.Itoa(c.Workers), "want 1 to 64")
	}
	return errors.Join(errs...)
}

// Backend returns the --iptables-backend choice ("" for auto). Call after Validate.
func (c *NodeConfig) Backend() netsetup.Backend {
	b, _ := netsetup.ParseBackend(c.IPTablesBackend)
	return b
}

// Strategies maps --discovery to the netns package's strategies, its deprecated aliases replaced
// (netns.Options.Validate then refuses duplicates and a list without evidence).
func (c *NodeConfig) Strategies() ([]netns.Strategy, error) {
	names, _ := currentStrategyNames(c.Discovery)
	s, err := netns.ParseStrategies(names)
	if inner := errors.Unwrap(err); inner != nil {
		err = inner // the flag error quotes the list already
	}
	return s, err
}

// FinderOptions returns the namespace discovery options. Call after Validate.
func (c *NodeConfig) FinderOptions() netns.Options {
	s, _ := c.Strategies()
	return netns.Options{Strategies: s, ProcDir: c.HostProc, NetnsDirs: splitList(c.NetnsDirs), CNIResultsDir: c.CNIResultsDir, Cache: true}
}

func splitList(s string) []string {
	var out []string
	for _, el := range strings.Split(s, ",") {
		if el = strings.TrimSpace(el); el != "" {
			out = append(out, el)
		}
	}
	return out
}

// validAddress accepts host:port with a numeric port, as net.Listen takes it (":9402").
func validAddress(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port, e.g. :9402")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || port[0] == '+' {
		return fmt.Errorf("port %q is not a number 0-65535", port)
	} else if n == 0 {
		return errors.New("port 0 picks a random port: give a fixed one")
	}
	return nil
}
