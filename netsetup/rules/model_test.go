package rules

import (
	"strings"
	"testing"
)

func TestModeNoneIsEmpty(t *testing.T) {
	c := Default()
	c.InterceptionMode = ModeNone
	rs, err := Generate(c)
	if err != nil || !rs.Empty() || rs.Hash() != "none" || rs.Payload(IPv4) != "" {
		t.Fatalf("NONE: %v %v %q", rs, err, rs.Hash())
	}
}

func TestGenerateRefusesUnknownMode(t *testing.T) {
	c := Default()
	c.InterceptionMode = "MAGIC"
	if _, err := Generate(c); err == nil || !strings.Contains(err.Error(), `"MAGIC"`) {
		t.Fatalf("got %v", err)
	}
}

// TestHashCoversEverything: the hash changes with the rules of either family and with the routes.
func TestHashCoversEverything(t *testing.T) {
	hash := func(mut func(*Config)) string {
		c := Default()
		mut(c)
		rs, err := Generate(c)
		if err != nil {
			t.Fatal(err)
		}
		return rs.Hash()
	}
	base := hash(func(*Config) {})
	if base != hash(func(*Config) {}) || len(base) != 16 {
		t.Fatalf("hash not stable or not 16 hex digits: %q", base)
	}
	for name, mut := range map[string]func(*Config){
		"ipv6":         func(c *Config) { c.EnableIPv6 = true },
		"tproxy":       func(c *Config) { c.InterceptionMode = ModeTProxy },
		"tproxy table": func(c *Config) { c.InterceptionMode = ModeTProxy; c.TProxyRouteTable = 134 },
		"port":         func(c *Config) { c.OutboundPortsExclude = []uint16{9999} },
	} {
		if hash(mut) == base {
			t.Errorf("%s: hash unchanged", name)
		}
	}
}

func TestRoutes(t *testing.T) {
	c := Default()
	c.InterceptionMode, c.EnableIPv6 = ModeTProxy, true
	rs, _ := Generate(c)
	if r := rs.Routes(); !r.TProxy || r.Mark != 1337 || r.Table != 133 || !r.LoopbackV6 {
		t.Fatalf("TPROXY dual stack routes: %+v", r)
	}
	c.InboundPortsInclude = Ports{} // Istio sets up TPROXY routing only when inbound ports are captured
	rs, _ = Generate(c)
	if r := rs.Routes(); r.TProxy || !r.LoopbackV6 {
		t.Fatalf("no inbound capture: %+v", r)
	}
	if rs.Payload(IPv6) == "" {
		t.Fatal("IPv6 payload missing")
	}
	rs, _ = Generate(Default())
	if rs.Payload(IPv6) != "" || len(rs.Families()) != 1 {
		t.Fatal("IPv6 payload without IPv6")
	}
}
