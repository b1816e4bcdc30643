package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// procIndex is one walk of ProcDir: for each network namespace some process runs in, which
// processes, and which pods' cgroups they run in. A Find walks at most once (search.procIndex),
// for the proc strategies and the proof alike.
type procIndex struct {
	st    procStats
	order []Key // namespaces in the order first seen
	ns    map[Key]*nsProcs
}

// nsProcs is what the walk saw in one namespace. The cgroups of its processes are read when first
// needed (search.podsIn): proving a candidate reads those of the processes in it only.
type nsProcs struct {
	all     []int            // processes in it
	pids    []int            // the first few, for messages
	read    bool             // the cgroups were read: pods, host and unknown are set
	pods    map[string][]int // normalized pod UID → its processes in it (the first few)
	host    int              // processes in it in no pod's cgroup, or in the controller's own
	unknown int              // processes in it whose cgroup could not be read
}

// procIndex walks ProcDir once per Find: /proc/<pid>/ns/net of every process (which needs ptrace
// rights over the process).
func (s *search) procIndex() *procIndex {
	if s.procs != nil {
		return s.procs
	}
	f := s.f
	f.procScans.Add(1)
	idx := &procIndex{st: procStats{dir: f.opts.ProcDir}, ns: map[Key]*nsProcs{}}
	s.procs = idx
	names, err := readDirNames(f.opts.ProcDir)
	if err != nil {
		idx.st.failures = failures{n: 1, first: err}
		return idx
	}
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid <= 0 {
			continue
		}
		if err := s.ctx.Err(); err != nil {
			idx.st.fail(err)
			break
		}
		idx.st.procs++
		k, err := statKey(f.procPath(pid, "ns/net"))
		if err != nil {
			idx.st.fail(err)
			continue
		}
		np := idx.ns[k]
		if np == nil {
			np = &nsProcs{}
			idx.ns[k] = np
			idx.order = append(idx.order, k)
		}
		np.all = append(np.all, pid)
		np.pids = appendPID(np.pids, pid)
	}
	return idx
}

// podsIn reads the cgroups of the processes in np, once: which pods run in the namespace.
func (s *search) podsIn(np *nsProcs) *nsProcs {
	if np.read {
		return np
	}
	np.read, np.pods = true, map[string][]int{}
	for _, pid := range np.all {
		data, err := os.ReadFile(s.f.procPath(pid, "cgroup"))
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) { // exited meanwhile
				np.unknown++
				s.procs.st.fail(err)
			}
			continue
		}
		uids := slices.DeleteFunc(cgroupPodUIDs(string(data)), func(uid string) bool {
			return slices.Contains(s.f.selfPods, uid) // the controller, and what it runs
		})
		if len(uids) == 0 {
			np.host++
		}
		for _, uid := range uids {
			np.pods[uid] = appendPID(np.pods[uid], pid)
		}
	}
	return np
}

// procConfirms re-reads process pid after the walk, with the candidate held open (so that no other
// live namespace has its key): it still runs in namespace k, in a cgroup of the pod nuid.
func (f *Finder) procConfirms(pid int, k Key, nuid string) bool {
	if got, err := statKey(f.procPath(pid, "ns/net")); err != nil || got != k {
		return false
	}
	data, err := os.ReadFile(f.procPath(pid, "cgroup"))
	if err != nil || !cgroupHasPod(string(data), nuid) {
		return false
	}
	got, err := statKey(f.procPath(pid, "ns/net")) // the pid was not reused meanwhile
	return err == nil && got == k
}

// procPaths returns the /proc/<pid>/ns/net paths of pids.
func (f *Finder) procPaths(pids []int) []string {
	out := make([]string, len(pids))
	for i, pid := range pids {
		out[i] = f.procPath(pid, "ns/net")
	}
	return out
}

func (f *Finder) procPath(pid int, rel string) string {
	return f.opts.ProcDir + "/" + strconv.Itoa(pid) + "/" + rel
}

// failures counts errors, keeping the first.
type failures struct {
	n     int
	first error
}

// fail counts err; a file or process that vanished meanwhile is not a failure.
func (s *failures) fail(err error) {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return
	}
	s.n++
	if s.first == nil {
		s.first = err
	}
}

func (s failures) suffix() string {
	if s.n == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d unreadable, first: %v)", s.n, s.first)
}

// procStats counts the processes a walk looked at.
type procStats struct {
	dir   string
	procs int
	failures
}

func (s procStats) String() string {
	return fmt.Sprintf("%d processes in %s%s", s.procs, s.dir, s.suffix())
}

func appendPID(pids []int, pid int) []int {
	if len(pids) < maxPIDs && !slices.Contains(pids, pid) {
		pids = append(pids, pid)
	}
	return pids
}

func statKey(path string) (Key, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return Key{}, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	return Key{Dev: st.Dev, Ino: st.Ino}, nil
}

func readDirNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}
