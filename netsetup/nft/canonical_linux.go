package nft

import (
	"fmt"

	"github.com/redhat-cop/istio-pod-network-controller/internal/scratchns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// model is what an apply needs of a rule set besides the rule set itself: its canonical form and
// its encoded batch.
type model struct {
	state State
	enc   encoded
}

// canonical returns the state the kernel holds for rs, as read back (see buildModel).
func (a *Applier) canonical(rs *Ruleset) (State, error) {
	m, err := buildModel(rs)
	if err != nil {
		return nil, err
	}
	return m.state, nil
}

// plan is everything an apply needs of one configuration: its rule set, the rule set's hash and
// its model. Building it (generating, rendering, hashing, encoding, and the scratch-namespace
// round trip) is most of an apply's user-space work, and a node's pods share a few
// configurations.
type plan struct {
	rs   *Ruleset
	hash string
	m    *model
}

// Bounds of the plan cache: when either would be exceeded it is emptied. A typical plan retains a
// few KB (about four times its transaction text, counted as its size); the largest the limits
// allow about 2 MB.
const (
	planCacheEntries = 4096
	planCacheBytes   = 32 << 20
)

// plan returns cfg's plan, built once per distinct configuration (by rules.Config.Key) and cached.
func (a *Applier) plan(cfg *rules.Config) (*plan, error) {
	key := cfg.Key()
	a.mu.Lock()
	p, ok := a.plans[key]
	a.mu.Unlock()
	if ok {
		return p, nil
	}
	rs, err := Generate(cfg)
	if err != nil {
		return nil, err
	}
	m, err := buildModel(rs)
	if err != nil {
		return nil, err
	}
	p = &plan{rs: rs, hash: rs.Hash(), m: m}
	size := len(key) + 4*len(rs.Text())
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.plans) >= planCacheEntries || a.planBytes+size > planCacheBytes {
		clear(a.plans)
		a.planBytes = 0
	}
	if size <= planCacheBytes {
		a.plans[key] = p
		a.planBytes += size
	}
	return p, nil
}

// buildModel returns rs's canonical form and encoded batch: rs is programmed once into a scratch
// network namespace and read back there. Comparing the kernel's encoding with the kernel's
// encoding needs no knowledge of how the kernel re-encodes what it was sent.
func buildModel(rs *Ruleset) (*model, error) {
	enc, err := encode(rs)
	if err != nil {
		return nil, err
	}
	st, err := scratchns.Run(func() (State, error) {
		nc, err := dial()
		if err != nil {
			return nil, err
		}
		defer nc.Close()
		if err := enc.write(nc, nil); err != nil {
			return nil, err
		}
		return readState(nc)
	})
	if err != nil {
		return nil, fmt.Errorf("canonical form of the nftables rules (scratch namespace): %w", err)
	}
	st.attachTexts(rs)
	return &model{state: st, enc: enc}, nil
}

// attachTexts gives each rule of st its nft text from rs, for messages.
func (st State) attachTexts(rs *Ruleset) {
	for i := range st {
		t := rs.Table(st[i].Name)
		for j := range st[i].Chains {
			if t == nil || j >= len(t.Chains) {
				continue
			}
			for _, r := range t.Chains[j].Rules {
				st[i].Chains[j].texts = append(st[i].Chains[j].texts, r.Text())
			}
		}
	}
}
