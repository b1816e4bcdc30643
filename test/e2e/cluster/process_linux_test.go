package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// TestStopLeavesNothing checks that Stop ends both processes and removes the temporary directory.
func TestStopLeavesNothing(t *testing.T) {
	c := StartForTest(t, Options{})
	pids := []int{c.etcd.cmd.Process.Pid, c.apiserver.cmd.Process.Pid}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d: kill -0 = %v after Stop, want ESRCH", pid, err)
		}
	}
	if !fileGone(c.Dir) {
		t.Errorf("state directory %s still there after Stop", c.Dir)
	}
}

// TestProcessesDieWithTheirParent SIGKILLs a process that started a cluster, as a crashed or
// timed-out test binary, and checks that etcd and kube-apiserver die with it.
func TestProcessesDieWithTheirParent(t *testing.T) {
	Require(t)
	tools, err := BuildTools(t.Context(), nil, "etcd", "kube-apiserver")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperStartAndWait$")
	cmd.Env = append(os.Environ(), "CLUSTER_HELPER_DIR="+t.TempDir(), "CLUSTER_HELPER_TOOLS="+tools)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	var pids [2]int
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if n, _ := fmt.Sscanf(sc.Text(), "PIDS %d %d", &pids[0], &pids[1]); n == 2 {
			break
		}
	}
	if pids[0] == 0 {
		t.Fatalf("helper printed no PIDS line (%v)", sc.Err())
	}
	cmd.Process.Kill()
	for _, pid := range pids {
		err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			// Zombies are reaped by init once the parent is gone; a zombie counts as dead.
			b, err := os.ReadFile(filepath.Join("/proc", fmt.Sprint(pid), "stat"))
			return err != nil || strings.Contains(string(b), ") Z "), nil
		})
		if err != nil {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("process %d still running after its parent was killed", pid)
		}
	}
}

// TestHelperStartAndWait is the child process of TestProcessesDieWithTheirParent.
func TestHelperStartAndWait(t *testing.T) {
	dir := os.Getenv("CLUSTER_HELPER_DIR")
	if dir == "" {
		t.Skip("helper process for TestProcessesDieWithTheirParent")
	}
	c, err := Start(t.Context(), Options{Dir: dir, ToolsDir: os.Getenv("CLUSTER_HELPER_TOOLS")})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("PIDS %d %d\n", c.etcd.cmd.Process.Pid, c.apiserver.cmd.Process.Pid)
	select {} // until killed
}
