package images

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
)

// Both archives load into a real containerd (the real node's, built by test/tools/build.sh) as
// `make images` users load them, and their containers run under runc.
func TestArchivesImportIntoContainerd(t *testing.T) {
	ctl, _ := buildController(t) // root-gated
	wait, err := Image(context.Background(), Wait, binaries(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var log bytes.Buffer
	tools, err := cluster.BuildTools(ctx, &log, "containerd")
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Fatalf("runc: %v (test/tools/deps.sh installs it)", err)
	}
	dir, err := os.MkdirTemp("", "images-containerd-") // short: the socket path has a length limit
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ns := fmt.Sprintf("images-test-%d", os.Getpid())
	t.Cleanup(func() { removeCgroups(ns) }) // after containerd stopped (cleanups run last first)
	sock := startContainerd(t, tools, dir)

	archives := map[string]v1.Image{Tag("ghcr.io/redhat-cop", Controller, "test"): ctl, Tag("ghcr.io/redhat-cop", Wait, "test"): wait}
	ctr := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, filepath.Join(tools, "ctr"), append([]string{"--address", sock, "--namespace", ns}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	for tag, img := range archives {
		path := filepath.Join(dir, strings.ReplaceAll(filepath.Base(tag), ":", "_")+".tar")
		if err := WriteArchive(path, map[string]v1.Image{tag: img}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		ctr("images", "import", path)
		t.Logf("ctr images import %s: %s", tag, time.Since(start).Round(time.Millisecond))
	}
	listed := ctr("images", "ls", "-q")
	for tag := range archives {
		if !strings.Contains(listed, tag+"\n") {
			t.Errorf("ctr images ls -q after import:\n%s\nwant %s", listed, tag)
		}
	}
	if out := ctr("run", "--rm", Tag("ghcr.io/redhat-cop", Wait, "test"), "wait-help", "/istio-pod-network-wait", "--help"); !strings.Contains(out, "istio-pod-network-wait") {
		t.Errorf("the wait image's binary under runc: %s", out)
	}
	if out := ctr("run", "--rm", Tag("ghcr.io/redhat-cop", Controller, "test"), "ctl-iptables", "iptables-legacy-save", "--version"); !strings.Contains(out, "(legacy)") {
		t.Errorf("iptables-legacy-save in the controller image under runc: %s", out)
	}
}

// removeCgroups removes the empty parent cgroups `ctr run` made for namespace ns.
func removeCgroups(ns string) {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + ns)
	for _, d := range append(dirs, "/sys/fs/cgroup/"+ns) {
		os.Remove(d)
	}
}

// startContainerd runs a private containerd (its own root, state and socket under dir, without the
// CRI and NRI plugins) until the test ends, and returns its socket.
func startContainerd(t *testing.T, tools, dir string) string {
	t.Helper()
	sock := filepath.Join(dir, "c.sock")
	config := fmt.Sprintf("version = 3\nroot = %q\nstate = %q\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.cri.v1.images\", \"io.containerd.cri.v1.runtime\", \"io.containerd.nri.v1.nri\"]\n[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc")
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(tools, "containerd"), "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "PATH="+tools+":"+os.Getenv("PATH")) // the shim, found on PATH
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if out, err := exec.Command(filepath.Join(tools, "ctr"), "--address", sock, "version").CombinedOutput(); err == nil {
			return sock
		} else if time.Now().After(deadline) {
			data, _ := os.ReadFile(logf.Name())
			t.Fatalf("containerd did not answer on %s: %v\n%s\ncontainerd's log:\n%s", sock, err, out, data)
		}
	}
}
