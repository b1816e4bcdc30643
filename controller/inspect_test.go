package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2/ktesting"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/istioapi"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

func TestInspectVerdicts(t *testing.T) {
	base := meshPod("web", "10.1.0.5")
	_, released := specOf(t, base)
	_, edited := specOf(t, meshPod("web", "10.1.0.5", annotate(istioapi.AnnotationExcludeInboundPorts, "8080")))
	readyFor := func(netnsID string) func(*corev1.Pod) {
		return annotate(contract.KeyStatus, "ready", contract.KeyNetns, netnsID, contract.KeyRules, released, contract.KeyFamilies, "ipv4")
	}
	cases := map[string]struct {
		mutate    []func(*corev1.Pod)
		sandbox   uint64 // 0: no namespace found
		live      string
		verifyErr error
		verdict   Verdict
		exit      int
		explains  string
	}{
		"OK": {[]func(*corev1.Pod){readyFor("cookie:4097")}, 4097, released, nil,
			VerdictOK, 0, "network namespace cookie:4097 holds the released rules " + released},
		"DRIFT": {[]func(*corev1.Pod){readyFor("cookie:4097")}, 4097, "", nil,
			VerdictDrift, 3, "the live rules differ from the released rules " + released},
		"NOT PROGRAMMED, never annotated": {nil, 4097, "", nil,
			VerdictNotProgrammed, 4, "the controller has not annotated the pod"},
		"NOT PROGRAMMED, not a candidate": {[]func(*corev1.Pod){func(p *corev1.Pod) { p.Spec.InitContainers = nil }}, 4097, "", nil,
			VerdictNotProgrammed, 4, "it does not work on it now: no wait init container"},
		"NOT PROGRAMMED, pending": {[]func(*corev1.Pod){annotate(contract.KeyStatus, "pending", contract.KeyReason, "xtables lock busy")}, 4097, "", nil,
			VerdictNotProgrammed, 4, "status pending: xtables lock busy"},
		"NOT PROGRAMMED, failed": {[]func(*corev1.Pod){annotate(contract.KeyStatus, "failed", contract.KeyReason, "bad port")}, 4097, "", nil,
			VerdictNotProgrammed, 4, "status failed: bad port"},
		"STALE NAMESPACE": {[]func(*corev1.Pod){readyFor("cookie:4097")}, 5001, released, nil,
			VerdictStaleNamespace, 5, "released for network namespace cookie:4097, but the pod's namespace is now cookie:5001"},
		"SPEC CHANGED, released rules live": {[]func(*corev1.Pod){readyFor("cookie:4097"), annotate(istioapi.AnnotationExcludeInboundPorts, "8080")}, 4097, released, nil,
			VerdictSpecChanged, 6, "released with rules " + released + ", the configuration now gives rules " + edited + "; rules are fixed at release: restart the pod to apply the change; rules are live"},
		"SPEC CHANGED, no rules live": {[]func(*corev1.Pod){readyFor("cookie:4097"), annotate(istioapi.AnnotationExcludeInboundPorts, "8080")}, 4097, "", nil,
			VerdictSpecChanged, 6, "NO rules are live"},
		"SPEC CHANGED, now invalid": {[]func(*corev1.Pod){readyFor("cookie:4097"), annotate(istioapi.AnnotationExcludeInboundPorts, "x")}, 4097, released, nil,
			VerdictSpecChanged, 6, `the configuration now gives refused: traffic.sidecar.istio.io/excludeInboundPorts: invalid value "x"`},
		"error, namespace gone": {[]func(*corev1.Pod){readyFor("cookie:4097")}, 0, "", nil,
			"", 1, ""},
		"error, iptables broken": {[]func(*corev1.Pod){readyFor("cookie:4097")}, 4097, released, errors.New("iptables-save: not found"),
			"", 1, ""},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			pod := meshPod("web", "10.1.0.5", c.mutate...)
			finder, applier := newFakeFinder(), newFakeApplier()
			if c.sandbox != 0 {
				finder.sandbox(string(pod.UID), c.sandbox, "10.1.0.5")
				applier.live[cookie(c.sandbox)] = c.live
			}
			applier.verifyErr = c.verifyErr
			in := Inspect(ctx, pod, DefaultWaitContainerName, finder, applier, nil)
			if in.Verdict != c.verdict || in.ExitCode() != c.exit || !strings.Contains(in.Explanation, c.explains) {
				t.Fatalf("verdict %q (exit %d): %s; err %v\nwant %q (exit %d) explaining %q", in.Verdict, in.ExitCode(), in.Explanation, in.Err, c.verdict, c.exit, c.explains)
			}
			if finder.open != 0 {
				t.Fatal("namespace handle left open")
			}
			var out bytes.Buffer
			in.Write(&out)
			for _, want := range []string{"Pod:          app/web", "Annotations:", "  status", "Configuration:", "Namespace:", "Verdict:"} {
				if !strings.Contains(out.String(), want) {
					t.Fatalf("output lacks %q:\n%s", want, out.String())
				}
			}
			if c.exit == 1 && !strings.Contains(out.String(), "Verdict:      none: ") {
				t.Fatalf("an error is no verdict:\n%s", out.String())
			}
		})
	}
}

func TestInspectPrintsImpliedAndLiveRules(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	pod := meshPod("web", "fd00::5")
	finder, applier := newFakeFinder(), newFakeApplier()
	finder.sandbox(string(pod.UID), 4097, "fd00::5")
	in := Inspect(ctx, pod, DefaultWaitContainerName, finder, applier, nil)
	var out bytes.Buffer
	in.Write(&out)
	for _, want := range []string{
		"  # ipv4 rules the configuration implies\n  * nat\n",
		"  # ipv6 rules the configuration implies\n  * nat\n",
		"  -A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN\n",
		"  # ipv4 live rules (iptables-save)\n  # rules \n",
		"Verdict:      NOT PROGRAMMED: the controller has not annotated the pod\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestVerdictExitCodesAreDistinct(t *testing.T) {
	seen := map[int]Verdict{ExitError: "error", ExitUsage: "usage"}
	for _, v := range []Verdict{VerdictOK, VerdictDrift, VerdictNotProgrammed, VerdictStaleNamespace, VerdictSpecChanged} {
		if other, dup := seen[v.ExitCode()]; dup {
			t.Fatalf("%s and %s share exit code %d", v, other, v.ExitCode())
		}
		seen[v.ExitCode()] = v
	}
}

// fixedRecord is a RecordReader returning a fixed alias (or error) for every namespace.
type fixedRecord struct {
	alias string
	err   error
}

func (f fixedRecord) Read(Namespace) (string, error) { return f.alias, f.err }

func TestInspectShowsTheReleaseRecord(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	_, hash := specOf(t, meshPod("web", "10.1.0.5"))
	ready := annotate(contract.KeyStatus, "ready", contract.KeyNetns, "cookie:4097", contract.KeyRules, hash, contract.KeyFamilies, "ipv4")
	cases := map[string]struct {
		mutate  []func(*corev1.Pod)
		records fixedRecord
		want    string
	}{
		"none": {[]func(*corev1.Pod){ready}, fixedRecord{}, "Release record: none (lo has no alias)"},
		"as the annotations": {[]func(*corev1.Pod){ready}, fixedRecord{alias: "pnc1 status=ready netns=cookie:4097 rules=" + hash + " families=ipv4"},
			"Release record: pnc1 status=ready netns=cookie:4097 rules=" + hash + " families=ipv4: ready for this namespace, as the annotations"},
		"before the patch": {nil, fixedRecord{alias: "pnc1 status=ready netns=cookie:4097 rules=" + hash + " families=ipv4"},
			`ready for this namespace (the rules annotation says "": not patched yet`},
		"another namespace": {[]func(*corev1.Pod){ready}, fixedRecord{alias: "pnc1 status=ready netns=cookie:5001 rules=" + hash + " families=ipv4"},
			"written for network namespace cookie:5001, not this one (cookie:4097): ignored"},
		"unknown version": {[]func(*corev1.Pod){ready}, fixedRecord{alias: "pnc9 whatever"},
			`"pnc9 whatever": ignored by the wait container (release record of an unknown version`},
		"unreadable": {[]func(*corev1.Pod){ready}, fixedRecord{err: errors.New("RTM_GETLINK: permission denied")},
			"Release record: cannot read it: RTM_GETLINK: permission denied"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			pod := meshPod("web", "10.1.0.5", c.mutate...)
			finder, applier := newFakeFinder(), newFakeApplier()
			finder.sandbox(string(pod.UID), 4097, "10.1.0.5")
			in := Inspect(ctx, pod, DefaultWaitContainerName, finder, applier, c.records)
			var out bytes.Buffer
			in.Write(&out)
			if !strings.Contains(out.String(), c.want) {
				t.Fatalf("output lacks %q:\n%s", c.want, out.String())
			}
		})
	}
	// Without a reader (the NRI check) there is no record line.
	pod := meshPod("web", "10.1.0.5", ready)
	finder, applier := newFakeFinder(), newFakeApplier()
	finder.sandbox(string(pod.UID), 4097, "10.1.0.5")
	var out bytes.Buffer
	Inspect(ctx, pod, DefaultWaitContainerName, finder, applier, nil).Write(&out)
	if strings.Contains(out.String(), "Release record") {
		t.Fatalf("a record line without a reader:\n%s", out.String())
	}
}

// TestInspectListsThePodsBackend: a pod released with the nftables backend is listed by the
// nftables backend under its heading (not with iptables-save, whose tables are not its rules),
// also with the node's flag back on iptables; a released iptables pod still gets iptables-save,
// also with the flag on nftables; a pod not released yet gets the node's default backend's.
func TestInspectListsThePodsBackend(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	plain := meshPod("web", "10.1.0.5")
	nftHash, iptHash := hashIn(t, contract.BackendNftables, plain), hashIn(t, contract.BackendIPTables, plain)
	const heading = "Live rules (nftables, inet tables istio-proxy-*):\n"
	// The configuration's rules in the pod's backend's form: nft text for an nftables pod.
	const nftImplied = "  # nftables rules the configuration implies (nft -f text)\n  add table inet istio-proxy-nat\n"
	cases := map[string]struct {
		def     contract.Backend
		mutate  []func(*corev1.Pod)
		want    []string
		notWant []string
	}{
		"nftables pod": {contract.BackendIPTables, []func(*corev1.Pod){annotate(contract.KeyStatus, "ready", contract.KeyNetns, "cookie:4097",
			contract.KeyRules, nftHash, contract.KeyFamilies, "ipv4", contract.KeyBackend, "nftables")},
			[]string{heading + "  table inet istio-proxy-nat {\n  \t# rules " + nftHash + "\n  }\n", "Verdict:      OK: ", nftImplied},
			[]string{"iptables-save", "# rules " + iptHash, "rules the configuration implies\n"}},
		"iptables pod": {contract.BackendNftables, []func(*corev1.Pod){annotate(contract.KeyStatus, "ready", contract.KeyNetns, "cookie:4097",
			contract.KeyRules, iptHash, contract.KeyFamilies, "ipv4")},
			[]string{"  # ipv4 live rules (iptables-save)\n  # rules " + iptHash + "\n", "  # ipv6 live rules (iptables-save)\n", "Verdict:      OK: ",
				"  # ipv4 rules the configuration implies\n  * nat\n"},
			[]string{"nftables", "# rules " + nftHash}},
		"not released, nftables node": {contract.BackendNftables, nil,
			[]string{heading + "  table inet istio-proxy-nat {\n  \t# rules " + nftHash + "\n  }\n", "Verdict:      NOT PROGRAMMED"},
			[]string{"iptables-save"}},
		"invalid configuration": {contract.BackendIPTables, []func(*corev1.Pod){annotate(contract.KeyStatus, "ready", contract.KeyNetns, "cookie:4097",
			contract.KeyRules, nftHash, contract.KeyFamilies, "ipv4", contract.KeyBackend, "nftables", istioapi.AnnotationExcludeInboundPorts, "x")},
			[]string{heading + "  # no valid configuration: no rule is compared with a rule set\n  table inet istio-proxy-nat {\n", "Verdict:      SPEC CHANGED"},
			[]string{"iptables-save"}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			pod := meshPod("web", "10.1.0.5", c.mutate...)
			finder, ipt, nf := newFakeFinder(), newFakeApplier(), newFakeApplier()
			nf.backend = contract.BackendNftables
			finder.sandbox(string(pod.UID), 4097, "10.1.0.5")
			ipt.live[cookie(4097)], nf.live[cookie(4097)] = iptHash, nftHash // each backend's tables hold its rules
			in := Inspect(ctx, pod, DefaultWaitContainerName, finder, Backends{Default: c.def, IPTables: ipt, Nftables: nf}, nil)
			var out bytes.Buffer
			in.Write(&out)
			for _, w := range c.want {
				if !strings.Contains(out.String(), w) {
					t.Fatalf("output lacks %q:\n%s", w, out.String())
				}
			}
			for _, w := range c.notWant {
				if strings.Contains(out.String(), w) {
					t.Fatalf("output has %q:\n%s", w, out.String())
				}
			}
		})
	}

	// The nftables listing cannot be read: said so, and no listing is printed.
	pod := meshPod("web", "10.1.0.5", annotate(contract.KeyStatus, "ready", contract.KeyNetns, "cookie:4097",
		contract.KeyRules, nftHash, contract.KeyFamilies, "ipv4", contract.KeyBackend, "nftables"))
	finder := newFakeFinder()
	finder.sandbox(string(pod.UID), 4097, "10.1.0.5")
	nf := brokenNftLister{newFakeApplier()}
	nf.backend = contract.BackendNftables
	nf.live[cookie(4097)] = nftHash
	var out bytes.Buffer
	Inspect(ctx, pod, DefaultWaitContainerName, finder, Backends{Default: contract.BackendNftables, IPTables: newFakeApplier(), Nftables: nf}, nil).Write(&out)
	if want := "Live rules:   cannot read them: network namespace /run/netns/fake-4097: list the nftables tables: netlink: permission denied\n"; !strings.Contains(out.String(), want) ||
		strings.Contains(out.String(), "Live rules (nftables") {
		t.Fatalf("output lacks %q, or has a listing:\n%s", want, out.String())
	}
}

// brokenNftLister is a fake nftables backend whose listing fails.
type brokenNftLister struct{ *fakeApplier }

func (b brokenNftLister) NftablesLive(_ context.Context, ns Namespace, _ string, _ *rules.Config) (string, error) {
	return "", fmt.Errorf("network namespace %s: list the nftables tables: netlink: permission denied", ns.Path())
}
