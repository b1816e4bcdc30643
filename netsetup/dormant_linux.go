package netsetup

import (
	nlbin "encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// With the nft backend, iptables rules live in nf_tables tables (ip or ip6 family, named as the
// iptables tables), and nf_tables can make a table dormant: its chains and rules stay, and
// iptables-nft-save prints them as usual, but no chain is hooked. A dormant table of ours is
// drift; these two functions read and clear the flag over netlink, in the calling thread's
// network namespace (google/nftables opens its socket on the calling thread).

func nftFamily(f rules.Family) nftables.TableFamily {
	if f == rules.IPv6 {
		return nftables.TableFamilyIPv6
	}
	return nftables.TableFamilyIPv4
}

// dormantTables names family f's nf_tables tables that are dormant, from one table dump.
// (google/nftables v0.3.0 decodes NFTA_TABLE_FLAGS in host byte order; it is big-endian.)
func dormantTables(f rules.Family) ([]string, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("open netfilter netlink: %w", err)
	}
	defer c.Close()
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETTABLE), Flags: netlink.Request | netlink.Dump},
		Data:   []byte{byte(nftFamily(f)), unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		return nil, fmt.Errorf("list %s nf_tables tables: %w", f, err)
	}
	var out []string
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return nil, fmt.Errorf("list %s nf_tables tables: %w", f, err)
		}
		ad.ByteOrder = nlbin.BigEndian
		var name string
		var flags uint32
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_TABLE_NAME:
				name = ad.String()
			case unix.NFTA_TABLE_FLAGS:
				flags = ad.Uint32()
			}
		}
		if err := ad.Err(); err != nil {
			return nil, fmt.Errorf("list %s nf_tables tables: %w", f, err)
		}
		if flags&unix.NFT_TABLE_F_DORMANT != 0 {
			out = append(out, name)
		}
	}
	return out, nil
}

// wakeTables clears the flags of family f's named tables in one transaction: a table added again
// with flags 0 keeps its chains and rules, and its base chains are hooked again.
func wakeTables(f rules.Family, names []string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nf_tables: %w", err)
	}
	for _, n := range names {
		c.AddTable(&nftables.Table{Family: nftFamily(f), Name: n})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("wake dormant %s tables %v: %w", f, names, err)
	}
	return nil
}
