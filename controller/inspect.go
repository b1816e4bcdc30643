package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/nft"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// LiveReader reads and checks the live rules of a namespace, for inspect.
type LiveReader interface {
	Verify(ctx context.Context, ns Namespace, key string, cfg *rules.Config) (netsetup.Result, error)
	Programmed(ctx context.Context, ns Namespace, key string) (bool, error)
	Live(ctx context.Context, ns Namespace, key string, families []rules.Family) (map[rules.Family]string, error)
}

// NftablesLister lists the live nftables tables of ours in a namespace, for inspect of a pod of
// the nftables backend (see nft.Applier.Live): nft text for the rules of cfg's rule set, a marker
// naming the expressions of any other rule.
type NftablesLister interface {
	NftablesLive(ctx context.Context, ns Namespace, key string, cfg *rules.Config) (string, error)
}

// Verdict is inspect's conclusion about one pod.
type Verdict string

// Verdicts, with their exit codes (see ExitCode).
const (
	// VerdictOK: released for the pod's current namespace, and the live rules are the released ones.
	VerdictOK Verdict = "OK"
	// VerdictDrift: released for this namespace, but the live rules differ from the released ones.
	VerdictDrift Verdict = "DRIFT"
	// VerdictNotProgrammed: not released (status pending, failed or absent).
	VerdictNotProgrammed Verdict = "NOT PROGRAMMED"
	// VerdictStaleNamespace: released for another namespace (the sandbox was re-created).
	VerdictStaleNamespace Verdict = "STALE NAMESPACE"
	// VerdictSpecChanged: the traffic configuration changed after release (rules are fixed at
	// release: restart the pod to apply it).
	VerdictSpecChanged Verdict = "SPEC CHANGED"
)

// Exit codes of inspect.
const (
	ExitOK             = 0
	ExitError          = 1 // the pod or its namespace could not be inspected
	ExitUsage          = 2 // bad flags or arguments
	ExitDrift          = 3
	ExitNotProgrammed  = 4
	ExitStaleNamespace = 5
	ExitSpecChanged    = 6
)

// ExitCode is the exit status inspect ends with for v.
func (v Verdict) ExitCode() int {
	switch v {
	case VerdictOK:
		return ExitOK
	case VerdictDrift:
		return ExitDrift
	case VerdictNotProgrammed:
		return ExitNotProgrammed
	case VerdictStaleNamespace:
		return ExitStaleNamespace
	case VerdictSpecChanged:
		return ExitSpecChanged
	}
	return ExitError
}

// Inspection is what inspect found out about one pod.
type Inspection struct {
	Pod         *corev1.Pod
	Annotations map[string]string // the controller's annotations
	Skip        string            // why the controller would not work on the pod now ("" = it would)

	Spec      spec
	Payloads  map[rules.Family]string // the rules the configuration implies, per family (iptables backend)
	NftRules  string                  // the rules the configuration implies as nft text (nftables backend)
	Namespace string                  // path of the namespace found
	NetnsID   string                  // its identity
	NSErr     error                   // the namespace could not be found or identified
	// The live rules of the pod's backend (see inspectBackend): Live or NftLive.
	Live    map[rules.Family]string // iptables-save per family (iptables backend)
	NftLive string                  // the listing of our inet tables (nftables backend)
	LiveErr error
	// VerifyErr is the check of the live rules against the current configuration (nil: they match).
	VerifyErr error
	// Programmed: some rules of ours are live.
	Programmed bool
	// Record is the release record in the namespace as stored (lo's alias; "" for none), read
	// when Inspect was given a RecordReader (HasRecord); RecordErr is why it could not be read.
	Record    string
	RecordErr error
	HasRecord bool

	Verdict     Verdict
	Explanation string
	Err         error // no verdict could be reached
}

// Inspect gathers the facts about pod on this node and decides the verdict. It never changes
// anything.
func Inspect(ctx context.Context, pod *corev1.Pod, waitContainer string, finder Finder, live LiveReader, records RecordReader) *Inspection {
	in := &Inspection{Pod: pod, Annotations: ours(pod)}
	backend, live, lister := inspectBackend(in.Annotations, live)
	in.Spec = evaluate(pod, podconfig.PodIPs(pod), backend)
	in.Skip = skipReason(pod, pod.Spec.NodeName, waitContainer)
	switch {
	case in.Spec.cfg == nil:
	case backend == contract.BackendNftables:
		if rs, err := nft.Generate(in.Spec.cfg); err == nil {
			in.NftRules = rs.Text()
		}
	default:
		rs, _ := rules.Generate(in.Spec.cfg)
		in.Payloads = map[rules.Family]string{}
		for _, f := range rs.Families() {
			in.Payloads[f] = rs.Payload(f)
		}
	}
	key := string(pod.UID)
	if ips := podconfig.PodIPs(pod); len(ips) == 0 {
		in.NSErr = errors.New("the pod has no IP yet")
	} else if ns, err := finder.Find(ctx, key, ips); err != nil {
		in.NSErr = err
	} else {
		defer ns.Close()
		in.Namespace = ns.Path()
		if id, err := ns.ID(); err != nil {
			in.NSErr = err
		} else {
			in.NetnsID = id.String()
		}
		switch {
		case backend != contract.BackendNftables:
			in.Live, in.LiveErr = live.Live(ctx, ns, key, []rules.Family{rules.IPv4, rules.IPv6})
		case lister == nil:
			in.LiveErr = errors.New("no nftables listing")
		default:
			in.NftLive, in.LiveErr = lister.NftablesLive(ctx, ns, key, in.Spec.cfg)
		}
		in.Programmed, _ = live.Programmed(ctx, ns, key)
		if in.Spec.cfg != nil {
			_, in.VerifyErr = live.Verify(ctx, ns, key, in.Spec.cfg)
		}
		if records != nil {
			in.HasRecord = true
			in.Record, in.RecordErr = records.Read(ns)
		}
	}
	in.Verdict, in.Explanation, in.Err = decide(in)
	return in
}

// decide is the verdict logic (pure; unit-tested).
func decide(in *Inspection) (Verdict, string, error) {
	ann := in.Annotations
	status := contract.Status(ann[contract.KeyStatus])
	switch status {
	case contract.StatusReady:
	case "":
		why := "the controller has not annotated the pod"
		if in.Skip != "" {
			why += " (it does not work on it now: " + in.Skip + ")"
		}
		return VerdictNotProgrammed, why, nil
	default:
		return VerdictNotProgrammed, fmt.Sprintf("status %s: %s", status, ann[contract.KeyReason]), nil
	}
	if in.NSErr != nil {
		return "", "", fmt.Errorf("released for network namespace %s, but the pod's current namespace cannot be found: %w", ann[contract.KeyNetns], in.NSErr)
	}
	if in.NetnsID != ann[contract.KeyNetns] {
		return VerdictStaleNamespace, fmt.Sprintf("released for network namespace %s, but the pod's namespace is now %s (%s): the sandbox was re-created and the controller has not programmed it yet",
			ann[contract.KeyNetns], in.NetnsID, in.Namespace), nil
	}
	verifyBroken := in.VerifyErr != nil && !errors.Is(in.VerifyErr, netsetup.ErrDrift)
	if in.Spec.cfg == nil || in.Spec.hash != ann[contract.KeyRules] {
		var live string
		switch {
		case in.Spec.cfg != nil && in.VerifyErr == nil:
			live = "the live rules are those of the current configuration (the rules annotation lags behind)"
		case in.Programmed:
			live = "rules are live (the released ones cannot be checked without the released configuration: the controller checks them while it runs)"
		default:
			live = "NO rules are live: the controller applies the current configuration's rules"
		}
		return VerdictSpecChanged, fmt.Sprintf("released with rules %s, the configuration now gives %s; rules are fixed at release: restart the pod to apply the change; %s",
			ann[contract.KeyRules], in.Spec.describe(), live), nil
	}
	switch {
	case verifyBroken:
		return "", "", fmt.Errorf("check the live rules: %w", in.VerifyErr)
	case in.VerifyErr != nil:
		return VerdictDrift, fmt.Sprintf("the live rules differ from the released rules %s: %v (the controller restores them at its next drift check)", ann[contract.KeyRules], in.VerifyErr), nil
	}
	return VerdictOK, fmt.Sprintf("network namespace %s holds the released rules %s", in.NetnsID, ann[contract.KeyRules]), nil
}

// ExitCode is the exit status for the inspection.
func (in *Inspection) ExitCode() int {
	if in.Err != nil {
		return ExitError
	}
	return in.Verdict.ExitCode()
}

// Write prints the inspection for an admin.
func (in *Inspection) Write(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	pod := in.Pod
	p("Pod:          %s/%s (uid %s, node %s)\n", pod.Namespace, pod.Name, pod.UID, pod.Spec.NodeName)
	p("IPs:          %v\n", podconfig.PodIPs(pod))
	if in.Skip != "" {
		p("Selection:    the controller does not work on this pod now: %s\n", in.Skip)
	}
	p("Annotations:\n")
	for _, k := range contract.Keys {
		v, ok := in.Annotations[k]
		if !ok {
			v = "-"
		}
		p("  %-10s %s\n", strings.TrimPrefix(k, contract.Prefix), v)
	}
	p("Configuration: %s\n", in.Spec.describe())
	for _, f := range []rules.Family{rules.IPv4, rules.IPv6} {
		if payload, ok := in.Payloads[f]; ok {
			p("  # %s rules the configuration implies\n%s", f, indent(payload, "  "))
		}
	}
	if in.NftRules != "" {
		p("  # nftables rules the configuration implies (nft -f text)\n%s", indent(in.NftRules, "  "))
	}
	switch {
	case in.NSErr != nil:
		p("Namespace:    %s %s: %v\n", in.Namespace, in.NetnsID, in.NSErr)
	default:
		p("Namespace:    %s (%s)\n", in.NetnsID, in.Namespace)
	}
	if in.LiveErr != nil {
		p("Live rules:   cannot read them: %v\n", in.LiveErr)
	}
	for _, f := range []rules.Family{rules.IPv4, rules.IPv6} {
		if text, ok := in.Live[f]; ok {
			p("  # %s live rules (iptables-save)\n%s", f, indent(text, "  "))
		}
	}
	if in.NftLive != "" {
		p("Live rules (nftables, inet tables istio-proxy-*):\n%s", indent(in.NftLive, "  "))
	}
	if in.HasRecord {
		p("Release record: %s\n", in.describeRecord())
	}
	if in.Err != nil {
		p("Verdict:      none: %v\n", in.Err)
		return
	}
	p("Verdict:      %s: %s\n", in.Verdict, in.Explanation)
}

func indent(text, prefix string) string {
	if text == "" {
		return prefix + "(empty)\n"
	}
	var b strings.Builder
	for line := range strings.Lines(text) {
		b.WriteString(prefix + line)
	}
	if !strings.HasSuffix(text, "\n") {
		b.WriteString("\n")
	}
	return b.String()
}
