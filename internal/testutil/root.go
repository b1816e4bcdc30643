// Package testutil holds small helpers shared by the project's tests.
package testutil

import (
	"os"
	"testing"
)

// RequireRoot gates a test that needs root (network namespaces, iptables, cgroups). Under -short
// (the fast loop, `make check`) it always skips, also as root and also in CI, which runs the full
// tests without -short. Otherwise, on a developer's laptop without root it skips; when the CI
// environment variable is set it fails instead, so CI never silently skips a privileged test.
func RequireRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs root (network namespaces, iptables): skipped under -short; runs in the full tests")
	}
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("this test needs root and CI=%q is set: run the tests as root", os.Getenv("CI"))
	}
	t.Skip("needs root (network namespaces, iptables); runs for real in CI")
}
