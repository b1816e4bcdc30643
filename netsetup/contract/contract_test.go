package contract

import (
	"strings"
	"testing"
)

func TestNetnsIDRoundTrip(t *testing.T) {
	for _, id := range []NetnsID{{KindCookie, 4097}, {KindInode, 4026531840}} {
		got, err := ParseNetnsID(id.String())
		if err != nil || got != id {
			t.Errorf("%v: got %v, %v", id, got, err)
		}
	}
	for _, bad := range []string{"", "4097", "cookie:", "cookie:0", "cookie:-1", "uuid:1", "cookie:1x", "cookie:18446744073709551616"} {
		if _, err := ParseNetnsID(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestBackends(t *testing.T) {
	for _, s := range []string{"iptables", "nftables"} {
		if b, err := ParseBackend(s); err != nil || string(b) != s {
			t.Errorf("ParseBackend(%q) = %q, %v", s, b, err)
		}
	}
	for _, bad := range []string{"", "nft", "legacy", "IPTABLES", "nftables "} {
		if _, err := ParseBackend(bad); err == nil {
			t.Errorf("ParseBackend(%q) accepted", bad)
		}
	}
	for _, c := range []struct {
		ann  map[string]string
		want Backend
	}{
		{map[string]string{}, BackendIPTables}, // released by a version without the key
		{map[string]string{KeyBackend: "nftables"}, BackendNftables},
	} {
		if b, err := RecordedBackend(c.ann); err != nil || b != c.want {
			t.Errorf("RecordedBackend(%v) = %q, %v; want %q", c.ann, b, err, c.want)
		}
	}
	// Only nftables is ever written: "iptables" or anything else is not ours.
	for _, bad := range []string{"iptables", "", "nft"} {
		_, err := RecordedBackend(map[string]string{KeyBackend: bad})
		if err == nil || !strings.Contains(err.Error(), KeyBackend) {
			t.Errorf("RecordedBackend(%q): %v, want an error naming the annotation", bad, err)
		}
	}
}
