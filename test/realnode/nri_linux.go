package realnode

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

// The synchronous release check (test/realnode/nricheck): an NRI plugin containerd launches and
// calls on every StartContainer. containerd's NRI calls are synchronous: CreateContainer and
// StartContainer both wait for every plugin's reply (under one lock) and fail the operation on an
// error; StartContainer comes after the container is created and right before its task starts
// (containerd's internal/cri/server/container_start.go), the last point before the process runs.
// See docs/e2e.md, "The release check at the runtime".
const (
	releaseCheckName   = "ipnc-check"
	releaseCheckModule = "test/realnode/nricheck"
	// nriRequestTimeout bounds one plugin call; the plugin's own API reads give up after 40 s
	// (an API server restart), so a check never times out (containerd would drop the plugin).
	nriRequestTimeout = "60s"
)

// BuildReleaseCheck builds the NRI plugin of test/realnode/nricheck (a module of its own, so that
// github.com/containerd/nri stays out of the main module) into dir and returns the binary, for
// Options.ReleaseCheck.
func BuildReleaseCheck(ctx context.Context, dir string) (string, error) {
	root, err := harness.ModuleRoot(ctx)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "nricheck")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, ".")
	cmd.Dir = filepath.Join(root, releaseCheckModule)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the release check (%s): %w\n%s", releaseCheckModule, err, out)
	}
	return bin, nil
}

// nriSection is containerd's NRI configuration: off without a release check; with one, on, with
// the node's own socket and plugin directories, external connections refused, and the plugin
// pre-installed (containerd launches it at every start and waits for it to register).
func nriSection(d dirs, on bool) string {
	if !on {
		return `disabled_plugins = ["io.containerd.nri.v1.nri"]`
	}
	return fmt.Sprintf(`[plugins."io.containerd.nri.v1.nri"]
  disable = false
  disable_connections = true
  socket_path = %q
  plugin_path = %q
  plugin_config_path = %q
  plugin_registration_timeout = "30s"
  plugin_request_timeout = %q`, d.nriDir("nri.sock"), d.nriDir("plugins"), d.nriDir("conf.d"), nriRequestTimeout)
}

// installReleaseCheck puts the plugin binary and its configuration where containerd finds them.
func (n *Node) installReleaseCheck(bin string) error {
	for _, sub := range []string{"plugins", "conf.d", "locks"} {
		if err := os.MkdirAll(n.d.nriDir(sub), 0o755); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return fmt.Errorf("release check binary: %w", err)
	}
	if err := os.WriteFile(filepath.Join(n.d.nriDir("plugins"), "10-"+releaseCheckName), data, 0o755); err != nil {
		return err
	}
	conf, err := json.Marshal(map[string]string{
		"kubeconfig": n.Cluster.AdminKubeconfig, "records": n.releaseRecords(),
		"waitContainer": harness.WaitContainer, "lockDir": n.d.nriDir("locks"),
	})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(n.d.nriDir("conf.d"), releaseCheckName+".conf"), conf, 0o644)
}

func (n *Node) releaseRecords() string { return n.d.nriDir("release-checks.jsonl") }

// ReleaseCheck is one record of the release check (the plugin's Record): Kind "configured" (the
// plugin started with containerd), "check" (a container after a pod's wait container, inspected
// right before it started) or "gone" (its pod was deleted first).
type ReleaseCheck struct {
	Time        time.Time `json:"time"`
	Kind        string    `json:"kind"`
	Pod         string    `json:"pod"`
	UID         string    `json:"uid"`
	Container   string    `json:"container"`
	Netns       string    `json:"netns"`
	NetnsID     string    `json:"netnsID"`
	Annotation  string    `json:"annotation"`
	Verdict     string    `json:"verdict"`
	Source      string    `json:"source"` // what said ready: the annotations, or the release record
	Explanation string    `json:"explanation"`
	Violation   bool      `json:"violation"`
	Took        string    `json:"took"`
}

func (c ReleaseCheck) String() string {
	return fmt.Sprintf("%s %s %s container %s netns %s (%s, released for %s by %s): %s (took %s)",
		c.Time.Format("15:04:05.000"), c.Kind, c.Pod, c.Container, c.NetnsID, c.Netns, c.Annotation, c.Source, c.Explanation, c.Took)
}

// ReleaseChecks returns every record the release check wrote so far; an error if the node runs
// without it.
func (n *Node) ReleaseChecks() ([]ReleaseCheck, error) {
	if !n.releaseCheck {
		return nil, fmt.Errorf("the node runs without the release check (Options.ReleaseCheck)")
	}
	data, err := os.ReadFile(n.releaseRecords())
	if err != nil {
		return nil, fmt.Errorf("the release check's records: %w", err)
	}
	lines := strings.Split(string(data), "\n")
	var out []ReleaseCheck
	for _, line := range lines[:len(lines)-1] { // the last one is being written, or empty
		var c ReleaseCheck
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			return nil, fmt.Errorf("the release check's records: line %q: %w", line, err)
		}
		out = append(out, c)
	}
	return out, nil
}
