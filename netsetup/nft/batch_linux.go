package nft

import (
	"fmt"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// batch is one nf_tables transaction, sent as one netlink write with a single acknowledgement
// requested (on its last message): the kernel reports an error for any failing message and then
// aborts the whole transaction, so one round trip both applies and confirms it.
type batch struct {
	msgs  []netlink.Message
	setID uint32
}

func nfgen(family uint8) []byte { return []byte{family, unix.NFNETLINK_V0, 0, 0} }

func (b *batch) add(typ uint16, flags netlink.HeaderFlags, attrs []netlink.Attribute) error {
	data, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return err
	}
	b.msgs = append(b.msgs, netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | typ), Flags: netlink.Request | flags},
		Data:   append(nfgen(unix.NFPROTO_INET), data...),
	})
	return nil
}

func str(s string) []byte  { return []byte(s + "\x00") }
func be32(v uint32) []byte { return binaryutil.BigEndian.PutUint32(v) }

func (b *batch) delTable(name string) error {
	return b.add(unix.NFT_MSG_DELTABLE, 0, []netlink.Attribute{{Type: unix.NFTA_TABLE_NAME, Data: str(name)}})
}

func (b *batch) addTable(name string) error {
	return b.add(unix.NFT_MSG_NEWTABLE, netlink.Create, []netlink.Attribute{
		{Type: unix.NFTA_TABLE_NAME, Data: str(name)}, {Type: unix.NFTA_TABLE_FLAGS, Data: be32(0)}})
}

var hookNums = map[string]uint32{"prerouting": unix.NF_INET_PRE_ROUTING, "output": unix.NF_INET_LOCAL_OUT}

func (b *batch) addChain(table string, c *Chain) error {
	attrs := []netlink.Attribute{{Type: unix.NFTA_CHAIN_TABLE, Data: str(table)}, {Type: unix.NFTA_CHAIN_NAME, Data: str(c.Name)}}
	if c.Base != nil {
		hook, err := netlink.MarshalAttributes([]netlink.Attribute{
			{Type: unix.NFTA_HOOK_HOOKNUM, Data: be32(hookNums[c.Base.Hook])},
			{Type: unix.NFTA_HOOK_PRIORITY, Data: be32(uint32(c.Base.Priority))},
		})
		if err != nil {
			return err
		}
		attrs = append(attrs, netlink.Attribute{Type: unix.NLA_F_NESTED | unix.NFTA_CHAIN_HOOK, Data: hook},
			netlink.Attribute{Type: unix.NFTA_CHAIN_TYPE, Data: str(c.Base.Type)})
	}
	return b.add(unix.NFT_MSG_NEWCHAIN, netlink.Create, attrs)
}

// nftTypeInetService is nft's inet_service datatype (a transport port).
const nftTypeInetService = 13

// addPortSet adds an anonymous constant set of ports with its elements; it returns its batch ID.
func (b *batch) addPortSet(table string, ports []uint16) (uint32, error) {
	b.setID++
	id := b.setID
	err := b.add(unix.NFT_MSG_NEWSET, netlink.Create, []netlink.Attribute{
		{Type: unix.NFTA_SET_TABLE, Data: str(table)},
		{Type: unix.NFTA_SET_NAME, Data: str("__set%d")},
		{Type: unix.NFTA_SET_FLAGS, Data: be32(unix.NFT_SET_ANONYMOUS | unix.NFT_SET_CONSTANT)},
		{Type: unix.NFTA_SET_KEY_TYPE, Data: be32(nftTypeInetService)},
		{Type: unix.NFTA_SET_KEY_LEN, Data: be32(2)},
		{Type: unix.NFTA_SET_ID, Data: be32(id)},
	})
	if err != nil {
		return 0, err
	}
	var elems []netlink.Attribute
	for _, p := range ports {
		key, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_DATA_VALUE, Data: be16(p)}})
		if err != nil {
			return 0, err
		}
		elem, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NLA_F_NESTED | unix.NFTA_SET_ELEM_KEY, Data: key}})
		if err != nil {
			return 0, err
		}
		elems = append(elems, netlink.Attribute{Type: unix.NLA_F_NESTED | unix.NFTA_LIST_ELEM, Data: elem})
	}
	list, err := netlink.MarshalAttributes(elems)
	if err != nil {
		return 0, err
	}
	return id, b.add(unix.NFT_MSG_NEWSETELEM, netlink.Create, []netlink.Attribute{
		{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: str(table)},
		{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: str("__set%d")},
		{Type: unix.NFTA_SET_ELEM_LIST_SET_ID, Data: be32(id)},
		{Type: unix.NLA_F_NESTED | unix.NFTA_SET_ELEM_LIST_ELEMENTS, Data: list},
	})
}

// addRule appends the rule to its chain, with its anonymous sets.
func (b *batch) addRule(table, chain string, r Rule) error {
	comp, err := r.Compile()
	if err != nil {
		return err
	}
	for i, ports := range comp.Sets {
		id, err := b.addPortSet(table, ports)
		if err != nil {
			return fmt.Errorf("rule %q: anonymous set: %w", r.Text(), err)
		}
		comp.Lookups[i].SetName, comp.Lookups[i].SetID = "__set%d", id
	}
	exprs := make([]netlink.Attribute, len(comp.Exprs))
	for i, e := range comp.Exprs {
		data, err := expr.Marshal(unix.NFPROTO_INET, e)
		if err != nil {
			return fmt.Errorf("rule %q: %w", r.Text(), err)
		}
		exprs[i] = netlink.Attribute{Type: unix.NLA_F_NESTED | unix.NFTA_LIST_ELEM, Data: data}
	}
	list, err := netlink.MarshalAttributes(exprs)
	if err != nil {
		return err
	}
	return b.add(unix.NFT_MSG_NEWRULE, netlink.Create|netlink.Append, []netlink.Attribute{
		{Type: unix.NFTA_RULE_TABLE, Data: str(table)},
		{Type: unix.NFTA_RULE_CHAIN, Data: str(chain)},
		{Type: unix.NLA_F_NESTED | unix.NFTA_RULE_EXPRESSIONS, Data: list},
	})
}

// send wraps the messages in BATCH_BEGIN/BATCH_END, sends them in one write and waits for the
// acknowledgement of the last one; any error the kernel reports fails the batch (and the kernel
// has then applied none of it).
func (b *batch) send(nc *conn) error {
	if len(b.msgs) == 0 {
		return nil
	}
	b.msgs[len(b.msgs)-1].Header.Flags |= netlink.Acknowledge
	ctl := func(t uint16) netlink.Message {
		return netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(t), Flags: netlink.Request},
			Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES},
		}
	}
	all := append(append([]netlink.Message{ctl(unix.NFNL_MSG_BATCH_BEGIN)}, b.msgs...), ctl(unix.NFNL_MSG_BATCH_END))
	if _, err := nc.send(all); err != nil {
		return err
	}
	last := all[len(all)-2].Header.Sequence
	_, err := nc.receive(func(m netlink.Message) bool { return m.Header.Type == netlink.Error && m.Header.Sequence == last })
	if err != nil {
		return fmt.Errorf("nf_tables transaction of %d messages refused: %w", len(b.msgs), err)
	}
	return nil
}
