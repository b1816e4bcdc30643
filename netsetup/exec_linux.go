package netsetup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/rules"
)

// binary returns the iptables tool of a backend and family: "save" or "restore".
func binary(b Backend, f rules.Family, tool string) string {
	prefix := "iptables"
	if f == rules.IPv6 {
		prefix = "ip6tables"
	}
	return prefix + "-" + string(b) + "-" + tool
}

// runner executes a tool on the calling OS thread, so it runs in that thread's network namespace
// (callers are inside Handle.Do). It is a field of the Applier so tests can count or fake execs.
type runner func(ctx context.Context, env []string, stdin string, name string, args ...string) (string, error)

// ExecError is a failed tool run: the command, its exit code and its own words.
type ExecError struct {
	Cmd    string
	Code   int
	Stderr string
	Input  string // the restore payload, when there was one
}

func (e *ExecError) Error() string {
	msg := fmt.Sprintf("%s: exit code %d: %s", e.Cmd, e.Code, strings.TrimSpace(e.Stderr))
	if line := failingLine(e.Stderr, e.Input); line != "" {
		msg += fmt.Sprintf(" (failing input: %q)", line)
	}
	return msg
}

// Is maps iptables' "lock busy" exit code (4) with its message to ErrLocked.
func (e *ExecError) Is(target error) bool {
	return target == ErrLocked && e.Code == 4 && strings.Contains(e.Stderr, "xtables lock")
}

// failingLine finds the payload line iptables-restore names ("line N failed", "Error occurred
// at line: N").
func failingLine(stderr, input string) string {
	if input == "" {
		return ""
	}
	var n int
	if i := strings.Index(stderr, "line: "); i >= 0 {
		_, _ = fmt.Sscanf(stderr[i:], "line: %d", &n)
	} else if i := strings.Index(stderr, "line "); i >= 0 {
		_, _ = fmt.Sscanf(stderr[i:], "line %d", &n)
	}
	if n < 1 {
		return ""
	}
	lines := strings.Split(input, "\n")
	if n > len(lines) {
		return ""
	}
	return lines[n-1]
}

func execTool(ctx context.Context, env []string, stdin string, name string, args ...string) (string, error) {
	return execWithFiles(ctx, env, stdin, nil, name, args...)
}

// execWithFiles runs name with extra open files (fd 3 onwards in the child).
func execWithFiles(ctx context.Context, env []string, stdin string, extra []*os.File, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.ExtraFiles = extra
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			return "", fmt.Errorf("%s: %w", name, err)
		}
		code := exit.ExitCode()
		return "", &ExecError{Cmd: name + " " + strings.Join(args, " "), Code: code, Stderr: stderr.String(), Input: stdin}
	}
	return stdout.String(), nil
}
