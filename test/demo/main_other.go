//go:build !linux

// Command demo needs Linux: the simulated node uses network namespaces, veths and cgroups.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "demo: needs Linux (network namespaces, veths, cgroups) and root")
	os.Exit(1)
}
