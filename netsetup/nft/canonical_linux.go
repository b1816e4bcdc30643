package nft

import (
	"crypto/sha256"
	"fmt"

	"github.com/redhat-cop/istio-pod-network-controller/internal/scratchns"
)

// model is what an apply needs of a rule set besides the rule set itself: its canonical form and
// its encoded batch.
type model struct {
	state State
	enc   encoded
}

// canonical returns the state the kernel holds for rs, as read back (see model).
func (a *Applier) canonical(rs *Ruleset) (State, error) {
	m, err := a.model(rs)
	if err != nil {
		return nil, err
	}
	return m.state, nil
}

// model returns rs's canonical form and encoded batch: rs is programmed once into a scratch network
// namespace and read back there, then both are cached by its transaction text. Comparing the
// kernel's encoding with the kernel's encoding needs no knowledge of how the kernel re-encodes
// what it was sent.
func (a *Applier) model(rs *Ruleset) (*model, error) {
	key := sha256.Sum256([]byte(rs.Text()))
	a.mu.Lock()
	m, ok := a.cache[key]
	a.mu.Unlock()
	if ok {
		return m, nil
	}
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
	m = &model{state: st, enc: enc}
	a.mu.Lock()
	if len(a.cache) > 4096 {
		clear(a.cache)
	}
	a.cache[key] = m
	a.mu.Unlock()
	return m, nil
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
