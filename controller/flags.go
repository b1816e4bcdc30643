package controller

import (
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
)

// Deprecated names, accepted for one release: using one prints a warning (as pflag's deprecated
// flags do) and means its replacement.

// deprecatedStrategies maps the --discovery names of the previous release to the netns package's.
var deprecatedStrategies = map[string]netns.Strategy{
	"netns":  netns.StrategyNamed,
	"cgroup": netns.StrategyProcUID,
	"ip":     netns.StrategyProcIP,
}

// currentStrategyNames returns the comma list s with its deprecated strategy names replaced by the
// current ones, and the deprecated names it found.
func currentStrategyNames(s string) (string, []string) {
	parts := strings.Split(s, ",")
	var old []string
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if st, ok := deprecatedStrategies[p]; ok {
			old = append(old, p)
			p = string(st)
		}
		parts[i] = p
	}
	return strings.Join(parts, ","), old
}

// discoveryValue is the --discovery flag: it keeps the value as given and warns about each
// deprecated strategy name in it.
type discoveryValue struct {
	p  *string
	fs *flag.FlagSet
}

func (v *discoveryValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

func (v *discoveryValue) Set(s string) error {
	_, old := currentStrategyNames(s)
	for _, name := range old {
		fmt.Fprintf(v.fs.Output(), "Flag --discovery: strategy %q has been deprecated, use %q instead (the old name is accepted for one release)\n",
			name, deprecatedStrategies[name])
	}
	*v.p = s
	return nil
}

// deprecatedAlias registers the flag old as a deprecated alias of the already registered flag
// current: setting it sets current and prints a warning.
func deprecatedAlias(fs *flag.FlagSet, old, current string) {
	target := fs.Lookup(current)
	fs.Var(&aliasValue{target: target.Value, fs: fs, old: old, current: current}, old, "deprecated: use --"+current)
}

type aliasValue struct {
	target       flag.Value
	fs           *flag.FlagSet
	old, current string
}

func (v *aliasValue) String() string {
	if v.target == nil { // the zero value PrintDefaults makes to find the default
		return ""
	}
	return v.target.String()
}

func (v *aliasValue) Set(s string) error {
	fmt.Fprintf(v.fs.Output(), "Flag --%s has been deprecated, use --%s instead (the old name is accepted for one release)\n", v.old, v.current)
	return v.target.Set(s)
}

// EndpointConfig is how the metrics endpoint is served (docs/install.md, "Hardened install").
type EndpointConfig struct {
	// MetricsSecure: HTTPS, each request's bearer token reviewed (TokenReview) and authorized
	// (SubjectAccessReview, get on the path); false: plain HTTP, no authentication.
	MetricsSecure bool
	// MetricsCertFile and MetricsKeyFile: PEM files of the serving certificate; empty: a
	// self-signed certificate generated at start.
	MetricsCertFile, MetricsKeyFile string
}

// DefaultEndpointConfig serves metrics securely with a self-signed certificate.
func DefaultEndpointConfig() EndpointConfig { return EndpointConfig{MetricsSecure: true} }

// AddFlags registers the endpoint flags on fs, with e's values as defaults.
func (e *EndpointConfig) AddFlags(fs *flag.FlagSet) {
	fs.BoolVar(&e.MetricsSecure, "metrics-secure", e.MetricsSecure, "serve /metrics over HTTPS to bearer tokens allowed to get the non-resource URL /metrics "+
		"(TokenReview and SubjectAccessReview); false: plain HTTP to anyone who reaches the port")
	fs.StringVar(&e.MetricsCertFile, "metrics-cert-file", e.MetricsCertFile, "PEM certificate of the metrics endpoint (reloaded when it changes); empty: self-signed at start")
	fs.StringVar(&e.MetricsKeyFile, "metrics-key-file", e.MetricsKeyFile, "PEM private key of --metrics-cert-file")
}

// Validate checks the endpoint flags; the error joins one *FlagError per bad flag.
func (e *EndpointConfig) Validate() error {
	var errs []error
	switch {
	case (e.MetricsCertFile == "") != (e.MetricsKeyFile == ""):
		errs = append(errs, &FlagError{"metrics-cert-file", e.MetricsCertFile, fmt.Sprintf("set together with --metrics-key-file (%q)", e.MetricsKeyFile)})
	case e.MetricsCertFile != "" && !e.MetricsSecure:
		errs = append(errs, &FlagError{"metrics-cert-file", e.MetricsCertFile, "needs --metrics-secure (plain HTTP uses no certificate)"})
	}
	return errors.Join(errs...)
}
