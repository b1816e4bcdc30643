package rules

import (
	"net/netip"
	"reflect"
	"testing"
)

// perturb changes the leaf value v (a field of Config, or of a struct in it) to another value of
// its type; it reports false for a kind it does not know, which fails the test: a new field type
// needs a case here and in Key.
func perturb(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Uint16, reflect.Uint32:
		v.SetUint(v.Uint() + 1)
	case reflect.Int:
		v.SetInt(v.Int() - 7)
	case reflect.String:
		v.SetString(v.String() + "x")
	case reflect.Slice:
		elem := reflect.New(v.Type().Elem()).Elem()
		if !perturb(elem) {
			return false
		}
		v.Set(reflect.Append(v, elem))
	default:
		if v.Type() != reflect.TypeFor[netip.Prefix]() {
			return false
		}
		p := v.Interface().(netip.Prefix)
		if p == netip.MustParsePrefix("10.9.8.0/24") {
			v.Set(reflect.ValueOf(netip.MustParsePrefix("10.9.8.0/25")))
		} else {
			v.Set(reflect.ValueOf(netip.MustParsePrefix("10.9.8.0/24")))
		}
	}
	return true
}

// leaves calls fn with the path and the value of each leaf field under v (structs other than
// netip.Prefix are walked into).
func leaves(path string, v reflect.Value, fn func(string, reflect.Value)) {
	if v.Kind() == reflect.Struct && v.Type() != reflect.TypeFor[netip.Prefix]() {
		for i := range v.NumField() {
			leaves(path+"."+v.Type().Field(i).Name, v.Field(i), fn)
		}
		return
	}
	fn(path, v)
}

func TestKeyCoversEveryField(t *testing.T) {
	base := Default()
	base.ExcludeInterfaces = []string{"eth1"}
	baseKey := base.Key()
	again := Default()
	again.ExcludeInterfaces = []string{"eth1"}
	if again.Key() != baseKey {
		t.Fatal("equal configurations have different keys")
	}
	seen := map[string]string{baseKey: "the base configuration"}
	count := 0
	leaves("Config", reflect.ValueOf(base).Elem(), func(path string, _ reflect.Value) {
		c := Default()
		c.ExcludeInterfaces = []string{"eth1"}
		var target reflect.Value
		leaves("Config", reflect.ValueOf(c).Elem(), func(p string, v reflect.Value) {
			if p == path {
				target = v
			}
		})
		if !perturb(target) {
			t.Errorf("%s: type %s has no case in perturb (and maybe none in Key)", path, target.Type())
			return
		}
		count++
		k := c.Key()
		if other, ok := seen[k]; ok {
			t.Errorf("changing %s gives the key of %s", path, other)
		}
		seen[k] = path
	})
	if want := 27; count != want {
		t.Errorf("%d leaf fields perturbed, want %d (a field was added: check Key encodes it)", count, want)
	}
}

// List boundaries are part of the key: ["a", "b"] is not ["ab"], and moving an element from one
// list to the next changes it.
func TestKeyListBoundaries(t *testing.T) {
	a, b := Default(), Default()
	a.ExcludeInterfaces, b.ExcludeInterfaces = []string{"a", "b"}, []string{"ab"}
	if a.Key() == b.Key() {
		t.Error(`ExcludeInterfaces ["a","b"] and ["ab"] have the same key`)
	}
	a, b = Default(), Default()
	a.ExcludeInterfaces, b.RerouteVirtualInterfaces = []string{"x"}, []string{"x"}
	if a.Key() == b.Key() {
		t.Error("an interface excluded and the same interface rerouted have the same key")
	}
	a, b = Default(), Default()
	a.OutboundPortsInclude, b.OutboundPortsExclude = []uint16{80}, []uint16{80}
	if a.Key() == b.Key() {
		t.Error("port 80 included and port 80 excluded have the same key")
	}
}

func BenchmarkKey(b *testing.B) {
	c := Default()
	for b.Loop() {
		_ = c.Key()
	}
}
