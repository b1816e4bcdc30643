package podconfig

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/istioapi"
)

// apiServerAnnotationLimit is the API server's bound on a pod's annotations, keys and values
// together (apimachinery's TotalAnnotationSizeLimitB).
const apiServerAnnotationLimit = 256 << 10

// list joins n elements made by el.
func list(n int, el func(i int) string) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = el(i)
	}
	return strings.Join(parts, ",")
}

// worstCasePod is the costliest pod the API server admits: every list the controller reads at its
// element limit, of distinct elements of the longest form (so parsing and de-duplication do the
// most work and nothing is refused early), in TPROXY mode on an IPv6 pod, and the rest of the
// 256 KiB filled with spaces around the ports (which the parser must skip). It is refused only by
// the rule total, the last check.
func worstCasePod() *corev1.Pod {
	long6 := func(base int) func(int) string {
		return func(i int) string { return fmt.Sprintf("2001:0db8:%04x:0000:0000:0000:0000:%04x/128", base, i) }
	}
	nic := func(i int) string { return fmt.Sprintf("vnet-%010d", i) }
	ann := map[string]string{
		istioapi.AnnotationInterceptionMode:        "TPROXY",
		istioapi.AnnotationIncludeOutboundIPRanges: list(rules.MaxCIDRs, long6(1)),
		istioapi.AnnotationExcludeOutboundIPRanges: list(rules.MaxCIDRs, long6(2)),
		istioapi.AnnotationExcludeInterfaces:       list(rules.MaxInterfaces, nic),
		istioapi.AnnotationRerouteVirtual:          list(rules.MaxInterfaces, nic),
	}
	portKeys := []string{istioapi.AnnotationIncludeInboundPorts, istioapi.AnnotationExcludeInboundPorts, istioapi.AnnotationIncludeOutboundPorts, istioapi.AnnotationExcludeOutboundPorts}
	used := 0
	for k, v := range ann {
		used += len(k) + len(v)
	}
	for i, key := range portKeys {
		n := rules.MaxPorts
		if key == istioapi.AnnotationExcludeInboundPorts {
			n -= len(alwaysExcludedInbound)
		}
		budget := min((apiServerAnnotationLimit-used)/(len(portKeys)-i)-len(key), MaxValueBytes)
		pad := strings.Repeat(" ", max(0, (budget-n*6)/n))
		ann[key] = list(n, func(j int) string { return pad + fmt.Sprint(10000+j) })
		used += len(key) + len(ann[key])
	}
	return meshPod(ann, "fd00::5", "10.0.0.5")
}

func annotationBytes(pod *corev1.Pod) int {
	n := 0
	for k, v := range pod.Annotations {
		n += len(k) + len(v)
	}
	return n
}

// allocatedBytes returns the bytes fn allocates per call, averaged over runs (TotalAlloc counts
// every allocation, whatever the garbage collector does meanwhile).
func allocatedBytes(runs int, fn func()) uint64 {
	fn() // warm up
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		fn()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(runs)
}

// TestWorstCaseRefused: the worst case the API server admits is refused with the limit it is over,
// naming the annotations, and allocating less than 10 MB (its time is BenchmarkWorstCase's).
func TestWorstCaseRefused(t *testing.T) {
	pod := worstCasePod()
	if n := annotationBytes(pod); n > apiServerAnnotationLimit || n < apiServerAnnotationLimit-1024 {
		t.Fatalf("the worst case holds %d bytes of annotations, want just under %d", n, apiServerAnnotationLimit)
	}
	var err error
	alloc := allocatedBytes(5, func() { _, err = FromPod(pod) })
	var le *rules.LimitError
	if !errors.As(err, &le) || !errors.Is(err, ErrInvalid) || !errors.Is(err, rules.ErrTooLarge) {
		t.Fatalf("worst case: got %v, want a *rules.LimitError", err)
	}
	want := fmt.Sprintf("more than the limit of %d (largest lists: %s has 1024 elements, %s has 1024 elements, %s has 1024 elements)",
		rules.MaxRules, istioapi.AnnotationIncludeOutboundIPRanges, istioapi.AnnotationExcludeOutboundIPRanges, istioapi.AnnotationIncludeInboundPorts)
	if le.Unit != "IPv6 rules" || !strings.HasSuffix(err.Error(), want) {
		t.Fatalf("worst case: got %q, want IPv6 rules ... %q", err, want)
	}
	t.Logf("%d bytes of annotations refused with %d bytes allocated: %v", annotationBytes(pod), alloc, err)
	if alloc > 10<<20 {
		t.Fatalf("refusing the worst case allocated %d bytes, want under 10 MB", alloc)
	}
}

func BenchmarkWorstCase(b *testing.B) {
	pod := worstCasePod()
	b.ReportAllocs()
	b.SetBytes(int64(annotationBytes(pod)))
	start := cpuTime()
	for b.Loop() {
		if _, err := FromPod(pod); !errors.Is(err, rules.ErrTooLarge) {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

// explodingPod is the pod of the exhaustion finding: 15.6 KB of annotations that made Istio's
// generator (and ours before the limits) produce a million rules.
func explodingPod() *corev1.Pod {
	return meshPod(map[string]string{
		istioapi.AnnotationIncludeOutboundIPRanges: list(1000, func(i int) string { return fmt.Sprintf("10.%d.%d.0/24", i/256, i%256) }),
		istioapi.AnnotationRerouteVirtual:          strings.Repeat("net1,", 999) + "net1",
	}, "10.0.0.5")
}

func TestExplodingPodRefused(t *testing.T) {
	pod := explodingPod()
	_, err := FromPod(pod)
	want := istioapi.AnnotationRerouteVirtual + ": 1000 elements, more than the limit of 32"
	if !errors.Is(err, ErrInvalid) || err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
	if alloc := allocatedBytes(5, func() { _, _ = FromPod(pod) }); alloc > 1<<20 {
		t.Fatalf("refusing allocated %d bytes", alloc)
	}
}

// TestAnnotationLimits: each list one element over its limit, and a value over MaxValueBytes, are
// refused naming the annotation, the count and the limit; the rule total names the annotations.
func TestAnnotationLimits(t *testing.T) {
	ports := func(n int) string { return list(n, func(i int) string { return fmt.Sprint(1 + i) }) }
	cidrs := func(n int) string {
		return list(n, func(i int) string { return fmt.Sprintf("10.%d.%d.0/24", i/256, i%256) })
	}
	nics := func(n int) string { return list(n, func(i int) string { return fmt.Sprintf("n%d", i) }) }
	cases := []struct {
		ann  map[string]string
		want string
	}{
		{map[string]string{istioapi.AnnotationIncludeOutboundIPRanges: cidrs(1025)}, istioapi.AnnotationIncludeOutboundIPRanges + ": 1025 elements, more than the limit of 1024"},
		{map[string]string{istioapi.AnnotationExcludeOutboundIPRanges: cidrs(1025)}, istioapi.AnnotationExcludeOutboundIPRanges + ": 1025 elements, more than the limit of 1024"},
		{map[string]string{istioapi.AnnotationIncludeInboundPorts: ports(1025)}, istioapi.AnnotationIncludeInboundPorts + ": 1025 elements, more than the limit of 1024"},
		{map[string]string{istioapi.AnnotationExcludeInboundPorts: ports(1022)}, istioapi.AnnotationExcludeInboundPorts + ": 1022 elements, more than the limit of 1021"},
		{map[string]string{istioapi.AnnotationIncludeOutboundPorts: ports(1025)}, istioapi.AnnotationIncludeOutboundPorts + ": 1025 elements, more than the limit of 1024"},
		{map[string]string{istioapi.AnnotationExcludeOutboundPorts: ports(1025)}, istioapi.AnnotationExcludeOutboundPorts + ": 1025 elements, more than the limit of 1024"},
		{map[string]string{istioapi.AnnotationExcludeInterfaces: nics(33)}, istioapi.AnnotationExcludeInterfaces + ": 33 elements, more than the limit of 32"},
		{map[string]string{istioapi.AnnotationKubevirtInterfaces: nics(33)}, istioapi.AnnotationKubevirtInterfaces + ": 33 elements, more than the limit of 32"},
		{map[string]string{istioapi.AnnotationInterceptionMode: strings.Repeat("x", MaxValueBytes+1)}, istioapi.AnnotationInterceptionMode + ": 65537 bytes, more than the limit of 65536"},
		{map[string]string{istioapi.AnnotationIncludeOutboundIPRanges: cidrs(300), istioapi.AnnotationKubevirtInterfaces: nics(30)},
			fmt.Sprintf("the configuration would generate 9349 IPv4 rules, more than the limit of %d (largest lists: %s has 300 elements, %s has 30 elements, %s has 3 elements)",
				rules.MaxRules, istioapi.AnnotationIncludeOutboundIPRanges, istioapi.AnnotationKubevirtInterfaces, istioapi.AnnotationExcludeInboundPorts)},
	}
	for _, c := range cases {
		t.Run(c.want[:strings.Index(c.want, " ")], func(t *testing.T) {
			cfg, err := FromPod(meshPod(c.ann, "10.0.0.5"))
			var le *rules.LimitError
			if cfg != nil || !errors.As(err, &le) || !errors.Is(err, ErrInvalid) || err.Error() != c.want {
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
	// At the limits, accepted.
	if _, err := FromPod(meshPod(map[string]string{istioapi.AnnotationExcludeOutboundIPRanges: cidrs(1024),
		istioapi.AnnotationExcludeInboundPorts: ports(1021), istioapi.AnnotationExcludeInterfaces: nics(32)}, "10.0.0.5")); err != nil {
		t.Fatalf("at the limits: %v", err)
	}
}

// TestRepeatsDropped: repeated elements are dropped, the first of each kept in order.
func TestRepeatsDropped(t *testing.T) {
	cfg, err := FromPod(meshPod(map[string]string{
		istioapi.AnnotationIncludeOutboundIPRanges: "10.0.0.0/8,192.168.0.0/16,10.0.0.0/8",
		istioapi.AnnotationExcludeInboundPorts:     "15021,7000,15021,7000",
		istioapi.AnnotationIncludeInboundPorts:     "80, 443,80 ",
		istioapi.AnnotationExcludeInterfaces:       " eth1,eth2,eth1 ",
		istioapi.AnnotationRerouteVirtual:          strings.Repeat("net1,", 31) + "net1",
	}, "10.0.0.5"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range cfg.OutboundIPRangesInclude.Prefixes {
		got = append(got, p.String())
	}
	if !slices.Equal(got, []string{"10.0.0.0/8", "192.168.0.0/16"}) ||
		!slices.Equal(cfg.InboundPortsExclude, []uint16{15021, 7000, 15020, 15090}) ||
		!slices.Equal(cfg.InboundPortsInclude.Ports, []uint16{80, 443}) ||
		!slices.Equal(cfg.ExcludeInterfaces, []string{"eth1", "eth2"}) ||
		!slices.Equal(cfg.RerouteVirtualInterfaces, []string{"net1"}) {
		t.Fatalf("repeats kept: %v %v %v %v %v", got, cfg.InboundPortsExclude, cfg.InboundPortsInclude.Ports,
			cfg.ExcludeInterfaces, cfg.RerouteVirtualInterfaces)
	}
}

// TestLongValueQuotedShort: an error repeats at most maxQuoted bytes of a value, and its length.
func TestLongValueQuotedShort(t *testing.T) {
	v := strings.Repeat("8", 200) + ",http"
	_, err := FromPod(meshPod(map[string]string{istioapi.AnnotationIncludeInboundPorts: v}, "10.0.0.5"))
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Value != v {
		t.Fatalf("got %v", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, `"`+strings.Repeat("8", maxQuoted)+`"... (205 bytes)`) || len(msg) > 2*maxQuoted+200 {
		t.Fatalf("message %q", msg)
	}
}

// largestAcceptedPod is close to the largest configuration the limits accept: 7969 rules in each
// family (240 IPv4 and 240 IPv6 CIDRs, each repeated for 32 virtual interfaces).
func largestAcceptedPod() *corev1.Pod {
	v4 := list(240, func(i int) string { return fmt.Sprintf("%d.0.0.0/8", i) })
	v6 := list(240, func(i int) string { return fmt.Sprintf("%x::/16", i+1) })
	nics := list(rules.MaxInterfaces, func(i int) string { return fmt.Sprintf("n%d", i) })
	return meshPod(map[string]string{istioapi.AnnotationIncludeOutboundIPRanges: v4 + "," + v6, istioapi.AnnotationRerouteVirtual: nics}, "fd00::5")
}

// BenchmarkLargestAccepted: FromPod, Generate and the hash (both payloads) of the largest
// configuration accepted, what the controller does for such a pod before applying it.
func BenchmarkLargestAccepted(b *testing.B) {
	pod := largestAcceptedPod()
	b.ReportAllocs()
	start := cpuTime()
	defer func() { b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op") }()
	for b.Loop() {
		cfg, err := FromPod(pod)
		if err != nil {
			b.Fatal(err)
		}
		rs, err := rules.Generate(cfg)
		if err != nil || len(rs.Rules(rules.IPv6)) != 7969 {
			b.Fatal(err)
		}
		_ = rs.Hash()
	}
}
