package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
)

// findNamed checks the named namespaces in the netns directories.
func (s *search) findNamed() scan {
	var (
		r        scan
		t        tally
		dirs     []string
		seenDirs = map[Key]int{} // index in dirs
		seen     = map[Key]bool{}
	)
	for _, dir := range s.f.opts.NetnsDirs {
		dk, err := statKey(dir)
		if errors.Is(err, fs.ErrNotExist) {
			dirs = append(dirs, dir+" (absent)")
			continue
		}
		if err != nil {
			dirs = append(dirs, fmt.Sprintf("%s (%v)", dir, err))
			continue
		}
		if i, ok := seenDirs[dk]; ok {
			dirs[i] += " (= " + dir + ")"
			continue
		}
		seenDirs[dk] = len(dirs)
		dirs = append(dirs, dir)
		names, err := readDirNames(dir)
		if err != nil {
			t.errs.fail(err)
			continue
		}
		slices.Sort(names)
		for _, name := range names {
			if s.ctx.Err() != nil {
				break
			}
			p := dir + "/" + name
			k, err := statKey(p)
			if err != nil || seen[k] {
				continue // vanished, or seen under another name
			}
			seen[k] = true
			if c := s.consider(&t, k, p); c != nil {
				r.cands = append(r.cands, c)
			}
		}
	}
	hostNote := ""
	if t.host > 0 {
		hostNote = fmt.Sprintf(" (and %d naming the host's, skipped)", t.host)
	}
	r.note = fmt.Sprintf("%s: %d namespaces in %s%s, %d hold the pod IPs%s%s",
		StrategyNamed, t.opened, strings.Join(dirs, ", "), hostNote, len(r.cands), t.errs.suffix(), t.rejected.suffix())
	return r
}

// findCNICache checks the namespaces that the pod's CNI result records name.
func (s *search) findCNICache() scan {
	var (
		r       scan
		t       tally
		outside []string
	)
	rs := s.recordSet()
	for _, rec := range rs.mine {
		paths := recordNetnsPaths(rec.NetNS, s.f.opts.ProcDir, s.f.opts.NetnsDirs)
		if len(paths) == 0 {
			outside = append(outside, rec.NetNS)
			continue
		}
		c := s.consider(&t, Key{}, paths...)
		if c == nil {
			continue
		}
		if slices.ContainsFunc(r.cands, func(o *candidate) bool { return o.h.Same(c.h) }) {
			c.h.Close() // another network of the same sandbox (lo, a second interface)
			continue
		}
		r.cands = append(r.cands, c)
	}
	extra := ""
	if len(outside) > 0 {
		extra = fmt.Sprintf(" (netns paths outside the netns directories and /proc: %v)", outside)
	}
	r.note = fmt.Sprintf("%s: %s, %d namespaces they name opened, %d hold the pod IPs%s%s%s",
		StrategyCNICache, rs, t.opened, len(r.cands), extra, t.errs.suffix(), t.rejected.suffix())
	return r
}

// findProcUID checks the namespaces of the processes in cgroups of the pod.
func (s *search) findProcUID() scan {
	var (
		r              scan
		t              tally
		hostPIDs       []int
		theirs, inHost int
	)
	idx := s.procIndex()
	for _, k := range idx.order {
		pids := s.podsIn(idx.ns[k]).pods[s.nuid]
		if len(pids) == 0 {
			continue
		}
		if s.f.isHost(k) {
			inHost++
			hostPIDs = append(hostPIDs, pids...)
			continue
		}
		theirs++
		c := s.consider(&t, k, s.f.procPaths(pids)...)
		if c == nil {
			continue
		}
		c.pids = pids
		r.cands = append(r.cands, c)
	}
	if len(hostPIDs) > 0 && theirs == 0 {
		r.host = fmt.Sprintf("processes %v in cgroups of the pod run in the host network namespace (a hostNetwork pod?)",
			firstPIDs(hostPIDs))
	}
	r.note = fmt.Sprintf("%s: %s, processes in cgroups of the pod run in %d namespaces besides the host's (and %d in the host's), %d hold the pod IPs%s%s",
		StrategyProcUID, idx.st, theirs, inHost, len(r.cands), t.errs.suffix(), t.rejected.suffix())
	return r
}

// findProcIP checks each distinct namespace of the processes once.
func (s *search) findProcIP() scan {
	var (
		r scan
		t tally
	)
	idx := s.procIndex()
	for _, k := range idx.order {
		if s.f.isHost(k) || s.ctx.Err() != nil {
			continue
		}
		pids := idx.ns[k].pids
		c := s.consider(&t, k, s.f.procPaths(pids)...)
		if c == nil {
			continue
		}
		c.pids = pids
		r.cands = append(r.cands, c)
	}
	r.note = fmt.Sprintf("%s: %s, %d distinct namespaces besides the host's, %d hold the pod IPs%s",
		StrategyProcIP, idx.st, t.opened, len(r.cands), t.errs.suffix())
	return r
}

func firstPIDs(pids []int) []int {
	if len(pids) > maxPIDs {
		return pids[:maxPIDs]
	}
	return pids
}
