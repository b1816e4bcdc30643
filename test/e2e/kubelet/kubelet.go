package kubelet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/redhat-cop/istio-pod-network-controller/initwait/waittest"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
)

// maxTerminationMessage is the kubelet's limit on a termination message.
const maxTerminationMessage = 4096

// Kubelet is a running simulated kubelet. Its methods are safe for concurrent use.
type Kubelet struct {
	opts     Options
	nodeIP   string
	v4, v6   netip.Prefix
	stateDir string
	ownState bool
	image    string // the wait binary, copied into the state directory (root file systems link it)
	netw     *network

	ctx    context.Context
	cancel context.CancelFunc
	queue  workqueue.TypedRateLimitingInterface[string]
	lister corelisters.PodLister
	wg     sync.WaitGroup
	create chan struct{} // a slot per sandbox being created

	mu      sync.Mutex
	alloc   *ipAllocator
	pods    map[string]*podState // by namespace/name
	cgroups []string             // cgroup directories the simulator created, parents first
	stopped bool
}

// podState is the simulator's state of one pod (one UID).
type podState struct {
	key string
	uid types.UID
	dir string

	mu      sync.Mutex // held by sync, Recreate, Stop and the wait exit handler
	sb      *sandbox
	gen     int
	offset  uint32 // IP offset, valid when hasIP
	hasIP   bool
	wait    *proc
	run     containerRun
	pending bool // a sandbox creation is queued
	runs    int32
	written []byte            // last status patch accepted
	volumes map[string][]byte // last content published per volume directory
	cgroups []string          // the pod's cgroup directories, once made
	gone    bool
	start   time.Time

	infoMu sync.Mutex // protects tl and info, for accessors and the informer handler
	tl     Timeline
	info   Sandbox
}

// sandbox is a pod's network namespace and pause process.
type sandbox struct {
	info     Sandbox
	ready    time.Time
	ns       *netns.Handle // nil for hostNetwork pods
	pause    *proc
	register string   // bind-mounted namespace path, or ""
	cgroups  []string // the pod's cgroup directories
}

// Start checks the host, creates the node bridge, starts watching the node's pods and returns
// once the informer has synced. ctx bounds the start only; the simulator runs until Stop.
func Start(ctx context.Context, opts Options) (_ *Kubelet, err error) {
	opts, err = opts.withDefaults()
	if err != nil {
		return nil, err
	}
	k := &Kubelet{opts: opts, pods: map[string]*podState{}, create: make(chan struct{}, opts.SandboxWorkers)}
	k.v4, _ = netip.ParsePrefix(opts.PodCIDRv4)
	k.v6, _ = netip.ParsePrefix(opts.PodCIDRv6)
	k.alloc = newIPAllocator(k.v4, k.v6)
	if k.nodeIP = opts.NodeIP; k.nodeIP == "" {
		if k.nodeIP, err = nodeInternalIP(ctx, opts); err != nil {
			return nil, err
		}
	}
	if err := k.makeStateDir(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = k.Stop()
		}
	}()
	if k.netw, err = newNetwork(opts, k.v4, k.v6); err != nil {
		return nil, err
	}
	k.ctx, k.cancel = context.WithCancel(context.Background())
	k.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 2*time.Second),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "kubelet-sim"})
	factory := informers.NewSharedInformerFactoryWithOptions(opts.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", opts.NodeName).String()
		}))
	podInformer := factory.Core().V1().Pods()
	k.lister = podInformer.Lister()
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.observe(obj) },
		UpdateFunc: func(_, obj any) { k.observe(obj) },
		DeleteFunc: func(obj any) {
			if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
				k.queue.Add(key)
			}
		},
	}); err != nil {
		return nil, err
	}
	factory.Start(k.ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return nil, fmt.Errorf("kubelet: informer cache for %v did not sync: %w", typ, context.Cause(ctx))
		}
	}
	for range opts.Workers {
		k.wg.Go(func() {
			for k.processNext() {
			}
		})
	}
	k.logf("simulated kubelet for node %s running: bridge %s (%s, %s), state in %s", opts.NodeName, opts.Bridge, k.v4, k.v6, k.stateDir)
	return k, nil
}

func nodeInternalIP(ctx context.Context, opts Options) (string, error) {
	node, err := opts.Client.CoreV1().Nodes().Get(ctx, opts.NodeName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("kubelet: read Node %q for its InternalIP (or set Options.NodeIP): %w", opts.NodeName, err)
	}
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address, nil
		}
	}
	return "", fmt.Errorf("kubelet: Node %q has no InternalIP address: set Options.NodeIP", opts.NodeName)
}

// makeStateDir creates the state directory and copies the wait binary into it, so root file
// systems can hard-link it.
func (k *Kubelet) makeStateDir() error {
	if k.opts.StateDir == "" {
		dir, err := os.MkdirTemp("", "kubelet-sim-")
		if err != nil {
			return fmt.Errorf("kubelet: state directory: %w", err)
		}
		k.stateDir, k.ownState = dir, true
	} else {
		k.stateDir = k.opts.StateDir
	}
	// Pods' root file systems must be traversable by unprivileged wait processes.
	if err := os.MkdirAll(filepath.Join(k.stateDir, "pods"), 0o755); err != nil {
		return fmt.Errorf("kubelet: state directory: %w", err)
	}
	if err := os.Chmod(k.stateDir, 0o755); err != nil {
		return fmt.Errorf("kubelet: state directory: %w", err)
	}
	k.image = filepath.Join(k.stateDir, "istio-pod-network-wait")
	return copyFile(k.opts.WaitBinary, k.image, 0o755)
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

func (k *Kubelet) logf(format string, args ...any) {
	fmt.Fprintf(k.opts.Log, "%s kubelet: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// observe is the informer's add/update handler: it records when a pod's namespace is annotated
// ready, then enqueues the pod.
func (k *Kubelet) observe(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	key := pod.Namespace + "/" + pod.Name
	k.mu.Lock()
	st := k.pods[key]
	k.mu.Unlock()
	if st != nil && st.uid == pod.UID {
		st.infoMu.Lock()
		if st.tl.Annotated.IsZero() && st.info.NetnsID != "" &&
			pod.Annotations[contract.KeyStatus] == string(contract.StatusReady) &&
			pod.Annotations[contract.KeyNetns] == st.info.NetnsID {
			st.tl.Annotated = time.Now()
		}
		st.infoMu.Unlock()
	}
	k.queue.Add(key)
}

func (k *Kubelet) processNext() bool {
	key, quit := k.queue.Get()
	if quit {
		return false
	}
	defer k.queue.Done(key)
	if err := k.sync(key); err != nil {
		if k.ctx.Err() == nil {
			k.logf("%s: %v (retrying)", key, err)
			k.queue.AddRateLimited(key)
		}
		return true
	}
	k.queue.Forget(key)
	return true
}

// state returns the state of pod, replacing the state of an earlier pod of the same name.
func (k *Kubelet) state(pod *corev1.Pod) *podState {
	key := pod.Namespace + "/" + pod.Name
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return nil
	}
	st := k.pods[key]
	if st != nil && st.uid == pod.UID {
		k.mu.Unlock()
		return st
	}
	if st != nil {
		delete(k.pods, key)
	}
	now := time.Now()
	nst := &podState{key: key, uid: pod.UID, volumes: map[string][]byte{}, start: now,
		dir: filepath.Join(k.stateDir, "pods", fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID))}
	nst.tl.Seen = now
	k.pods[key] = nst
	k.mu.Unlock()
	if st != nil {
		k.remove(st)
	}
	return nst
}

// remove tears a pod's state down for good.
func (k *Kubelet) remove(st *podState) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.gone {
		return
	}
	st.gone = true
	k.teardownSandbox(st, false)
	removeCgroupDirs(st.cgroups)
	_ = os.RemoveAll(st.dir)
}

func (k *Kubelet) sync(key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := k.lister.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		k.mu.Lock()
		st := k.pods[key]
		delete(k.pods, key)
		k.mu.Unlock()
		if st != nil {
			k.remove(st)
			k.logf("%s: gone, sandbox removed", key)
		}
		return nil
	}
	if err != nil {
		return err
	}
	st := k.state(pod)
	if st == nil {
		return nil // stopping
	}
	if pod.DeletionTimestamp != nil {
		k.remove(st)
		// The kubelet confirms a deletion once the pod's containers are gone.
		err := k.opts.Client.CoreV1().Pods(ns).Delete(k.ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr(int64(0)), Preconditions: &metav1.Preconditions{UID: &pod.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("confirm deletion: %w", err)
		}
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.gone {
		return nil
	}
	return k.syncLocked(pod, st)
}

// syncLocked brings a pod's sandbox, volumes, wait container and status up to date. st.mu is held.
func (k *Kubelet) syncLocked(pod *corev1.Pod, st *podState) error {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed && st.sb == nil {
		return nil
	}
	if st.sb == nil {
		if !st.pending {
			st.pending = true
			k.wg.Go(func() { k.createAsync(st, pod.DeepCopy()) })
		}
		return nil
	}
	waitC := initContainer(pod, k.opts.WaitContainerName)
	if waitC != nil {
		if err := k.publishVolumes(pod, st, waitC); err != nil {
			return err
		}
		if st.run.phase == runNotStarted {
			if err := k.startWait(pod, st, waitC); err != nil {
				return err
			}
		}
	}
	return k.writeStatus(pod, st)
}

// createAsync creates the pod's sandbox when a creation slot is free, then has the pod synced.
func (k *Kubelet) createAsync(st *podState, pod *corev1.Pod) {
	select {
	case k.create <- struct{}{}:
	case <-k.ctx.Done():
		return
	}
	defer func() { <-k.create }()
	st.mu.Lock()
	st.pending = false
	var err error
	if !st.gone && st.sb == nil {
		err = k.createSandbox(pod, st)
	}
	st.mu.Unlock()
	if err != nil {
		k.logf("%s: %v (retrying)", st.key, err)
		k.queue.AddRateLimited(st.key)
		return
	}
	k.queue.Add(st.key)
}

// createSandbox allocates the pod's IPs and creates its namespace and pause process.
func (k *Kubelet) createSandbox(pod *corev1.Pod, st *podState) error {
	dual, err := ipFamilies(pod)
	if err != nil {
		k.logf("%s: %v: giving it IPv4 only", st.key, err)
	}
	host := pod.Spec.HostNetwork
	var ips []netip.Addr
	if host {
		ip, err := netip.ParseAddr(k.nodeIP)
		if err != nil {
			return fmt.Errorf("node IP %q: %w", k.nodeIP, err)
		}
		ips = []netip.Addr{ip}
	} else {
		if !st.hasIP {
			k.mu.Lock()
			st.offset, err = k.alloc.allocate()
			k.mu.Unlock()
			if err != nil {
				return err
			}
			st.hasIP = true
		}
		ips = k.alloc.ips(st.offset, dual)
	}
	if err := os.MkdirAll(st.dir, 0o755); err != nil {
		return err
	}
	if st.cgroups == nil {
		if st.cgroups, err = k.makePodCgroups(pod); err != nil {
			return err
		}
	}
	sb := &sandbox{info: Sandbox{ID: newSandboxID(), Generation: st.gen + 1, HostNetwork: host, IPs: ips}, cgroups: st.cgroups}
	if err := k.netw.create(sb, pod.Annotations[AnnotationRegisterNetns] != "false", filepath.Join(st.dir, "pause.log")); err != nil {
		return fmt.Errorf("create sandbox: %w", err)
	}
	now := time.Now()
	sb.ready = now
	st.sb = sb
	st.gen = sb.info.Generation
	st.written = nil
	st.infoMu.Lock()
	st.info = sb.info
	if st.gen > 1 {
		st.tl = Timeline{Seen: now}
	}
	st.tl.SandboxReady = now
	st.infoMu.Unlock()
	k.logf("%s: sandbox %d up: netns %s (%s), IPs %v", st.key, st.gen, sb.info.NetnsPath, sb.info.NetnsID, ips)
	return nil
}

// teardownSandbox kills the pod's processes and removes its namespace; keepIP keeps the pod's
// address offset for the next sandbox.
func (k *Kubelet) teardownSandbox(st *podState, keepIP bool) {
	if st.wait != nil {
		st.wait.kill()
		st.wait = nil
	}
	if st.sb != nil {
		k.netw.destroy(st.sb)
		st.sb = nil
		st.infoMu.Lock()
		st.info = Sandbox{}
		st.infoMu.Unlock()
	}
	if !keepIP && st.hasIP {
		k.mu.Lock()
		k.alloc.release(st.offset)
		k.mu.Unlock()
		st.hasIP = false
	}
}

// rootfs is the wait container's root file system: the binary, its volumes, its termination log.
func (st *podState) rootfs() string { return filepath.Join(st.dir, "rootfs") }

// publishVolumes writes the wait container's downward-API volumes into its root file system when
// their content changed, with the kubelet's atomic symlink swap; other volumes are empty
// directories.
func (k *Kubelet) publishVolumes(pod *corev1.Pod, st *podState, c *corev1.Container) error {
	for _, m := range c.VolumeMounts {
		i := slices.IndexFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 {
			return fmt.Errorf("container %q mounts volume %q, which the pod does not declare", c.Name, m.Name)
		}
		dir, err := inRoot(st.rootfs(), m.MountPath)
		if err != nil {
			return fmt.Errorf("container %q volume %q: %w", c.Name, m.Name, err)
		}
		files, err := volumeFiles(pod, &pod.Spec.Volumes[i])
		if err != nil {
			return err
		}
		if files == nil {
			if err := os.MkdirAll(dir, 0o777); err != nil {
				return err
			}
			if err := os.Chmod(dir, 0o1777); err != nil {
				return err
			}
			continue
		}
		var sum bytes.Buffer
		for _, name := range slices.Sorted(maps.Keys(files)) {
			fmt.Fprintf(&sum, "%q=%q\n", name, files[name])
		}
		if bytes.Equal(st.volumes[dir], sum.Bytes()) {
			continue
		}
		if err := waittest.WriteAtomic(dir, files); err != nil {
			return fmt.Errorf("publish volume %q: %w", m.Name, err)
		}
		st.volumes[dir] = sum.Bytes()
	}
	return nil
}

// inRoot joins an absolute container path to a root directory, refusing paths that leave it.
func inRoot(root, p string) (string, error) {
	if !filepath.IsAbs(p) || slices.Contains(strings.Split(p, "/"), "..") {
		return "", fmt.Errorf("path %q: want an absolute path without \"..\"", p)
	}
	return filepath.Join(root, p), nil
}

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

func podNamespace(key string) string { ns, _, _ := strings.Cut(key, "/"); return ns }
func podName(key string) string      { _, n, _ := strings.Cut(key, "/"); return n }

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

// writeStatus patches the pod status through the status subresource when it changed.
func (k *Kubelet) writeStatus(pod *corev1.Pod, st *podState) error {
	in := statusInput{pod: pod, waitName: k.opts.WaitContainerName, hostIP: k.nodeIP, startTime: st.start, wait: st.run}
	if st.sb != nil {
		in.podIPs, in.sandboxReady, in.sandboxID = st.sb.info.IPs, st.sb.ready, st.sb.info.ID
	}
	status := buildStatus(in)
	// metadata.uid makes the patch conditional on the pod being this one, as the kubelet does.
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"uid": st.uid}, "status": status})
	if err != nil {
		return err
	}
	if bytes.Equal(body, st.written) {
		return nil
	}
	_, err = k.opts.Client.CoreV1().Pods(pod.Namespace).Patch(k.ctx, pod.Name, types.MergePatchType, body, metav1.PatchOptions{}, "status")
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // deleted or replaced: the informer will tell
	}
	if err != nil {
		return fmt.Errorf("patch status: %w", err)
	}
	st.written = body
	now := time.Now()
	st.infoMu.Lock()
	if st.tl.IPPublished.IsZero() && len(in.podIPs) > 0 {
		st.tl.IPPublished = now
	}
	released := in.released()
	if released && st.tl.Released.IsZero() {
		st.tl.Released = now
	}
	st.infoMu.Unlock()
	if released && hasInitContainer(pod, k.opts.WaitContainerName) {
		k.logf("%s: released (Running)", st.key)
	}
	return nil
}

// find returns the state of the pod with UID uid.
func (k *Kubelet) find(uid types.UID) *podState {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, st := range k.pods {
		if st.uid == uid {
			return st
		}
	}
	return nil
}

// Sandbox returns the current sandbox of the pod with UID uid.
func (k *Kubelet) Sandbox(uid types.UID) (Sandbox, bool) {
	st := k.find(uid)
	if st == nil {
		return Sandbox{}, false
	}
	st.infoMu.Lock()
	defer st.infoMu.Unlock()
	return st.info, st.info.ID != ""
}

// Timeline returns what happened to the pod's current sandbox, and when.
func (k *Kubelet) Timeline(uid types.UID) (Timeline, bool) {
	st := k.find(uid)
	if st == nil {
		return Timeline{}, false
	}
	st.infoMu.Lock()
	defer st.infoMu.Unlock()
	return st.tl, true
}

// OpenNetns opens the current network namespace of the pod with UID uid; the caller closes it.
func (k *Kubelet) OpenNetns(uid types.UID) (*netns.Handle, error) {
	st := k.find(uid)
	if st == nil {
		return nil, fmt.Errorf("pod UID %q: not simulated", uid)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.sb == nil || st.sb.ns == nil {
		return nil, fmt.Errorf("pod UID %q: no network namespace of its own", uid)
	}
	return netns.Open(fmt.Sprintf("/proc/self/fd/%d", st.sb.ns.Fd()))
}

// WaitLogs returns the output of every run of the pod's wait container so far.
func (k *Kubelet) WaitLogs(uid types.UID) string {
	st := k.find(uid)
	if st == nil {
		return ""
	}
	var b strings.Builder
	for run := range st.runCount() {
		data, _ := os.ReadFile(filepath.Join(st.dir, fmt.Sprintf("%s-%d.log", k.opts.WaitContainerName, run)))
		fmt.Fprintf(&b, "--- run %d ---\n%s", run, data)
	}
	return b.String()
}

func (st *podState) runCount() int32 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.runs
}

// Recreate replaces the sandbox of the pod with UID uid, as the kubelet does when a sandbox dies: a
// new network namespace (keeping the pod's IPs unless newIP), the wait container running again
// (after the old one is killed), and the status saying so. It returns once the new sandbox runs.
func (k *Kubelet) Recreate(ctx context.Context, uid types.UID, newIP bool) (Sandbox, error) {
	st := k.find(uid)
	if st == nil {
		return Sandbox{}, fmt.Errorf("recreate: pod UID %q: not simulated", uid)
	}
	pod, err := k.lister.Pods(podNamespace(st.key)).Get(podName(st.key))
	if err != nil {
		return Sandbox{}, fmt.Errorf("recreate %s: %w", st.key, err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.gone || st.sb == nil {
		return Sandbox{}, fmt.Errorf("recreate %s: it has no sandbox", st.key)
	}
	if st.sb.info.HostNetwork {
		return Sandbox{}, fmt.Errorf("recreate %s: a hostNetwork pod has no sandbox namespace to replace", st.key)
	}
	k.teardownSandbox(st, !newIP)
	st.run = containerRun{restarts: st.runs}
	k.logf("%s: sandbox %d removed, re-creating (new IP: %t)", st.key, st.gen, newIP)
	for {
		err := k.createSandbox(pod, st)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return Sandbox{}, fmt.Errorf("recreate %s: %w (last error: %v)", st.key, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := k.syncLocked(pod.DeepCopy(), st); err != nil {
		k.queue.AddRateLimited(st.key) // the sync loop retries what failed
	}
	return st.sb.info, nil
}

// Stop stops watching, kills every simulated process, removes the namespaces, veths, bridge,
// cgroups and (if Start made it) the state directory. Pod objects are left in the API. It is safe
// to call more than once.
func (k *Kubelet) Stop() error {
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return nil
	}
	k.stopped = true
	k.mu.Unlock()
	if k.cancel != nil {
		k.cancel()
	}
	if k.queue != nil {
		k.queue.ShutDown()
	}
	k.mu.Lock()
	pods := make([]*podState, 0, len(k.pods))
	for _, st := range k.pods {
		pods = append(pods, st)
	}
	k.mu.Unlock()
	for _, st := range pods {
		k.remove(st)
	}
	k.wg.Wait()
	var errs []error
	if k.netw != nil {
		errs = append(errs, k.netw.close())
	}
	k.mu.Lock()
	removeCgroupDirs(k.cgroups)
	k.mu.Unlock()
	if k.ownState {
		errs = append(errs, os.RemoveAll(k.stateDir))
	}
	return errors.Join(errs...)
}
