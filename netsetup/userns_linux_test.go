package netsetup

import (
	"context"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// TestUserNamespacePod programs a namespace owned by a pod user namespace (hostUsers: false, pod
// UID 0 = host UID 100000): the owner matches must mean the pod's UID 1337 (host UID 101337),
// which the validator's loopback connection as that UID proves, and re-applying is a no-op.
func TestUserNamespacePod(t *testing.T) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) { testUserNamespacePod(t, b) })
	}
}

func testUserNamespacePod(t *testing.T, b Backend) {
	testutil.RequireRoot(t)
	const base = 100000
	path := testutil.UserNetns(t, base)
	h, err := netns.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	a := newApplier(t, b)
	cfg := rules.Default()
	ctx := context.Background()
	if res, err := a.Apply(ctx, h, "userns", cfg); err != nil || !res.Changed {
		t.Fatalf("apply: %+v %v", res, err)
	}
	if res, err := a.Apply(ctx, h, "userns", cfg); err != nil || res.Changed {
		t.Fatalf("re-apply: %+v %v", res, err)
	}
	{
		// Negative control: xt_owner refuses owner matches from a writer outside the namespace's
		// user namespace, which is why the applier joins it.
		probe := "*filter\n:PNC_PROBE - [0:0]\n-A PNC_PROBE -m owner --uid-owner 1337 -j RETURN\nCOMMIT\n"
		err := h.Do(func() error {
			_, err := execTool(ctx, nil, probe, binary(b, rules.IPv4, "restore"), "--noflush")
			return err
		})
		t.Logf("direct write: %v", err)
		if err == nil {
			t.Fatal("a writer outside the pod's user namespace could install owner matches: the test proves nothing")
		}
	}
	// The validator's check, as the pod's proxy UID: 127.0.0.6:15002 must land on 15006.
	startIn(t, h, base+1337, nil, "PNC_HELPER=listen", "PNC_PORTS=15001,15006")
	if got, want := dialFrom(t, h, base+1337, "127.0.0.6:15002"), "15006 127.0.0.6:15002"; got != want {
		t.Fatalf("loopback redirect as the pod's proxy UID: got %q, want %q", got, want)
	}
}
