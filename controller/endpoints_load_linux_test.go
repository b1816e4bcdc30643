package controller

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"
)

// endpointChildEnv makes the test binary an endpoint server (see TestMain): the controller's
// health endpoint and its TLS metrics endpoint with token authentication, both with the default
// limits, their addresses printed on stdout.
const endpointChildEnv = "IPNC_ENDPOINT_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(endpointChildEnv) != "" {
		os.Exit(runEndpointChild())
	}
	os.Exit(m.Run())
}

func runEndpointChild() int {
	ctx := klog.NewContext(context.Background(), klog.Background())
	tlsCfg, err := metricsTLS(klog.Background(), "", "", "localhost")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	metrics := Endpoint{Name: "metrics", Address: "127.0.0.1:0", TLS: tlsCfg,
		Handler: NewTokenAuth(fake.NewClientset(), nil).Wrap(MetricsHandler(NewMetrics()))}
	health := Endpoint{Name: "health", Address: "127.0.0.1:0", Handler: HealthHandler(func() bool { return true })}
	s, err := Serve(ctx, DefaultServerLimits(), health, metrics)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("%s %s\n", s.Addr(0), s.Addr(1))
	select {} // until killed
}

// chartMemoryLimit reads resources.limits.memory from the chart's values.yaml.
func chartMemoryLimit(t *testing.T) int64 {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "charts", "istio-pod-network-controller", "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Resources struct {
			Limits struct{ Memory string } `json:"limits"`
		} `json:"resources"`
	}
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	q, err := resource.ParseQuantity(v.Resources.Limits.Memory)
	if err != nil {
		t.Fatalf("chart resources.limits.memory %q: %v", v.Resources.Limits.Memory, err)
	}
	return q.Value()
}

// peakRSS returns VmHWM (the peak resident set) of pid, in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// TestTenThousandIdleConnections opens 10,000 idle connections to the health endpoint (plus 1,000
// to the TLS metrics endpoint) of a server in a child process and checks that /readyz answers
// throughout and that the child's peak RSS stays under the chart's memory limit.
func TestTenThousandIdleConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("11,000 connections and a child process: not in -short (make test-go and test-root run it)")
	}
	const healthConns, metricsConns = 10000, 1000
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	need := uint64(healthConns + metricsConns + 512)
	if lim.Cur < need {
		lim.Cur, lim.Max = need, max(lim.Max, need) // a higher hard limit needs CAP_SYS_RESOURCE
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatalf("raise RLIMIT_NOFILE to %d: %v", need, err)
		}
	}
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), endpointChildEnv+"=1")
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("child's addresses: %v", err)
	}
	var healthAddr, metricsAddr string
	if _, err := fmt.Sscan(line, &healthAddr, &metricsAddr); err != nil {
		t.Fatalf("child's addresses %q: %v", line, err)
	}

	probe := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	readyz := func(after int) {
		t.Helper()
		resp, err := probe.Get("http://" + healthAddr + "/readyz")
		if err != nil {
			t.Fatalf("/readyz after %d idle connections: %v", after, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/readyz after %d idle connections: %d", after, resp.StatusCode)
		}
	}
	conns := make([]net.Conn, 0, healthConns+metricsConns)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	dial := func(addr string, n int) {
		for i := range n {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatalf("connection %d to %s: %v", i, addr, err)
			}
			conns = append(conns, c)
			if (i+1)%1000 == 0 {
				readyz(len(conns))
			}
		}
	}
	dial(healthAddr, healthConns)
	dial(metricsAddr, metricsConns)
	// A TLS client that completes its handshake and then idles is closed for new ones too.
	tc, err := tls.Dial("tcp", metricsAddr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("TLS handshake with the metrics endpoint at the cap: %v", err)
	}
	conns = append(conns, tc)
	readyz(len(conns))

	peak, limit := peakRSS(t, child.Process.Pid), chartMemoryLimit(t)
	t.Logf("child peak RSS %d MiB with %d idle connections (chart limit %d MiB)", peak>>20, len(conns), limit>>20)
	if raceEnabled {
		t.Log("race detector on: its shadow memory is not the binary's, RSS not compared with the limit")
		return
	}
	if peak >= limit {
		t.Fatalf("peak RSS %d bytes, at or over the chart's memory limit %d", peak, limit)
	}
}
