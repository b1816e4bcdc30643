package netns

import (
	"fmt"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

// prove checks candidate c, held open, against the enabled evidence and sets c.proof (what
// proved it), c.why (why not) and c.foreign (other pods' processes in it):
//
//   - a cached proof of its cookie (Options.Cache): it is the pod's, or another pod's, for good;
//   - cni-cache: a record of the pod naming a netns path that opens to it;
//   - proc-uid: a process in it, in a cgroup of the pod, confirmed after the walk. The walk also
//     lists other pods' processes in it, which refuse it (decide). Processes in no pod's cgroup
//     are host processes (the runtime, CNI plugins, an administrator's nsenter, this controller)
//     and neither prove nor refuse it: only root on the node can start them.
func (s *search) prove(c *candidate) {
	if s.f.opts.Cache {
		if id, err := c.h.ID(); err == nil && id.Kind == contract.KindCookie {
			c.cookie = id.Value
		}
		if e, ok := s.f.proofOf(c.cookie); ok {
			if e.uid == s.nuid {
				s.f.proofHits.Add(1)
				c.proof = e.proof
				c.proof.Cached = true
				return
			}
			c.why = append(c.why, fmt.Sprintf("proven earlier to be pod UID %q's", e.uid))
			return
		}
	}
	if s.f.opts.has(StrategyCNICache) {
		if rec, why := s.recordProving(c.h); rec != nil {
			c.proof.Evidence = append(c.proof.Evidence, StrategyCNICache)
			c.proof.SandboxID, c.proof.Record = rec.ContainerID, rec.File
		} else {
			c.why = append(c.why, why)
		}
	}
	if s.f.opts.has(StrategyProcUID) {
		s.proveByProcs(c)
	}
}

// proveByProcs looks the candidate up in the /proc walk.
func (s *search) proveByProcs(c *candidate) {
	idx := s.procIndex()
	np := idx.ns[c.h.Key()]
	if np == nil {
		c.why = append(c.why, fmt.Sprintf("%s: no process runs in it (%s; a CRI-O sandbox without infra container has none until its first container runs)",
			StrategyProcUID, idx.st))
		return
	}
	s.podsIn(np)
	c.proof.HostProcs = np.host
	for uid, pids := range np.pods {
		if uid != s.nuid {
			if c.foreign == nil {
				c.foreign = map[string][]int{}
			}
			c.foreign[uid] = pids
		}
	}
	var confirmed []int
	for _, pid := range np.pods[s.nuid] {
		if s.f.procConfirms(pid, c.h.Key(), s.nuid) {
			confirmed = append(confirmed, pid)
		}
	}
	if len(confirmed) > 0 {
		c.proof.Evidence = append(c.proof.Evidence, StrategyProcUID)
		c.proof.PIDs = confirmed
		return
	}
	what := fmt.Sprintf("pids %v run in it", np.pids)
	switch {
	case len(np.pods[s.nuid]) > 0:
		what += ", the pod's left it meanwhile"
	case len(c.foreign) > 0:
		what += fmt.Sprintf(", in cgroups of other pods %v only", sortedKeys(c.foreign))
	}
	if np.host > 0 {
		what += fmt.Sprintf(", %d in no pod's cgroup", np.host)
	}
	if np.unknown > 0 {
		what += fmt.Sprintf(", %d whose cgroup is unreadable", np.unknown)
	}
	c.why = append(c.why, fmt.Sprintf("%s: no process in a cgroup of the pod (%s)", StrategyProcUID, what))
}
