package record

// Root tests on real network namespaces: the record is written by root (as the controller does,
// inside the namespace), read and watched by an unprivileged process in that namespace (this test
// binary re-run as UID 1337 with no capabilities), and refused to every writer without
// CAP_NET_ADMIN over the namespace, root of a user namespace included.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/redhat-cop/istio-pod-network-controller/internal/testutil"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

// helperEnv selects a helper mode of the test binary (see TestMain).
const helperEnv = "RECORD_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "watch":
		os.Exit(helperWatch(os.Getenv("RECORD_TEST_UNTIL")))
	case "write":
		os.Exit(helperWrite(os.Getenv("RECORD_TEST_ALIAS")))
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// helperWatch subscribes, prints "subscribed uid=<uid>", then the alias ("alias=<alias>") at
// start and after every notification, until the alias is until.
func helperWatch(until string) int {
	w, err := NewWatcher()
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer w.Close()
	fmt.Printf("subscribed uid=%d\n", os.Getuid())
	last := "\x00"
	for {
		a, err := ReadAlias()
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		if a != last {
			fmt.Printf("alias=%s\n", a)
			last = a
		}
		if a == until {
			return 0
		}
		if err := w.Next(); err != nil {
			fmt.Println("error", err)
			return 1
		}
	}
}

// helperWrite tries to set the alias and prints the outcome.
func helperWrite(alias string) int {
	if err := WriteAlias(alias); err != nil {
		fmt.Printf("refused uid=%d: %v\n", os.Getuid(), err)
		return 0
	}
	fmt.Printf("written uid=%d\n", os.Getuid())
	return 0
}

// testBinary copies this test binary where every UID can run it.
func testBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "record-test-") // t.TempDir's parent is private to root
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "record.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// unprivileged is the command line that runs argv in the namespace as UID/GID 1337 with no
// capabilities at all (none inheritable, none in the bounding set), as a restricted pod's container.
func unprivileged(n *testutil.Netns, argv ...string) []string {
	return append([]string{"ip", "netns", "exec", n.Name, "setpriv", "--reuid", "1337", "--regid", "1337", "--clear-groups",
		"--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"}, argv...)
}

// inNetns runs fn inside the namespace (as root, as the controller does).
func inNetns(t *testing.T, n *testutil.Netns, fn func() error) error {
	t.Helper()
	h, err := ns.GetNS(n.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	return h.Do(func(ns.NetNS) error { return fn() })
}

func cookieOf(t *testing.T, n *testutil.Netns) contract.NetnsID {
	t.Helper()
	var id contract.NetnsID
	if err := inNetns(t, n, func() (err error) { id, err = contract.CurrentNetnsID(); return err }); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestWrittenByRootReadAndWatchedUnprivileged: every change of the alias, written, cleared and
// overwritten, reaches an unprivileged watcher in the namespace through RTNLGRP_LINK, and it reads
// each with RTM_GETLINK; nothing reaches a watcher in another namespace.
func TestWrittenByRootReadAndWatchedUnprivileged(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testBinary(t)
	pod, other := testutil.NewNetns(t), testutil.NewNetns(t)
	id := cookieOf(t, pod)
	first := Ready(id, "0123456789abcdef", contract.FamiliesIPv4)
	second := Ready(id, "fedcba9876543210", contract.FamiliesDual)

	watcher := startHelper(t, unprivileged(pod, bin), "RECORD_TEST_HELPER=watch", "RECORD_TEST_UNTIL="+second.String())
	bystander := startHelper(t, unprivileged(other, bin), "RECORD_TEST_HELPER=watch", "RECORD_TEST_UNTIL=never")
	watcher.expect(t, "subscribed uid=1337")
	bystander.expect(t, "subscribed uid=1337")
	watcher.expect(t, "alias=")
	bystander.expect(t, "alias=")

	for _, step := range []struct {
		what  string
		write func() error
		want  string
	}{
		{"write", func() error { return Write(first) }, first.String()},
		{"clear", Clear, ""},
		{"write again", func() error { return Write(first) }, first.String()},
		{"overwrite", func() error { return Write(second) }, second.String()},
	} {
		if err := inNetns(t, pod, step.write); err != nil {
			t.Fatalf("%s: %v", step.what, err)
		}
		watcher.expect(t, "alias="+step.want)
		var got Record
		var err error
		if ierr := inNetns(t, pod, func() error { got, err = Read(); return nil }); ierr != nil {
			t.Fatal(ierr)
		}
		switch {
		case step.want == "" && !errors.Is(err, ErrNoRecord):
			t.Errorf("after %s: Read = %+v, %v; want ErrNoRecord", step.what, got, err)
		case step.want != "" && (err != nil || got.String() != step.want):
			t.Errorf("after %s: Read = %+v, %v; want %q", step.what, got, err, step.want)
		}
	}
	if err := watcher.cmd.Wait(); err != nil {
		t.Errorf("watcher: %v\n%s", err, watcher.rest())
	}
	var bystanderAlias string
	if err := inNetns(t, other, func() (err error) { bystanderAlias, err = ReadAlias(); return err }); err != nil || bystanderAlias != "" {
		t.Errorf("the other namespace's lo alias is %q (%v), want none", bystanderAlias, err)
	}
	bystander.stop()
	if out := bystander.rest(); strings.Contains(out, "alias=pnc") {
		t.Errorf("a watcher in another namespace saw the record: %s", out)
	}
}

// TestNotWritableWithoutNetAdmin: UID 1337 without capabilities, and root of a new user namespace
// (full capabilities there, none over the pod's namespace), are both refused with EPERM, and the
// record is unchanged.
func TestNotWritableWithoutNetAdmin(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testBinary(t)
	pod := testutil.NewNetns(t)
	rec := Ready(cookieOf(t, pod), "0123456789abcdef", contract.FamiliesIPv4)
	if err := inNetns(t, pod, func() error { return Write(rec) }); err != nil {
		t.Fatal(err)
	}
	forged := Ready(rec.Netns, "ffffffffffffffff", contract.FamiliesDual).String()
	for _, tc := range []struct {
		name string
		argv []string
	}{
		{"unprivileged user", unprivileged(pod, bin)},
		{"root of a user namespace", []string{"ip", "netns", "exec", pod.Name, "setpriv", "--reuid", "1337", "--regid", "1337",
			"--clear-groups", "unshare", "--user", "--map-root-user", bin}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(tc.argv[0], tc.argv[1:]...)
			cmd.Env = append(os.Environ(), "RECORD_TEST_HELPER=write", "RECORD_TEST_ALIAS="+forged)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %v\n%s", tc.argv, err, out)
			}
			if !strings.HasPrefix(string(out), "refused") || !strings.Contains(string(out), unix.EPERM.Error()) {
				t.Errorf("writing the alias: %s; want refused with %v", out, unix.EPERM)
			}
			var got string
			if err := inNetns(t, pod, func() (err error) { got, err = ReadAlias(); return err }); err != nil || got != rec.String() {
				t.Errorf("alias after the attempt: %q, %v; want %q", got, err, rec.String())
			}
		})
	}
	// The positive control: the same helper as root in the namespace writes.
	cmd := exec.Command("ip", "netns", "exec", pod.Name, bin)
	cmd.Env = append(os.Environ(), "RECORD_TEST_HELPER=write", "RECORD_TEST_ALIAS="+forged)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "written uid=0") {
		t.Errorf("root in the namespace: %s %v; want written", out, err)
	}
}

// TestWriteRefusesOverlongAlias: the kernel keeps at most 255 bytes; longer is refused before it.
func TestWriteRefusesOverlongAlias(t *testing.T) {
	testutil.RequireRoot(t)
	pod := testutil.NewNetns(t)
	err := inNetns(t, pod, func() error { return WriteAlias(strings.Repeat("x", MaxLen+1)) })
	if err == nil {
		t.Fatal("a 256-byte alias was accepted")
	}
	if err := inNetns(t, pod, func() error { return WriteAlias(strings.Repeat("x", MaxLen)) }); err != nil {
		t.Errorf("a 255-byte alias: %v", err)
	}
}

// helperProc is a running helper with its output read line by line.
type helperProc struct {
	cmd   *exec.Cmd
	lines chan string
}

func startHelper(t *testing.T, argv []string, env ...string) *helperProc {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helperProc{cmd: cmd, lines: make(chan string, 64)}
	go func() {
		defer close(h.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	t.Cleanup(h.stop)
	return h
}

// expect waits for the next line and fails unless it is want.
func (h *helperProc) expect(t *testing.T, want string) {
	t.Helper()
	select {
	case l, ok := <-h.lines:
		if !ok {
			t.Fatalf("helper ended before %q", want)
		}
		if l != want {
			t.Fatalf("helper printed %q, want %q", l, want)
		}
	case <-time.After(30 * time.Second): // a guard against hangs, not a speed assertion
		t.Fatalf("helper printed nothing for 30s, want %q", want)
	}
}

func (h *helperProc) rest() string {
	var b strings.Builder
	for {
		select {
		case l, ok := <-h.lines:
			if !ok {
				return b.String()
			}
			b.WriteString(l + "\n")
		case <-time.After(100 * time.Millisecond):
			return b.String()
		}
	}
}

func (h *helperProc) stop() {
	if h.cmd.ProcessState == nil {
		_ = h.cmd.Process.Kill()
		_ = h.cmd.Wait()
	}
}
