package contract

import "testing"

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
