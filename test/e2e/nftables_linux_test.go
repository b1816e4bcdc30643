package e2e_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	corev1 "k8s.io/api/core/v1"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/istioapi"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/nft"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

// The scenarios with the nftables backend (--rules-backend=nftables, the chart's
// nativeNftables=true): the same simulated node, the same wait binary (e.bins.Wait, unchanged), the
// controller restarted with the flag. Each asserts real TCP on the proxy ports and that the live
// rules are Istio's nftables tables and no iptables rules.

// nftVerifier checks pods' nftables rules, read-only (no state: one for the package).
var nftVerifier = nft.NewApplier()

// verifier is what the release checks call.
type verifier interface {
	Verify(ctx context.Context, ns netsetup.Namespace, key string, cfg *rules.Config) (netsetup.Result, error)
}

// verifierFor returns the backend that must hold a pod's rules: the one its annotations record
// when they are ready for the namespace netnsID ("" for the pod's current one); released before the
// annotations named the namespace (the release record), the one whose tables are live.
func (e *environment) verifierFor(ctx context.Context, ann map[string]string, netnsID string, ns netsetup.Namespace) verifier {
	if ann[contract.KeyStatus] == string(contract.StatusReady) && (netnsID == "" || ann[contract.KeyNetns] == netnsID) {
		if b, _ := contract.RecordedBackend(ann); b == contract.BackendNftables {
			return nftVerifier
		}
		return e.applier
	}
	if live, err := nftVerifier.Programmed(ctx, ns, ""); err == nil && live {
		return nftVerifier
	}
	return e.applier
}

// useRulesBackend restarts the shared controller with --rules-backend=b; the test's cleanup
// restarts it with the default (iptables).
func (e *environment) useRulesBackend(t *testing.T, b contract.Backend) {
	t.Helper()
	e.restartWith(t, "--rules-backend="+string(b))
	t.Cleanup(func() { e.restartWith(t) })
}

func (e *environment) restartWith(t *testing.T, args ...string) {
	t.Helper()
	if e.ctrl.PID() != 0 {
		if err := e.ctrl.Stop(10 * time.Second); err != nil {
			t.Fatalf("stop the controller: %v", err)
		}
	}
	e.ctrl.SetExtraArgs(args...)
	if err := e.ctrl.Start(context.Background()); err != nil {
		t.Fatalf("start the controller with %q: %v", args, err)
	}
}

// checkNftables checks a released pod programmed with nftables: the annotation records the
// backend, the live tables are exactly its configuration's (read back over netlink), and no
// iptables rules exist in its namespace (legacy tables from /proc, iptables-nft chains).
func (e *environment) checkNftables(t *testing.T, p *corev1.Pod) {
	t.Helper()
	if got := p.Annotations[contract.KeyBackend]; got != string(contract.BackendNftables) {
		t.Errorf("pod %s: %s=%q, want nftables", p.Name, contract.KeyBackend, got)
	}
	e.verifyLive(t, p) // with the recorded backend: nftables
	h, err := e.kl.OpenNetns(p.UID)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if foreign, err := nftVerifier.Foreign(h); err != nil || foreign != "" {
		t.Errorf("pod %s: iptables rules next to the nftables ones: %q %v", p.Name, foreign, err)
	}
	if st, err := e.applier.Live(context.Background(), h, string(p.UID), []rules.Family{rules.IPv4}); err != nil || strings.Contains(st[rules.IPv4], "ISTIO_") {
		t.Errorf("pod %s: iptables-%s-save lists Istio chains (%v):\n%s", p.Name, e.applier.Backend(), err, st[rules.IPv4])
	}
}

// checkIPTables checks a released pod programmed with iptables: no backend annotation, its
// iptables rules verify, and no nftables table of ours exists in its namespace.
func (e *environment) checkIPTables(t *testing.T, p *corev1.Pod) {
	t.Helper()
	if got, ok := p.Annotations[contract.KeyBackend]; ok {
		t.Errorf("pod %s: %s=%q, want none (iptables)", p.Name, contract.KeyBackend, got)
	}
	e.verifyLive(t, p)
	h, err := e.kl.OpenNetns(p.UID)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if live, err := nftVerifier.Programmed(context.Background(), h, ""); err != nil || live {
		t.Errorf("pod %s: nftables tables of ours next to the iptables rules (%v)", p.Name, err)
	}
}

// deleteNftTable deletes one of our tables in the pod's namespace, over netlink.
func (e *environment) deleteNftTable(t *testing.T, p *corev1.Pod, name string) {
	t.Helper()
	h, err := e.kl.OpenNetns(p.UID)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	err = h.Do(func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: name})
		return c.Flush()
	})
	if err != nil {
		t.Fatalf("pod %s: delete table inet %s: %v", p.Name, name, err)
	}
}

// waitRepaired waits until each pod's rules verify again after they were damaged at damaged.
func (e *environment) waitRepaired(t *testing.T, pods []*corev1.Pod, damaged time.Time) {
	t.Helper()
	deadline := damaged.Add(driftPeriod + 5*time.Second)
	for _, p := range pods {
		for !e.liveVerifies(p) {
			if time.Now().After(deadline) {
				t.Fatalf("pod %s: rules not restored %s after the damage (drift period %s)", p.Name, time.Since(damaged).Round(time.Millisecond), driftPeriod)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// annotated waits until the pods named (all of ns for nil) are released and annotated ready for
// their current namespace (the release record may release a pod before the annotation is
// written), and returns those pods.
func (e *environment) annotated(t *testing.T, ns string, want []string, what string) map[string]*corev1.Pod {
	t.Helper()
	all := e.waitPods(t, ns, want, what, releaseTimeout, func(p *corev1.Pod) bool {
		sb, ok := e.kl.Sandbox(p.UID)
		return released(p) && ok && p.Annotations[contract.KeyStatus] == string(contract.StatusReady) && p.Annotations[contract.KeyNetns] == sb.NetnsID
	})
	if want == nil {
		return all
	}
	out := map[string]*corev1.Pod{}
	for _, n := range want {
		out[n] = all[n]
	}
	return out
}

// trafficOf proves the redirect of a released pod with real TCP on each of its IPs.
func (e *environment) trafficOf(t *testing.T, p *corev1.Pod, check func(*testing.T, *netns.Handle, netip.Addr, uint32)) {
	t.Helper()
	h, err := e.kl.OpenNetns(p.UID)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, ip := range p.Status.PodIPs {
		t.Run("traffic "+p.Name+" "+ip.IP, func(t *testing.T) { // its listeners close at its end
			check(t, h, netip.MustParseAddr(ip.IP), harness.DefaultProxyUID)
		})
	}
}

// withIPs returns a copy of p whose status IPs are ips (a released pod's configuration is its
// namespace's addresses: the API may not show them all yet when the release record released it).
func withIPs(p *corev1.Pod, ips []netip.Addr) *corev1.Pod {
	if len(ips) == 0 {
		return p
	}
	c := p.DeepCopy()
	c.Status.PodIP, c.Status.PodIPs = ips[0].String(), nil
	for _, ip := range ips {
		c.Status.PodIPs = append(c.Status.PodIPs, corev1.PodIP{IP: ip.String()})
	}
	return c
}

func TestNftables(t *testing.T) {
	e := setup(t)
	e.useRulesBackend(t, contract.BackendNftables)
	hostBefore := hostNftTables(t)

	t.Run("drift repair", func(t *testing.T) {
		ns := e.namespace(t, "nft-drift", nil)
		e.createPods(t, e.meshPods(ns, names("p", 3)))
		byName := e.annotated(t, ns, nil, "released")
		var pods []*corev1.Pod
		for _, p := range byName {
			e.checkNftables(t, p)
			pods = append(pods, p)
		}
		before := e.metric(t, "istio_pod_network_controller_drift_repairs_total")
		damaged := time.Now()
		for _, p := range pods {
			e.deleteNftTable(t, p, "istio-proxy-nat")
		}
		e.waitRepaired(t, pods, damaged)
		t.Logf("nftables rules of %d pods restored %s after the table was deleted", len(pods), time.Since(damaged).Round(time.Millisecond))
		if after := e.metric(t, "istio_pod_network_controller_drift_repairs_total"); after-before < float64(len(pods)) {
			t.Errorf("drift_repairs_total went from %v to %v, want +%d", before, after, len(pods))
		}
		for _, p := range pods {
			e.checkNftables(t, p)
			e.trafficOf(t, p, e.checkTraffic)
		}
	})

	t.Run("sandbox re-created", func(t *testing.T) {
		ns := e.namespace(t, "nft-recreate", nil)
		e.createPods(t, e.meshPods(ns, []string{"same-ip", "new-ip"}))
		pods := e.annotated(t, ns, nil, "released")
		old := map[string]string{}
		for name, p := range pods {
			sb, _ := e.kl.Sandbox(p.UID)
			old[name] = sb.NetnsID
			if _, err := e.kl.Recreate(context.Background(), p.UID, name == "new-ip"); err != nil {
				t.Fatal(err)
			}
		}
		e.waitPods(t, ns, nil, "released again", releaseTimeout, func(p *corev1.Pod) bool {
			return released(p) && waitStatus(p).RestartCount == 1
		})
		pods = e.annotated(t, ns, nil, "annotated for the new namespace")
		for name, p := range pods {
			if sb, _ := e.kl.Sandbox(p.UID); sb.NetnsID == old[name] {
				t.Errorf("pod %s: still namespace %s", name, sb.NetnsID)
			}
			e.checkNftables(t, p)
			e.trafficOf(t, p, e.checkTraffic)
		}
	})

	t.Run("dual stack", func(t *testing.T) {
		ns := e.namespace(t, "nft-dual", nil)
		e.createPods(t, e.meshPods(ns, []string{"dual"}, harness.DualStack()))
		p := e.annotated(t, ns, []string{"dual"}, "released")["dual"]
		if len(p.Status.PodIPs) != 2 || p.Annotations[contract.KeyFamilies] != contract.FamiliesDual {
			t.Fatalf("pod IPs %v, %s=%q: want both families", p.Status.PodIPs, contract.KeyFamilies, p.Annotations[contract.KeyFamilies])
		}
		if logs := e.kl.WaitLogs(p.UID); !strings.Contains(logs, "families=ipv4,ipv6") {
			t.Errorf("the wait container did not self-test both families:\n%s", logs)
		}
		e.checkNftables(t, p)
		e.trafficOf(t, p, e.checkTraffic)
	})

	t.Run("TPROXY", func(t *testing.T) {
		ns := e.namespace(t, "nft-tproxy", nil)
		e.createPods(t, e.meshPods(ns, []string{"tproxy"}, harness.DualStack(),
			harness.WithAnnotations(map[string]string{istioapi.AnnotationInterceptionMode: "TPROXY"})))
		p := e.annotated(t, ns, []string{"tproxy"}, "released")["tproxy"]
		e.checkNftables(t, p)
		e.trafficOf(t, p, e.checkTProxyTraffic)
	})

	t.Run("burst", func(t *testing.T) {
		ns := e.namespace(t, "nft-burst", nil)
		e.createPods(t, e.meshPods(ns, names("p", burstSize)))
		pods := e.annotated(t, ns, nil, "released")
		e.checkReleasedOnce(t, ns, pods)
		for _, p := range pods {
			e.checkNftables(t, p)
		}
		e.trafficOf(t, pods["p-0"], e.checkTraffic)
		e.trafficOf(t, pods["p-"+strconv.Itoa(burstSize-1)], e.checkTraffic)
	})

	if after := hostNftTables(t); after != hostBefore {
		t.Errorf("the host's nftables tables changed: before %q, after %q", hostBefore, after)
	}
}

// TestNftablesFlagFlip: pods released with iptables keep iptables (rules, hash, annotations, drift
// repair) after the controller restarts with --rules-backend=nftables, and new pods get nftables;
// flipped back, the nftables pods keep nftables.
func TestNftablesFlagFlip(t *testing.T) {
	e := setup(t)
	t.Cleanup(func() { e.restartWith(t) })
	ns := e.namespace(t, "nft-flip", nil)
	e.createPods(t, e.meshPods(ns, names("ipt", 2)))
	old := e.annotated(t, ns, names("ipt", 2), "released")
	for _, p := range old {
		e.checkIPTables(t, p)
	}

	e.restartWith(t, "--rules-backend=nftables")
	e.createPods(t, e.meshPods(ns, names("nft", 2)))
	fresh := e.annotated(t, ns, names("nft", 2), "released")
	for _, p := range fresh {
		e.checkNftables(t, p)
		e.trafficOf(t, p, e.checkTraffic)
	}
	// The iptables pods were verified by the restarted controller (a drift round has passed)
	// and left as they were: same annotations, iptables rules, no nftables tables.
	time.Sleep(driftPeriod + time.Second)
	now := e.annotated(t, ns, names("ipt", 2), "released")
	for name, p := range now {
		if got, want := ours(p.Annotations), ours(old[name].Annotations); !equalMaps(got, want) {
			t.Errorf("pod %s: annotations %v after the flip, were %v", name, got, want)
		}
		e.checkIPTables(t, p)
	}
	// Drift repair of an iptables pod uses iptables.
	p := now["ipt-0"]
	damaged := time.Now()
	e.flushIPTablesNat(t, p)
	e.waitRepaired(t, []*corev1.Pod{p}, damaged)
	e.checkIPTables(t, p)
	e.trafficOf(t, p, e.checkTraffic)

	// Back to iptables: the nftables pods keep nftables, also for drift repair.
	e.restartWith(t)
	q := fresh["nft-0"]
	damaged = time.Now()
	e.deleteNftTable(t, q, "istio-proxy-nat")
	e.waitRepaired(t, []*corev1.Pod{q}, damaged)
	e.checkNftables(t, q)
	e.trafficOf(t, q, e.checkTraffic)
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// flushIPTablesNat flushes and deletes the pod's iptables nat chains and checks that its rules no
// longer verify.
func (e *environment) flushIPTablesNat(t *testing.T, p *corev1.Pod) {
	t.Helper()
	h, err := e.kl.OpenNetns(p.UID)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	tool := "iptables-" + string(e.applier.Backend())
	err = h.Do(func() error {
		for _, args := range [][]string{{"-t", "nat", "-F"}, {"-t", "nat", "-X"}} {
			if out, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
				return fmt.Errorf("%s %v: %v: %s", tool, args, err, out)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := podconfig.FromPod(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.applier.Verify(context.Background(), h, string(p.UID), cfg); err == nil {
		t.Fatalf("pod %s: the flush left the rules intact", p.Name)
	}
}

// checkTProxyTraffic is checkTraffic for a TPROXY pod: inbound is delivered by TPROXY to a
// transparent listener on 15006 (Envoy's inbound listener is transparent in this mode) with the
// original destination as its local address; outbound is redirected to 15001 as in REDIRECT mode.
func (e *environment) checkTProxyTraffic(t *testing.T, h *netns.Handle, podIP netip.Addr, proxyUID uint32) {
	t.Helper()
	e.checkTrafficVia(t, h, podIP, proxyUID, serveTransparent)
}

// serveTransparent is serveIn with IP_TRANSPARENT (IPV6_TRANSPARENT) on the listener.
func serveTransparent(t *testing.T, h *netns.Handle, network string, port int) {
	t.Helper()
	var l net.Listener
	err := h.Do(func() error {
		host, level, opt := "0.0.0.0", syscall.SOL_IP, syscall.IP_TRANSPARENT
		if network == "tcp6" {
			host, level, opt = "::", syscall.SOL_IPV6, 75 // IPV6_TRANSPARENT
		}
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), level, opt, 1) }); err != nil {
				return err
			}
			return serr
		}}
		var err error
		l, err = lc.Listen(context.Background(), network, net.JoinHostPort(host, strconv.Itoa(port)))
		return err
	})
	if err != nil {
		t.Fatalf("listen transparently on %s port %d in %s: %v", network, port, h.Path(), err)
	}
	t.Cleanup(func() { l.Close() })
	go answer(l, strconv.Itoa(port))
}

// hostNftTables lists the host namespace's inet tables named istio-proxy-*: none may appear.
func hostNftTables(t *testing.T) string {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tb := range tables {
		if strings.HasPrefix(tb.Name, "istio-proxy-") {
			out = append(out, tb.Name)
		}
	}
	return strings.Join(out, ",")
}
