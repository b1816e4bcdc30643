package netsetup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/iptablestest"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// fakeNode is a node for the Applier without root: package iptablestest's fake tools and a record
// of each namespace's routes.
type fakeNode struct {
	*iptablestest.Fake
	mu     sync.Mutex
	routes map[*iptablestest.Namespace]rules.Routes
}

func newFakeNode() *fakeNode {
	return &fakeNode{Fake: iptablestest.New(), routes: map[*iptablestest.Namespace]rules.Routes{}}
}

// system is the Applier's view of the fake node. The runner turns the fake's exit errors into
// ExecError, as execTool does for a real process.
func (n *fakeNode) system() system {
	return system{
		run: func(ctx context.Context, env []string, stdin, name string, args ...string) (string, error) {
			out, err := n.Run(ctx, env, stdin, name, args...)
			var exit *iptablestest.ExitError
			if errors.As(err, &exit) {
				return "", &ExecError{Cmd: name + " " + strings.Join(args, " "), Code: exit.Code, Stderr: exit.Stderr, Input: stdin}
			}
			return out, err
		},
		scratch: n.Scratch,
		routes:  n.syncRoutes,
		tables:  func(f rules.Family) ([]string, error) { return n.Current().LegacyTables(f), nil },
		// The fake models iptables-save text only, not nf_tables table flags: nothing is dormant.
		dormant: func(rules.Family) ([]string, error) { return nil, nil },
		wake: func(f rules.Family, tables []string) error {
			return fmt.Errorf("wake %s %v: nothing is dormant on the fake", f, tables)
		},
	}
}

// syncRoutes is syncRoutes on the fake: the namespace holds exactly the routes last written.
func (n *fakeNode) syncRoutes(r rules.Routes, write bool) (bool, error) {
	ns := n.Current()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.routes[ns] == r {
		return false, nil
	}
	if !write {
		return false, fmt.Errorf("%w: routes: have %+v, want %+v", ErrDrift, n.routes[ns], r)
	}
	n.routes[ns] = r
	return true, nil
}

// applier returns an Applier on the node with the given backend ("" detects it).
func (n *fakeNode) applier(t *testing.T, b Backend) *Applier {
	t.Helper()
	a, err := newApplierOn(context.Background(), Options{Backend: b, LockDir: t.TempDir()}, n.system())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// restores counts the restore runs so far.
func (n *fakeNode) restores() int {
	c := 0
	for _, call := range n.Calls() {
		if strings.HasSuffix(call.Name, "-restore") {
			c++
		}
	}
	return c
}

// saves is everything of both families the namespace holds in the backend.
func saves(ns *iptablestest.Namespace, b Backend) string {
	return ns.Save(string(b), rules.IPv4) + ns.Save(string(b), rules.IPv6)
}

// ourChains lists the ISTIO_* chains of one table of a save, in order.
func ourChains(save, table string) []string {
	var out []string
	in := false
	for _, line := range strings.Split(save, "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			in = line == "*"+table
		case in && strings.HasPrefix(line, ":ISTIO_"):
			name, _, _ := strings.Cut(line[1:], " ")
			out = append(out, name)
		}
	}
	return out
}

// someoneElse's rules in a pod: a chain and a rule in a built-in chain that are not ours.
const someoneElse = `*nat
:KUBE-SOMETHING - [0:0]
-A KUBE-SOMETHING -p tcp -m tcp --dport 80 -j RETURN
-A OUTPUT -d 10.0.0.1/32 -j KUBE-SOMETHING
COMMIT
`
