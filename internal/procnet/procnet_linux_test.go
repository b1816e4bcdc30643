package procnet

import (
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
)

// TestReadFailsClosed: a missing file is no data and no error (the module is not loaded); a file
// longer than the buffer is an error, never a truncated answer.
func TestReadFailsClosed(t *testing.T) {
	if data, err := read("no_such_tables_names", make([]byte, 512)); err != nil || data != nil {
		t.Fatalf("missing file: %q, %v; want nil, nil", data, err)
	}
	if _, err := read("dev", make([]byte, 8)); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("file longer than the buffer: %v, want an error saying so", err)
	}
	data, err := read("dev", make([]byte, 64<<10))
	if err != nil || !strings.Contains(string(data), "lo:") {
		t.Fatalf("read /proc/thread-self/net/dev: %q, %v", data, err)
	}
}

// TestLegacyTablesFilters: in a namespace where legacy iptables made its nat table, the list
// has it, the filter keeps only the named tables, and the IPv6 list is empty.
func TestLegacyTablesFilters(t *testing.T) {
	n := testutil.NewNetns(t)
	n.Run(t, "iptables-legacy", "-t", "nat", "-S")
	f, err := os.Open(n.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	home, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer home.Close()
	runtime.LockOSThread()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	all, errAll := LegacyTables(TableNames)
	nat, errNat := LegacyTables(TableNames, "mangle", "nat", "raw")
	none, errNone := LegacyTables(TableNames, "raw")
	v6, errV6 := LegacyTables(Table6Names)
	if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
		t.Fatal(err) // the thread stays locked and ends with the test's goroutine
	}
	runtime.UnlockOSThread()
	if errAll != nil || !slices.Contains(all, "nat") {
		t.Errorf("all tables: %q, %v; want nat among them", all, errAll)
	}
	if errNat != nil || !slices.Equal(nat, []string{"nat"}) {
		t.Errorf("filtered on mangle, nat, raw: %q, %v; want [nat]", nat, errNat)
	}
	if errNone != nil || len(none) != 0 {
		t.Errorf("filtered on raw: %q, %v; want none", none, errNone)
	}
	if errV6 != nil || len(v6) != 0 {
		t.Errorf("IPv6 tables: %q, %v; want none", v6, errV6)
	}
}
