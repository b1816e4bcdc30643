// Package rules is the pure rule model: Istio's sidecar redirect configuration, the generator that
// turns it into the exact rules Istio's istio-iptables would install, and their iptables-restore
// rendering. It imports no Kubernetes and no syscall package, so it builds and runs anywhere.
package rules

import (
	"net/netip"
)

// Mode is the inbound interception mode.
type Mode string

// Interception modes, as Istio spells them.
const (
	ModeRedirect Mode = "REDIRECT"
	ModeTProxy   Mode = "TPROXY"
	// ModeNone means no capture: no rules at all.
	ModeNone Mode = "NONE"
)

// Ports is a port list that may be the wildcard "*".
type Ports struct {
	All   bool
	Ports []uint16
}

// Ranges is a CIDR list that may be the wildcard "*".
type Ranges struct {
	All      bool
	Prefixes []netip.Prefix
}

// GroupFilter selects, by owner group, whose outbound traffic is captured: every group except
// Groups (Except, Istio's OwnerGroupsInclude "*"), or only Groups.
type GroupFilter struct {
	Except bool
	Groups []string
}

// Config is Istio's sidecar capture configuration (tools/common/config.Config), typed. Lists keep
// the order they were given in: the order of the generated rules follows it.
type Config struct {
	ProxyPort          uint16 // outbound capture port, 15001
	InboundCapturePort uint16 // inbound capture port, 15006
	InboundTunnelPort  uint16 // HBONE tunnel port, 15008: never captured
	ProxyUIDs          []uint32
	ProxyGIDs          []uint32

	InterceptionMode Mode
	TProxyMark       uint32 // 1337
	TProxyRouteTable int    // 133

	InboundPortsInclude     Ports
	InboundPortsExclude     []uint16
	OutboundIPRangesInclude Ranges
	OutboundIPRangesExclude []netip.Prefix
	OutboundPortsInclude    []uint16
	OutboundPortsExclude    []uint16

	ExcludeInterfaces        []string
	RerouteVirtualInterfaces []string

	RedirectDNS   bool
	CaptureAllDNS bool
	DNSServersV4  []string // IPv4 addresses, rendered as written
	DNSServersV6  []string // IPv6 addresses, rendered as written

	DropInvalid          bool
	OwnerGroups          GroupFilter
	HostIPv4LoopbackCIDR netip.Prefix // 127.0.0.1/32
	EnableIPv6           bool
}

// Default returns the configuration of Istio's sidecar CNI path before any pod annotation applies:
// ports 15001/15006/15008, UID and GID 1337, REDIRECT, TPROXY mark 1337 and table 133, every inbound
// port captured except 15020, 15021 and 15090, every outbound range captured, outbound port 15020
// excluded, every owner group captured, loopback 127.0.0.1/32.
func Default() *Config {
	return &Config{
		ProxyPort:               15001,
		InboundCapturePort:      15006,
		InboundTunnelPort:       15008,
		ProxyUIDs:               []uint32{1337},
		ProxyGIDs:               []uint32{1337},
		InterceptionMode:        ModeRedirect,
		TProxyMark:              1337,
		TProxyRouteTable:        133,
		InboundPortsInclude:     Ports{All: true},
		InboundPortsExclude:     []uint16{15020, 15021, 15090},
		OutboundIPRangesInclude: Ranges{All: true},
		OutboundPortsExclude:    []uint16{15020},
		OwnerGroups:             GroupFilter{Except: true},
		HostIPv4LoopbackCIDR:    netip.MustParsePrefix("127.0.0.1/32"),
	}
}

// Families returns the address families the configuration programs.
func (c *Config) Families() []Family {
	if c.EnableIPv6 {
		return []Family{IPv4, IPv6}
	}
	return []Family{IPv4}
}
