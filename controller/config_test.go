package controller

import (
	"errors"
	"flag"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
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
		NodeConfig: NodeConfig{Kubeconfig: "/etc/kube.conf", WaitContainerName: "istio-pod-network-wait", IPTablesBackend: "auto",
			Discovery: "netns,cgroup,ip", HostProc: "/proc", NetnsDirs: "/var/run/netns,/run/netns",
			LockDir: "/var/run/istio-pod-network-controller/locks"},
		NodeName: "node-a", DriftPeriod: 60 * time.Second, MetricsAddress: ":9402", HealthAddress: ":9403",
		KubeAPIQPS: 50, KubeAPIBurst: 100, Workers: 8,
	}
	if cfg != want {
		t.Fatalf("defaults\n got %+v\nwant %+v", cfg, want)
	}
	opts := cfg.FinderOptions()
	if !slices.Equal(opts.Strategies, []netns.Strategy{netns.StrategyNamed, netns.StrategyProcUID, netns.StrategyProcIP}) ||
		opts.ProcDir != "/proc" || !slices.Equal(opts.NetnsDirs, []string{"/var/run/netns", "/run/netns"}) || !opts.Cache {
		t.Fatalf("finder options %+v", opts)
	}
	if cfg.Backend() != "" {
		t.Fatalf("auto backend = %q", cfg.Backend())
	}

	// Flags win over the environment.
	cfg = parse(t, env(map[string]string{"NODE_NAME": "node-a"}), "--node-name=node-b", "--discovery=cgroup, netns",
		"--iptables-backend=legacy", "--host-proc=/host/proc", "--netns-dirs=/host/run/netns", "--workers=8")
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	opts = cfg.FinderOptions()
	if cfg.NodeName != "node-b" || cfg.Backend() != netsetup.BackendLegacy || cfg.Workers != 8 ||
		!slices.Equal(opts.Strategies, []netns.Strategy{netns.StrategyProcUID, netns.StrategyNamed}) ||
		opts.ProcDir != "/host/proc" || !slices.Equal(opts.NetnsDirs, []string{"/host/run/netns"}) {
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
		"metrics no port":   {[]string{"--metrics-address=localhost"}, `flag --metrics-address: invalid value "localhost": want host:port`},
		"health bad port":   {[]string{"--health-address=:99999"}, `flag --health-address: invalid value ":99999": port "99999" is not a number 0-65535`},
		"health port 0":     {[]string{"--health-address=:0"}, `flag --health-address: invalid value ":0": port 0 picks a random port`},
		"same addresses":    {[]string{"--health-address=:9402"}, `flag --health-address: invalid value ":9402": same as --metrics-address`},
		"backend":           {[]string{"--iptables-backend=nftables"}, `flag --iptables-backend: invalid value "nftables": want auto, legacy or nft`},
		"discovery unknown": {[]string{"--discovery=netns,proc"}, `flag --discovery: invalid value "netns,proc": unknown strategy "proc": want netns, cgroup or ip`},
		"discovery twice":   {[]string{"--discovery=ip,ip"}, `flag --discovery: invalid value "ip,ip": strategy "ip" listed twice`},
		"discovery empty":   {[]string{"--discovery="}, `flag --discovery: invalid value "": empty element`},
		"relative proc":     {[]string{"--host-proc=host/proc"}, `flag --host-proc: invalid value "host/proc": want an absolute path`},
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
