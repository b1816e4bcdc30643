package controller

import (
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
)

func env(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

func parse(t *testing.T, getenv func(string) string, args ...string) Config {
	t.Helper()
	cfg := DefaultConfig(getenv)
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cfg.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestConfigDefaultsAndEnv(t *testing.T) {
	cfg := parse(t, env(map[string]string{"NODE_NAME": "node-a", "KUBECONFIG": "/etc/kube.conf"}))
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	want := Config{
		NodeConfig: NodeConfig{Kubeconfig: "/etc/kube.conf", WaitContainerName: "istio-pod-network-wait", IPTablesBackend: "auto", RulesBackend: "iptables",
			Discovery: "named,cni-cache,proc-uid,proc-ip", HostProc: "/proc", NetnsDirs: "/var/run/netns,/run/netns",
			CNIResultsDir: "/var/lib/cni/results", LockDir: "/var/run/istio-pod-network-controller/locks"},
		NodeName: "node-a", DriftPeriod: 60 * time.Second, MetricsAddress: ":9402", HealthAddress: ":9403",
		KubeAPIQPS: 50, KubeAPIBurst: 100, Workers: 8, ReleaseRecord: true, LocalDiscovery: true, Endpoints: EndpointConfig{MetricsSecure: true},
	}
	if cfg != want {
		t.Fatalf("defaults\n got %+v\nwant %+v", cfg, want)
	}
	opts := cfg.FinderOptions()
	if !slices.Equal(opts.Strategies, netns.DefaultStrategies) || opts.CNIResultsDir != netns.DefaultCNIResultsDir ||
		opts.ProcDir != "/proc" || !slices.Equal(opts.NetnsDirs, []string{"/var/run/netns", "/run/netns"}) || !opts.Cache {
		t.Fatalf("finder options %+v", opts)
	}
	if cfg.Backend() != "" || cfg.Rules() != contract.BackendIPTables {
		t.Fatalf("auto backend = %q, rules backend %q", cfg.Backend(), cfg.Rules())
	}
	if cfg := parse(t, env(map[string]string{"NODE_NAME": "node-a"}), "--rules-backend=nftables"); cfg.Validate() != nil || cfg.Rules() != contract.BackendNftables {
		t.Fatalf("--rules-backend=nftables: %q, %v", cfg.Rules(), cfg.Validate())
	}

	// Flags win over the environment.
	cfg = parse(t, env(map[string]string{"NODE_NAME": "node-a"}), "--node-name=node-b", "--discovery=proc-uid, named",
		"--iptables-backend=legacy", "--host-proc=/host/proc", "--netns-dirs=/host/run/netns", "--workers=8",
		"--cni-results-dir=/host/var/lib/cni/results", "--metrics-bind-address=127.0.0.1:9500", "--health-probe-bind-address=:9501")
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	opts = cfg.FinderOptions()
	if cfg.NodeName != "node-b" || cfg.Backend() != netsetup.BackendLegacy || cfg.Workers != 8 ||
		!slices.Equal(opts.Strategies, []netns.Strategy{netns.StrategyProcUID, netns.StrategyNamed}) ||
		opts.ProcDir != "/host/proc" || !slices.Equal(opts.NetnsDirs, []string{"/host/run/netns"}) ||
		opts.CNIResultsDir != "/host/var/lib/cni/results" || cfg.MetricsAddress != "127.0.0.1:9500" || cfg.HealthAddress != ":9501" {
		t.Fatalf("parsed %+v, finder options %+v", cfg, opts)
	}
}

// TestConfigRejectsBadFlags: every bad flag is named, with its value quoted and the reason.
func TestConfigRejectsBadFlags(t *testing.T) {
	cases := map[string]struct {
		args []string
		want string
	}{
		"no node":           {nil, `flag --node-name: invalid value "": required (or set NODE_NAME)`},
		"bad node":          {[]string{"--node-name=Node_A"}, `flag --node-name: invalid value "Node_A": not a node name`},
		"drift zero":        {[]string{"--drift-period=0s"}, `flag --drift-period: invalid value "0s": want at least 1s`},
		"metrics no port":   {[]string{"--metrics-bind-address=localhost"}, `flag --metrics-bind-address: invalid value "localhost": want host:port`},
		"health bad port":   {[]string{"--health-probe-bind-address=:99999"}, `flag --health-probe-bind-address: invalid value ":99999": port "99999" is not a number 0-65535`},
		"health port 0":     {[]string{"--health-probe-bind-address=:0"}, `flag --health-probe-bind-address: invalid value ":0": port 0 picks a random port`},
		"same addresses":    {[]string{"--health-probe-bind-address=:9402"}, `flag --health-probe-bind-address: invalid value ":9402": same as --metrics-bind-address`},
		"old flag name":     {[]string{"--health-address=:9402"}, `flag --health-probe-bind-address: invalid value ":9402": same as --metrics-bind-address`},
		"backend":           {[]string{"--iptables-backend=nftables"}, `flag --iptables-backend: invalid value "nftables": want auto, legacy or nft`},
		"rules backend":     {[]string{"--rules-backend=nft"}, `flag --rules-backend: invalid value "nft": want iptables or nftables`},
		"discovery unknown": {[]string{"--discovery=named,proc"}, `flag --discovery: invalid value "named,proc": unknown strategy "proc" (want named, cni-cache, proc-uid or proc-ip)`},
		"discovery twice":   {[]string{"--discovery=proc-uid,proc-uid"}, `flag --discovery: invalid value "proc-uid,proc-uid": discovery strategies: "proc-uid" listed twice`},
		"alias and name":    {[]string{"--discovery=cgroup,proc-uid"}, `flag --discovery: invalid value "cgroup,proc-uid": discovery strategies: "proc-uid" listed twice`},
		"discovery empty":   {[]string{"--discovery="}, `flag --discovery: invalid value "": unknown strategy ""`},
		"empty element":     {[]string{"--discovery=cni-cache,,named"}, `flag --discovery: invalid value "cni-cache,,named": unknown strategy ""`},
		"no evidence":       {[]string{"--discovery=named"}, `flag --discovery: invalid value "named": discovery strategies [named]: none proves whose a namespace is (an IP is only a hint): add cni-cache or proc-uid`},
		"no evidence alias": {[]string{"--discovery=netns,ip"}, `flag --discovery: invalid value "netns,ip": discovery strategies [named proc-ip]: none proves`},
		"relative proc":     {[]string{"--host-proc=host/proc"}, `flag --host-proc: invalid value "host/proc": want an absolute path`},
		"relative cni":      {[]string{"--cni-results-dir=var/lib/cni/results"}, `flag --cni-results-dir: invalid value "var/lib/cni/results": want an absolute path`},
		"relative netns":    {[]string{"--netns-dirs=/run/netns,netns"}, `flag --netns-dirs: invalid value "/run/netns,netns": "netns" is not an absolute path`},
		"no netns dirs":     {[]string{"--netns-dirs="}, `flag --netns-dirs: invalid value "": empty`},
		"relative lock":     {[]string{"--lock-dir=locks"}, `flag --lock-dir: invalid value "locks": want an absolute path`},
		"qps":               {[]string{"--kube-api-qps=0"}, `flag --kube-api-qps: invalid value "0": want more than 0`},
		"burst":             {[]string{"--kube-api-burst=0"}, `flag --kube-api-burst: invalid value "0": want 1 to 100000`},
		"workers":           {[]string{"--workers=0"}, `flag --workers: invalid value "0": want 1 to 64`},
		"wait name":         {[]string{"--wait-container-name=Wait"}, `flag --wait-container-name: invalid value "Wait": not a container name`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			args := c.args
			if name != "no node" && name != "bad node" {
				args = append([]string{"--node-name=node-a"}, args...)
			}
			cfg := parse(t, env(nil), args...)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
			var fe *FlagError
			if !errors.As(err, &fe) {
				t.Fatalf("%T is not a *FlagError", err)
			}
			if strings.Count(err.Error(), "flag --") != 1 {
				t.Fatalf("more than the one bad flag reported: %v", err)
			}
		})
	}
	t.Run("all bad flags at once", func(t *testing.T) {
		cfg := parse(t, env(nil), "--workers=0", "--lock-dir=x")
		err := cfg.Validate()
		for _, flag := range []string{"--node-name", "--workers", "--lock-dir"} {
			if !strings.Contains(err.Error(), "flag "+flag+":") {
				t.Fatalf("%s missing from %v", flag, err)
			}
		}
	})
}

// TestConfigDeprecatedNames: the previous release's flag and strategy names still work, mean the new
// ones, and each prints a deprecation warning naming its replacement; the new names print none.
func TestConfigDeprecatedNames(t *testing.T) {
	parseOut := func(args ...string) (Config, string) {
		cfg := DefaultConfig(env(map[string]string{"NODE_NAME": "node-a"}))
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		var out strings.Builder
		fs.SetOutput(&out)
		cfg.AddFlags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		return cfg, out.String()
	}
	cfg, out := parseOut("--metrics-address=:9600", "--health-address=127.0.0.1:9601", "--discovery=netns, cgroup,ip,cni-cache")
	if cfg.MetricsAddress != ":9600" || cfg.HealthAddress != "127.0.0.1:9601" {
		t.Errorf("old address flags: metrics %q health %q, want :9600 and 127.0.0.1:9601", cfg.MetricsAddress, cfg.HealthAddress)
	}
	want := []netns.Strategy{netns.StrategyNamed, netns.StrategyProcUID, netns.StrategyProcIP, netns.StrategyCNICache}
	if got := cfg.FinderOptions().Strategies; !slices.Equal(got, want) {
		t.Errorf("old strategy names: %v, want %v", got, want)
	}
	for _, w := range []string{
		"Flag --metrics-address has been deprecated, use --metrics-bind-address instead",
		"Flag --health-address has been deprecated, use --health-probe-bind-address instead",
		`Flag --discovery: strategy "netns" has been deprecated, use "named" instead`,
		`Flag --discovery: strategy "cgroup" has been deprecated, use "proc-uid" instead`,
		`Flag --discovery: strategy "ip" has been deprecated, use "proc-ip" instead`,
	} {
		if !strings.Contains(out, w) {
			t.Errorf("warnings %q miss %q", out, w)
		}
	}
	if n := strings.Count(out, "deprecated"); n != 5 {
		t.Errorf("%d deprecation warnings, want 5:\n%s", n, out)
	}
	if _, out := parseOut("--metrics-bind-address=:9600", "--health-probe-bind-address=:9601", "--discovery=named,cni-cache"); out != "" {
		t.Errorf("current names printed %q, want nothing", out)
	}
}

func TestExpectedRetry(t *testing.T) {
	if !expectedRetry(fmt.Errorf("pod default/web: %w", netns.ErrNotFound)) {
		t.Error("a namespace not there yet should be an expected retry (logged at V(2))")
	}
	for _, err := range []error{netns.ErrNotProven, netns.ErrShared, errors.New("patch: connection refused")} {
		if expectedRetry(err) {
			t.Errorf("%v is not an expected retry: it must be logged as an error", err)
		}
	}
}
