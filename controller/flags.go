package controller

import (
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
