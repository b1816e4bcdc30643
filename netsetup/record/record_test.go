package record

import (
	"errors"
	"strings"
	"testing"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

func TestFormatParseRoundTrip(t *testing.T) {
	id := contract.NetnsID{Kind: contract.KindCookie, Value: 18446744073709551615}
	for _, r := range []Record{
		Ready(id, "0123456789abcdef", contract.FamiliesIPv4),
		Ready(id, contract.RulesNone, contract.FamiliesDual),
		Ready(contract.NetnsID{Kind: contract.KindInode, Value: 4026531840}, strings.Repeat("f", 64), contract.FamiliesDual),
	} {
		s, err := r.Format()
		if err != nil {
			t.Fatalf("Format(%+v): %v", r, err)
		}
		if len(s) > MaxLen {
			t.Errorf("%q: %d bytes, more than %d", s, len(s), MaxLen)
		}
		got, err := Parse(s)
		if err != nil || got != r {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", s, got, err, r)
		}
	}
	want := "pnc1 status=ready netns=cookie:4097 rules=0123456789abcdef families=ipv4"
	if s := Ready(contract.NetnsID{Kind: contract.KindCookie, Value: 4097}, "0123456789abcdef", "ipv4").String(); s != want {
		t.Errorf("String() = %q, want %q", s, want)
	}
}

func TestParseRefuses(t *testing.T) {
	good := "pnc1 status=ready netns=cookie:4097 rules=0123456789abcdef families=ipv4"
	for _, tc := range []struct {
		name, in string
		want     error
	}{
		{"empty", "", ErrNoRecord},
		{"someone else's alias", "uplink to rack 4", ErrNoRecord},
		{"magic without version", "pnc status=ready", ErrNoRecord},
		{"magic with garbage", "pncx status=ready", ErrNoRecord},
		{"version 2", strings.Replace(good, "pnc1", "pnc2", 1), ErrUnknownVersion},
		{"version 0", strings.Replace(good, "pnc1", "pnc0", 1), ErrUnknownVersion},
		{"version 2 with other fields", "pnc2 state=go cookie=1", ErrUnknownVersion},
		{"pending", strings.Replace(good, "ready", "pending", 1), ErrInvalid},
		{"failed", strings.Replace(good, "ready", "failed", 1), ErrInvalid},
		{"netns inode zero", strings.Replace(good, "cookie:4097", "inode:0", 1), ErrInvalid},
		{"netns garbage", strings.Replace(good, "cookie:4097", "pid:12", 1), ErrInvalid},
		{"rules upper case", strings.Replace(good, "0123456789abcdef", "0123456789ABCDEF", 1), ErrInvalid},
		{"rules empty", strings.Replace(good, "0123456789abcdef", "", 1), ErrInvalid},
		{"rules too long", strings.Replace(good, "0123456789abcdef", strings.Repeat("a", 65), 1), ErrInvalid},
		{"families ipv6 only", strings.Replace(good, "families=ipv4", "families=ipv6", 1), ErrInvalid},
		{"fields reordered", "pnc1 netns=cookie:4097 status=ready rules=0123456789abcdef families=ipv4", ErrInvalid},
		{"field missing", "pnc1 status=ready netns=cookie:4097 rules=0123456789abcdef", ErrInvalid},
		{"field added", good + " extra=1", ErrInvalid},
		{"double space", strings.Replace(good, " ", "  ", 1), ErrInvalid},
		{"too long", good + strings.Repeat(" ", 200), ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Parse(tc.in)
			if !errors.Is(err, tc.want) {
				t.Errorf("Parse(%q) = %+v, %v; want an error wrapping %v", tc.in, r, err, tc.want)
			}
		})
	}
}

func TestFormatRefusesWhatParseRefuses(t *testing.T) {
	r := Ready(contract.NetnsID{Kind: contract.KindCookie, Value: 1}, "xyz", contract.FamiliesIPv4)
	if s, err := r.Format(); !errors.Is(err, ErrInvalid) {
		t.Errorf("Format(%+v) = %q, %v; want ErrInvalid", r, s, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("pnc1 status=ready netns=cookie:4097 rules=0123456789abcdef families=ipv4")
	f.Add("pnc2 x")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			return
		}
		if r.String() != s {
			t.Errorf("Parse(%q) accepted %+v, which renders as %q", s, r, r.String())
		}
	})
}
