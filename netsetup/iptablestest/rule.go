package iptablestest

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// parseError is a rule the real tool refuses while parsing it (exit code 2, "Error occurred at line").
type parseError struct{ msg string }

func (e *parseError) Error() string { return e.msg }

func refuse(format string, a ...any) error { return &parseError{fmt.Sprintf(format, a...)} }

// rule is one parsed rule in iptables-save's canonical form.
type rule struct {
	spec   string // the canonical text after "-A CHAIN"
	target string // "-j" target, "" without one
	proto  string
	in     bool // has -i
	out    bool // has -o
	owner  bool // has -m owner (the kernel allows it in OUTPUT and POSTROUTING only)
}

// baseOrder is the order iptables-save prints the generic matches in.
var baseOrder = []string{"-s", "-d", "-i", "-o", "-p"}

var longBase = map[string]string{
	"--source": "-s", "--destination": "-d", "--in-interface": "-i", "--out-interface": "-o", "--protocol": "-p",
}

// match is one "-m NAME" module and its options, already in canonical form.
type match struct {
	name string
	opts []string
}

// targets modelled by the fake besides user chains, with the table each is restricted to ("" any).
var targets = map[string]string{
	"ACCEPT": "", "DROP": "", "RETURN": "", "REDIRECT": "nat", "TPROXY": "mangle", "MARK": "", "CONNMARK": "", "CT": "raw",
}

// unmodelled are real targets this fake does not implement: refused with a message saying so, never
// mistaken for a missing chain.
var unmodelled = map[string]bool{
	"LOG": true, "REJECT": true, "DNAT": true, "SNAT": true, "MASQUERADE": true, "NOTRACK": true, "NFQUEUE": true,
	"TRACE": true, "TCPMSS": true, "DSCP": true, "TOS": true, "NFLOG": true, "AUDIT": true, "CHECKSUM": true,
}

// parseRule turns the arguments of an -A/-I/-D rule into canonical form, refusing what the real tool
// refuses for the rule shapes it models (the matches tcp, udp, multiport, owner, mark, connmark and
// conntrack; the targets above and jumps to user chains).
func parseRule(fam rules.Family, args []string) (rule, error) {
	base := map[string]string{}
	var ms []*match
	var cur *match
	var r rule
	for i := 0; i < len(args); i++ {
		neg := ""
		if args[i] == "!" {
			neg = "! "
			i++
			if i == len(args) {
				return rule{}, refuse("Bad argument `!'")
			}
		}
		opt := args[i]
		if long, ok := longBase[opt]; ok {
			opt = long
		}
		value := func() (string, error) {
			if i+1 >= len(args) {
				return "", refuse("option \"%s\" requires an argument", args[i])
			}
			i++
			return args[i], nil
		}
		switch opt {
		case "-s", "-d":
			v, err := value()
			if err != nil {
				return rule{}, err
			}
			p, err := parsePrefix(fam, v)
			if err != nil {
				return rule{}, err
			}
			base[opt] = neg + opt + " " + p
		case "-i", "-o":
			v, err := value()
			if err != nil {
				return rule{}, err
			}
			base[opt] = neg + opt + " " + v
			r.in, r.out = r.in || opt == "-i", r.out || opt == "-o"
		case "-p":
			v, err := value()
			if err != nil {
				return rule{}, err
			}
			v = strings.ToLower(v)
			if !slices.Contains([]string{"tcp", "udp", "icmp", "ipv6-icmp", "all"}, v) {
				return rule{}, refuse("unknown protocol \"%s\" specified", v)
			}
			r.proto = v
			base[opt] = neg + opt + " " + v
		case "-m", "--match":
			if neg != "" {
				return rule{}, refuse("unexpected ! flag before --match")
			}
			v, err := value()
			if err != nil {
				return rule{}, err
			}
			if !slices.Contains([]string{"tcp", "udp", "multiport", "owner", "mark", "connmark", "conntrack"}, v) {
				return rule{}, refuse("fake iptables: match %q is not modelled", v)
			}
			cur = &match{name: v}
			ms = append(ms, cur)
			r.owner = r.owner || v == "owner"
		case "-j", "--jump":
			v, err := value()
			if err != nil {
				return rule{}, err
			}
			opts, err := targetOptions(fam, v, r.proto, args[i+1:])
			if err != nil {
				return rule{}, err
			}
			r.target = v
			var b strings.Builder
			writeBase(&b, base)
			for _, m := range ms {
				b.WriteString(" -m " + m.name + " " + strings.Join(m.opts, " "))
			}
			b.WriteString(" -j " + v)
			if len(opts) > 0 {
				b.WriteString(" " + strings.Join(opts, " "))
			}
			r.spec = strings.TrimSpace(b.String())
			return r, nil
		default:
			if !strings.HasPrefix(opt, "--") {
				return rule{}, refuse("unknown option \"%s\"", opt)
			}
			owner, err := matchFor(opt, r.proto, cur, &ms)
			if err != nil {
				return rule{}, err
			}
			cur = owner
			v, err := value()
			if err != nil {
				return rule{}, err
			}
			canon, err := matchOption(owner.name, opt, v)
			if err != nil {
				return rule{}, err
			}
			owner.opts = append(owner.opts, neg+canon)
		}
	}
	var b strings.Builder
	writeBase(&b, base)
	for _, m := range ms {
		b.WriteString(" -m " + m.name + " " + strings.Join(m.opts, " "))
	}
	r.spec = strings.TrimSpace(b.String())
	return r, nil
}

func writeBase(b *strings.Builder, base map[string]string) {
	for _, o := range baseOrder {
		if s, ok := base[o]; ok {
			b.WriteString(" " + s)
		}
	}
}

// matchFor finds the loaded match an option belongs to; --dport/--sport load the protocol's match
// implicitly, the way iptables does for "-p tcp --dport 80".
func matchFor(opt, proto string, cur *match, ms *[]*match) (*match, error) {
	owners := map[string][]string{
		"--dport": {"tcp", "udp"}, "--sport": {"tcp", "udp"},
		"--destination-port": {"tcp", "udp"}, "--source-port": {"tcp", "udp"},
		"--dports": {"multiport"}, "--sports": {"multiport"}, "--ports": {"multiport"},
		"--uid-owner": {"owner"}, "--gid-owner": {"owner"},
		"--mark": {"mark", "connmark"}, "--ctstate": {"conntrack"},
	}[opt]
	if owners == nil {
		return nil, refuse("unknown option \"%s\"", opt)
	}
	if cur != nil && slices.Contains(owners, cur.name) {
		return cur, nil
	}
	for _, m := range *ms {
		if slices.Contains(owners, m.name) {
			return m, nil
		}
	}
	if slices.Contains(owners, proto) {
		m := &match{name: proto}
		*ms = append(*ms, m)
		return m, nil
	}
	return nil, refuse("unknown option \"%s\"", opt)
}

// matchOption renders one match option as iptables-save does.
func matchOption(name, opt, v string) (string, error) {
	switch opt {
	case "--dport", "--destination-port", "--sport", "--source-port":
		if err := checkPorts(v, ":"); err != nil {
			return "", err
		}
		return "--" + opt[2:3] + "port " + v, nil
	case "--dports", "--sports", "--ports":
		if err := checkPorts(v, ","); err != nil {
			return "", err
		}
		return opt + " " + v, nil
	case "--uid-owner", "--gid-owner":
		if _, err := strconv.ParseUint(v, 10, 32); err != nil {
			return "", refuse("owner: Bad value for \"%s\" option: \"%s\"", opt, v)
		}
		return opt + " " + v, nil
	case "--mark":
		m, err := parseMark(v, false)
		if err != nil {
			return "", refuse("%s: Bad value for \"--mark\" option: \"%s\"", name, v)
		}
		return "--mark " + m, nil
	case "--ctstate":
		s, err := canonicalStates(v)
		if err != nil {
			return "", err
		}
		return "--ctstate " + s, nil
	}
	return "", refuse("unknown option \"%s\"", opt)
}

func checkPorts(v, sep string) error {
	for _, p := range strings.Split(v, sep) {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || (sep == "," && n == 0 && p != "0") {
			return refuse("invalid port/service `%s' specified", p)
		}
	}
	return nil
}

// ctStates is the order iptables-save prints conntrack states in.
var ctStates = []string{"INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT"}

func canonicalStates(v string) (string, error) {
	have := strings.Split(v, ",")
	var out []string
	for _, s := range have {
		if !slices.Contains(ctStates, s) {
			return "", refuse("Bad ctstate \"%s\"", s)
		}
	}
	for _, s := range ctStates {
		if slices.Contains(have, s) {
			out = append(out, s)
		}
	}
	return strings.Join(out, ","), nil
}

// parseMark parses "value[/mask]"; the mask defaults to 0xffffffff. With full it always prints the
// mask, else only when it is not 0xffffffff (as the mark match does).
func parseMark(v string, full bool) (string, error) {
	val, mask, err := markParts(v)
	if err != nil {
		return "", err
	}
	if full || mask != 0xffffffff {
		return fmt.Sprintf("0x%x/0x%x", val, mask), nil
	}
	return fmt.Sprintf("0x%x", val), nil
}

func markParts(v string) (val, mask uint64, err error) {
	vs, ms, hasMask := strings.Cut(v, "/")
	if val, err = strconv.ParseUint(vs, 0, 32); err != nil {
		return 0, 0, err
	}
	mask = 0xffffffff
	if hasMask {
		if mask, err = strconv.ParseUint(ms, 0, 32); err != nil {
			return 0, 0, err
		}
	}
	return val, mask, nil
}

// parsePrefix canonicalizes an address or prefix of the family: host bits cleared, /32 or /128 added.
func parsePrefix(fam rules.Family, v string) (string, error) {
	var p netip.Prefix
	if strings.Contains(v, "/") {
		var err error
		if p, err = netip.ParsePrefix(v); err != nil {
			return "", refuse("host/network `%s' not found", v)
		}
	} else {
		a, err := netip.ParseAddr(v)
		if err != nil {
			return "", refuse("host/network `%s' not found", v)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4() != (fam == rules.IPv4) {
		return "", refuse("host/network `%s' not found", p.Addr())
	}
	return p.Masked().String(), nil
}
