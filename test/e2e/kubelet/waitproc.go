package kubelet

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
)

// The wait container: the real wait binary run as the pod's user inside its sandbox, and its exit.

// maxTerminationMessage is the kubelet's limit on a termination message.
const maxTerminationMessage = 4096

// startWait starts the wait container in the pod's sandbox, as its securityContext's user, in its
// own root file system, with its command and args.
func (k *Kubelet) startWait(pod *corev1.Pod, st *podState, c *corev1.Container) error {
	root := st.rootfs()
	argv, err := k.waitArgv(root, c)
	if err != nil {
		return err
	}
	msgPath := c.TerminationMessagePath
	if msgPath == "" {
		msgPath = corev1.TerminationMessagePathDefault
	}
	msgFile, err := inRoot(root, msgPath)
	if err != nil {
		return fmt.Errorf("container %q terminationMessagePath: %w", c.Name, err)
	}
	if err := os.MkdirAll(filepath.Dir(msgFile), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(msgFile, nil, 0o666); err != nil {
		return err
	}
	if err := os.Chmod(msgFile, 0o666); err != nil { // the kubelet's mode, whatever the umask
		return err
	}
	uid, gid, groups := runAs(pod, c)
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOSTNAME=" + pod.Name}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env = append(env, e.Name+"="+e.Value)
		}
	}
	id := containerID(st.sb.info.ID, c.Name, st.runs)
	p, err := startProc(procSpec{
		argv: argv, env: env, ns: st.sb.ns, chroot: root, uid: uid, gid: gid, groups: groups,
		log: filepath.Join(st.dir, fmt.Sprintf("%s-%d.log", c.Name, st.runs)), cgroups: leafCgroups(st.sb.cgroups, id),
	})
	if err != nil {
		return fmt.Errorf("start container %q: %w", c.Name, err)
	}
	st.wait = p
	st.run = containerRun{phase: runRunning, id: id, started: time.Now(), restarts: st.runs}
	st.runs++
	k.logf("%s: wait container started (pid %d, uid %d, gid %d) in sandbox %d", st.key, p.pid, uid, gid, st.gen)
	gen := st.gen
	k.wg.Go(func() { k.waitExit(st, gen, p, msgFile, c.TerminationMessagePolicy) })
	return nil
}

// waitArgv places the wait binary in the root file system and returns the container's argv: the
// image's entrypoint (/istio-pod-network-wait) or the container's command, then its args.
func (k *Kubelet) waitArgv(root string, c *corev1.Container) ([]string, error) {
	entry := "/istio-pod-network-wait"
	argv := []string{entry}
	if len(c.Command) > 0 {
		if filepath.Base(c.Command[0]) != "istio-pod-network-wait" {
			return nil, fmt.Errorf("container %q command %q: the simulated image holds only istio-pod-network-wait", c.Name, c.Command[0])
		}
		entry = c.Command[0]
		argv = slices.Clone(c.Command)
	}
	bin, err := inRoot(root, entry)
	if err != nil {
		return nil, fmt.Errorf("container %q command: %w", c.Name, err)
	}
	if _, err := os.Stat(bin); err != nil {
		if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
			return nil, err
		}
		if err := os.Link(k.image, bin); err != nil {
			return nil, fmt.Errorf("link the wait binary into the root file system: %w", err)
		}
	}
	return append(argv, c.Args...), nil
}

// runAs returns the container's UID, GID and supplementary groups as the kubelet resolves them.
func runAs(pod *corev1.Pod, c *corev1.Container) (uid, gid uint32, groups []uint32) {
	uid, gid = DefaultWaitUID, DefaultWaitUID
	psc := pod.Spec.SecurityContext
	if psc != nil {
		if psc.RunAsUser != nil {
			uid = uint32(*psc.RunAsUser)
		}
		if psc.RunAsGroup != nil {
			gid = uint32(*psc.RunAsGroup)
		}
		for _, g := range psc.SupplementalGroups {
			groups = append(groups, uint32(g))
		}
		if psc.FSGroup != nil {
			groups = append(groups, uint32(*psc.FSGroup))
		}
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = uint32(*sc.RunAsUser)
		}
		if sc.RunAsGroup != nil {
			gid = uint32(*sc.RunAsGroup)
		}
	}
	return uid, gid, groups
}

// waitExit waits for a wait process to exit, calls OnWaitExit while the sandbox still exists, and
// then records the exit so that the next status reports it.
func (k *Kubelet) waitExit(st *podState, gen int, p *proc, msgFile string, policy corev1.TerminationMessagePolicy) {
	<-p.done
	code := p.exitCode()
	now := time.Now()
	st.mu.Lock()
	if st.gone || st.gen != gen || st.wait != p {
		st.mu.Unlock()
		return // killed by Recreate or Stop
	}
	msg := terminationMessage(msgFile, p.log, code, policy)
	var pod *corev1.Pod
	if cur, err := k.lister.Pods(podNamespace(st.key)).Get(podName(st.key)); err == nil {
		pod = cur.DeepCopy()
	}
	sbInfo := st.sb.info
	var h *netns.Handle
	if st.sb.ns != nil {
		// A handle of our own keeps the namespace alive during the hook, whatever happens meanwhile.
		h, _ = netns.Open(fmt.Sprintf("/proc/self/fd/%d", st.sb.ns.Fd()))
	}
	st.mu.Unlock()
	st.infoMu.Lock()
	st.tl.WaitExited, st.tl.ExitCode = now, code
	st.infoMu.Unlock()
	k.logf("%s: wait container exited %d in sandbox %d%s", st.key, code, gen, quoteMsg(msg))
	if k.opts.OnWaitExit != nil && pod != nil {
		k.opts.OnWaitExit(k.ctx, WaitExit{Pod: pod, Sandbox: sbInfo, ExitCode: code, Message: msg, Netns: h})
	}
	if h != nil {
		_ = h.Close()
	}
	st.mu.Lock()
	if !st.gone && st.gen == gen && st.wait == p {
		st.wait = nil
		st.run.phase, st.run.finished, st.run.exitCode, st.run.message = runExited, now, code, msg
	}
	st.mu.Unlock()
	k.queue.Add(st.key)
}

func quoteMsg(msg string) string {
	if msg == "" {
		return ""
	}
	return fmt.Sprintf(": %q", msg)
}

// terminationMessage reads what the container wrote to its termination message file (at most
// 4096 bytes); with FallbackToLogsOnError and nothing written, the end of its log after a failure.
func terminationMessage(path, logPath string, code int, policy corev1.TerminationMessagePolicy) string {
	b, _ := readAtMost(path, maxTerminationMessage)
	if len(b) == 0 && code != 0 && policy == corev1.TerminationMessageFallbackToLogsOnError {
		if log, err := os.ReadFile(logPath); err == nil {
			if len(log) > 2048 {
				log = log[len(log)-2048:]
			}
			b = log
		}
	}
	return string(b)
}

func readAtMost(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, n))
}
