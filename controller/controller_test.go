package controller

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/netns"
	"github.com/redhat-cop/istio-pod-network-controller/netsetup/podconfig"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/istioapi"
)

func TestSelection(t *testing.T) {
	now := metav1.Now()
	cases := map[string]func(*corev1.Pod){
		"other node":   func(p *corev1.Pod) { p.Spec.NodeName = "node-b" },
		"hostNetwork":  func(p *corev1.Pod) { p.Spec.HostNetwork = true },
		"no wait init": func(p *corev1.Pod) { p.Spec.InitContainers = []corev1.Container{{Name: "istio-init"}} },
		"other wait name": func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "istio-pod-network-wait-v2"}}
		},
		"terminating": func(p *corev1.Pod) { p.DeletionTimestamp = &now },
		"succeeded":   func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded },
		"no IP":       func(p *corev1.Pod) { p.Status.PodIP, p.Status.PodIPs = "", nil },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			pod := meshPod("web", "10.1.0.5", mutate)
			f := newSandboxed(t, pod)
			f.mustSync(pod)
			f.expectNoPatch()
			f.expectEvents()
			if f.finder.finds != 0 || len(f.applier.takeCalls()) != 0 {
				t.Fatalf("the pod was worked on: %d finds", f.finder.finds)
			}
		})
	}
	t.Run("handlers queue only candidates", func(t *testing.T) {
		f := newFixture(t)
		f.c.onAdd(meshPod("host", "10.1.0.6", cases["hostNetwork"]))
		f.c.onAdd(meshPod("plain", "10.1.0.7", cases["no wait init"]))
		if f.c.queue.Len() != 0 {
			t.Fatalf("non-candidates queued: %d", f.c.queue.Len())
		}
		f.c.onAdd(meshPod("web", "10.1.0.5"))
		if f.c.queue.Len() != 1 {
			t.Fatalf("candidate not queued")
		}
	})
}

// TestProgramsAndSendsExactPatch: find -> foreign check -> apply -> one merge patch through
// pods/status with exactly the ready annotations -> Normal Event, metrics.
func TestProgramsAndSendsExactPatch(t *testing.T) {
	for _, family := range []struct {
		name, families string
		ips            []string
		dualStack      bool
	}{
		{"ipv4", contract.FamiliesIPv4, []string{"10.1.0.5"}, false},
		{"ipv6", contract.FamiliesDual, []string{"fd00::5"}, false},
		{"dual", contract.FamiliesDual, []string{"10.1.0.5", "fd00::5"}, true},
	} {
		t.Run(family.name, func(t *testing.T) {
			pod := meshPod("web", family.ips[0], func(p *corev1.Pod) {
				p.Status.PodIPs = nil
				for _, ip := range family.ips {
					p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
				}
				if family.dualStack {
					p.Spec.Containers[1].Env = []corev1.EnvVar{{Name: podconfig.EnvDualStack, Value: "true"}}
				}
			})
			f := newFixture(t, pod)
			f.finder.sandbox(string(pod.UID), 4097, family.ips...)
			f.c.noteSeen(pod)
			f.clock = f.clock.Add(150 * time.Millisecond)
			f.mustSync(pod)

			cfg, hash := specOf(t, pod)
			if got := families(cfg); got != family.families {
				t.Fatalf("families %q, want %q", got, family.families)
			}
			f.expectPatch(pod, readyPatch("cookie:4097", hash, family.families))
			if calls := f.applier.takeCalls(); !slices.Equal(calls, []string{"foreign cookie:4097", "apply cookie:4097 " + hash}) {
				t.Fatalf("applier calls %q", calls)
			}
			f.expectEvents("Normal Programmed: network namespace cookie:4097 (/run/netns/fake-4097): rules " + hash)
			m := f.c.metrics
			if v := metricValue(t, m.PodsConfigured, "result", "ready"); v != 1 {
				t.Fatalf("pods_configured_total{ready} = %v", v)
			}
			if v := metricValue(t, m.SetupLatency); v != 1 {
				t.Fatalf("setup latency samples = %v", v)
			}
			if v := metricValue(t, m.ApplyDuration); v != 1 {
				t.Fatalf("apply duration samples = %v", v)
			}
			if v := metricValue(t, m.DiscoveryDuration); v != 1 {
				t.Fatalf("discovery duration samples = %v", v)
			}
			got := f.server(pod).Annotations
			if got[contract.KeyStatus] != "ready" || got[contract.KeyNetns] != "cookie:4097" || got[contract.KeyRules] != hash ||
				got["sidecar.istio.io/status"] != "{}" {
				t.Fatalf("annotations on the server: %v", got)
			}
		})
	}
}

// TestNoRetriggerFromOwnPatch: the update our patch causes is not queued, and a reconcile of the
// released pod does nothing (no patch, no apply, no verify) until the next drift round.
func TestNoRetriggerFromOwnPatch(t *testing.T) {
	pod := meshPod("web", "10.1.0.5")
	f := newSandboxed(t, pod)
	f.mustSync(pod)
	f.takePatches()
	f.applier.takeCalls()
	f.takeEvents()

	if _, queued := f.watch(pod); queued {
		t.Fatal("our own patch queued the pod again")
	}
	f.mustSync(pod) // e.g. a resync: still nothing to do
	f.expectNoPatch()
	if calls := f.applier.takeCalls(); len(calls) != 0 {
		t.Fatalf("applier calls after our own patch: %q", calls)
	}
	f.expectEvents()

	// The wait container finishing is no work either; an edit of our annotations by someone else is.
	if _, queued := f.update(pod, func(p *corev1.Pod) {
		p.Status.InitContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{}}
		p.Status.Phase = corev1.PodRunning
	}); !queued {
		t.Fatal("wait container exit not queued (phase changed)")
	}
	f.mustSync(pod)
	f.expectNoPatch()
	if _, queued := f.update(pod, func(p *corev1.Pod) { p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Ready: true}} }); queued {
		t.Fatal("an unrelated status update was queued")
	}
	if _, queued := f.update(pod, func(p *corev1.Pod) { delete(p.Annotations, contract.KeyStatus) }); !queued {
		t.Fatal("a foreign edit of our annotations was not queued")
	}
}

func TestInvalidConfigurationFailsWithoutRetry(t *testing.T) {
	pod := meshPod("web", "10.1.0.5", annotate(istioapi.AnnotationExcludeInboundPorts, "80,"))
	f := newSandboxed(t, pod)
	_, err := podconfig.FromPod(pod)
	reason := err.Error()
	if want := `traffic.sidecar.istio.io/excludeInboundPorts: invalid value "80,"`; reason[:len(want)] != want {
		t.Fatalf("reason %q", reason)
	}

	f.c.queue.Add(keyOf(pod))
	f.c.processNextItem(f.ctx)
	if f.c.queue.NumRequeues(keyOf(pod)) != 0 || len(f.limiter.delays) != 0 || f.c.queue.Len() != 0 {
		t.Fatal("an invalid pod was retried")
	}
	f.expectPatch(pod, statusPatch(contract.StatusFailed, reason))
	f.expectEvents("Warning InvalidConfiguration: " + reason)
	if f.finder.finds != 0 || len(f.applier.takeCalls()) != 0 {
		t.Fatal("an invalid pod's namespace was touched")
	}
	if v := metricValue(t, f.c.metrics.Errors, "reason", reasonInvalidConfig); v != 1 {
		t.Fatalf("errors_total{invalid_configuration} = %v", v)
	}

	// Our own patch, then unrelated events: nothing more.
	if _, queued := f.watch(pod); queued {
		t.Fatal("own patch queued")
	}
	f.mustSync(pod)
	f.expectNoPatch()
	f.expectEvents()

	// The user fixes the annotation: programmed.
	fixed, queued := f.update(pod, annotate(istioapi.AnnotationExcludeInboundPorts, "80"))
	if !queued {
		t.Fatal("the fix was not queued")
	}
	f.mustSync(fixed)
	_, hash := specOf(t, fixed)
	f.expectPatch(pod, readyPatch("cookie:4097", hash, "ipv4"))
	f.expectEvents("Normal Programmed: rules " + hash)
}

func TestConflictingInitContainerFails(t *testing.T) {
	for _, name := range conflictingInitContainers {
		t.Run(name, func(t *testing.T) {
			pod := meshPod("web", "10.1.0.5", func(p *corev1.Pod) {
				p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: name})
			})
			f := newSandboxed(t, pod)
			f.mustSync(pod)
			f.expectPatch(pod, statusPatch(contract.StatusFailed, fmt.Sprintf("the pod also has the init container %q, "+
				"which installs or checks Istio's rules itself: two rule sets would both be live "+
				"(use the injection template of istio-pod-network-controller)", name)))
			f.expectEvents("Warning ConflictingInitContainer: " + name)
			if len(f.applier.takeCalls()) != 0 {
				t.Fatal("applied despite the conflict")
			}
		})
	}
}

func TestForeignRulesFail(t *testing.T) {
	pod := meshPod("web", "10.1.0.5")
	f := newSandboxed(t, pod)
	f.applier.foreign[cookie(4097)] = true
	f.mustSync(pod)
	reason := "network namespace /run/netns/fake-4097 already holds ISTIO_* chains in the other iptables backend: two rule sets would both be live (is istio-init or Istio's CNI also programming this pod?)"
	f.expectPatch(pod, statusPatch(contract.StatusFailed, reason))
	f.expectEvents("Warning ForeignRules: " + reason)
	if calls := f.applier.takeCalls(); !slices.Equal(calls, []string{"foreign cookie:4097"}) {
		t.Fatalf("applier calls %q", calls)
	}

	// Same inputs: not looked at again.
	f.watch(pod)
	f.mustSync(pod)
	if f.finder.finds != 1 || len(f.applier.takeCalls()) != 0 {
		t.Fatalf("re-examined with unchanged inputs: %d finds", f.finder.finds)
	}
	// An input changes (and the other rules are gone by now): programmed.
	f.applier.foreign[cookie(4097)] = false
	edited, _ := f.update(pod, annotate(istioapi.AnnotationExcludeOutboundPorts, "9000"))
	f.mustSync(edited)
	f.expectReady(pod, edited, "cookie:4097")
}

// TestPendingAndRetriesWithBackoff: transient errors set pending with the reason, patched only when the
// reason changes, and are retried; success clears the reason.
func TestPendingAndRetriesWithBackoff(t *testing.T) {
	pod := meshPod("web", "10.1.0.5")
	f := newFixture(t, pod)
	key := keyOf(pod)
	step := func() {
		t.Helper()
		f.c.queue.Add(key)
		f.c.processNextItem(f.ctx)
		if f.finder.open != 0 {
			t.Fatal("handle left open")
		}
	}

	// No namespace yet (three times), then an ambiguity, then an apply error, then success.
	notFound := "find the pod's network namespace: network namespace not found: no namespace holds [10.1.0.5]"
	for i := range 3 {
		step()
		if i == 0 {
			f.expectPatch(pod, statusPatch(contract.StatusPending, notFound))
			f.expectEvents("Warning Pending: " + notFound)
			f.watch(pod)
		} else {
			f.expectNoPatch() // same reason: not patched again
			f.expectEvents()
		}
	}
	if got := f.c.queue.NumRequeues(key); got != 3 {
		t.Fatalf("requeues %d, want 3", got)
	}
	if want := []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond}; !slices.Equal(f.limiter.delays, want) {
		t.Fatalf("backoff %v, want %v", f.limiter.delays, want)
	}

	ambiguous := &netns.AmbiguousError{PodUID: string(pod.UID), Resolution: "2 candidates run processes of the pod"}
	f.finder.err = ambiguous
	step()
	f.expectPatch(pod, statusPatch(contract.StatusPending, "find the pod's network namespace: "+ambiguous.Error()))
	f.watch(pod)
	f.finder.err = nil

	f.finder.sandbox(string(pod.UID), 4097, "10.1.0.5")
	f.applier.applyErrs = []error{fmt.Errorf("iptables-restore: %w", netsetup.ErrLocked)}
	step()
	f.expectPatch(pod, statusPatch(contract.StatusPending, "iptables-restore: xtables lock busy"))
	f.watch(pod)
	if v := metricValue(t, f.c.metrics.Errors, "reason", reasonLocked); v != 1 {
		t.Fatalf("errors_total{xtables_lock} = %v", v)
	}
	if v := metricValue(t, f.c.metrics.Errors, "reason", reasonNotFound); v != 3 {
		t.Fatalf("errors_total{namespace_not_found} = %v", v)
	}

	step()
	f.expectReady(pod, pod, "cookie:4097")
	if got := f.c.queue.NumRequeues(key); got != 0 {
		t.Fatalf("requeues after success %d, want 0 (Forget)", got)
	}
	if len(f.limiter.delays) != 5 {
		t.Fatalf("delays %v: want 5 retries", f.limiter.delays)
	}
}

// TestSkipWhenCurrent: a pod released for this namespace whose live rules verify is left alone;
// a drift round verifies it again.
func TestSkipWhenCurrent(t *testing.T) {
	pod := meshPod("web", "10.1.0.5")
	cfg, hash := specOf(t, pod)
	annotate(contract.KeyStatus, "ready", contract.KeyNetns, "cookie:4097", contract.KeyRules, hash, contract.KeyFamilies, "ipv4")(pod)
	f := newSandboxed(t, pod)
	f.applier.live[cookie(4097)] = hashOf(cfg)

	f.mustSync(pod)
	f.expectNoPatch()
	f.expectEvents()
	if calls := f.applier.takeCalls(); !slices.Equal(calls, []string{"verify cookie:4097 " + hash}) {
		t.Fatalf("applier calls %q", calls)
	}
	f.mustSync(pod)
	if calls := f.applier.takeCalls(); len(calls) != 0 {
		t.Fatalf("verified twice in one round: %q", calls)
	}
	f.c.driftRound(f.ctx)
	if f.c.queue.Len() != 1 {
		t.Fatalf("drift round queued %d pods, want 1", f.c.queue.Len())
	}
	f.c.processNextItem(f.ctx)
	if calls := f.applier.takeCalls(); !slices.Equal(calls, []string{"verify cookie:4097 " + hash}) {
		t.Fatalf("drift round: applier calls %q", calls)
	}
	f.expectNoPatch()
}

// TestDriftRepair: flushed rules are restored at the next drift round, with a metric and an Event.
func TestDriftRepair(t *testing.T) {
	pod := meshPod("web", "10.1.0.5")
	f := newSandboxed(t, pod)
	f.mustSync(pod)
	f.watch(pod)
	f.takePatches()
	f.takeEvents()
	f.applier.takeCalls()
	_, hash := specOf(t, pod)

	f.applier.live[cookie(4097)] = "" // someone flushed the rules
	f.c.driftRound(f.ctx)
	f.mustSync(pod)
	if calls := f.applier.takeCalls(); !slices.Equal(calls, []string{"verify cookie:4097 " + hash, "apply cookie:4097 " + hash}) {
		t.Fatalf("applier calls %q", calls)
	}
	f.expectNoPatch() // same rules, same annotations
	f.expectEvents("Warning DriftRepaired: restored the released rule set " + hash)
	if v := metricValue(t, f.c.metrics.DriftRepairs); v != 1 {
		t.Fatalf("drift_repairs_total = %v", v)
	}
	if f.applier.live[cookie(4097)] != hash {
		t.Fatal("rules not restored")
	}
}

// TestRulesFixedAtRelease: an edit of a released pod's traffic annotations is reported, not
// applied, and drift repair restores the released rule set, not the edited one.
func TestRulesFixedAtRelease(t *testing.T) {
	pod := meshPod("web", "10.1.0.5")
	f := newSandboxed(t, pod)
	f.mustSync(pod)
	f.watch(pod)
	f.takePatches()
	f.takeEvents()
	f.applier.takeCalls()
	_, released := specOf(t, pod)

	edited, queued := f.update(pod, annotate(istioapi.AnnotationExcludeInboundPorts, "8080"))
	if !queued {
		t.Fatal("edit not queued")
	}
	_, now := specOf(t, edited)
	f.mustSync(edited)
	f.expectNoPatch()
	f.expectEvents("Warning SpecChanged: released rules " + released + ", now rules " + now)
	if calls := f.applier.takeCalls(); len(calls) != 0 {
		t.Fatalf("applier calls %q", calls)
	}
	if v := metricValue(t, f.c.metrics.SpecChanges); v != 1 {
		t.Fatalf("spec_changes_total = %v", v)
	}

	f.applier.live[cookie(4097)] = ""
	f.c.driftRound(f.ctx)
	f.mustSync(edited)
	if calls := f.applier.takeCalls(); !slices.Equal(calls, []string{"verify cookie:4097 " + released, "apply cookie:4097 " + released}) {
		t.Fatalf("applier calls %q: want the released rule set restored", calls)
	}
	f.expectNoPatch()
	f.expectEvents("Warning DriftRepaired: " + released)

	// An invalid edit is reported too, and still does not touch the pod.
	bad, _ := f.update(pod, annotate(istioapi.AnnotationExcludeInboundPorts, "x"))
	f.mustSync(bad)
	f.expectNoPatch()
	f.expectEvents(`Warning SpecChanged: now refused: traffic.sidecar.istio.io/excludeInboundPorts: invalid value "x"`)
}

// TestAfterRestart covers a controller that did not release the pod itself.
func TestAfterRestart(t *testing.T) {
	pod := meshPod("web", "10.1.0.5")
	_, releasedHash := specOf(t, pod)
	released := func(p *corev1.Pod) {
		annotate(contract.KeyStatus, "ready", contract.KeyNetns, "cookie:4097", contract.KeyRules, releasedHash, contract.KeyFamilies, "ipv4")(p)
	}

	t.Run("spec unchanged: the spec is the released set, drift repaired", func(t *testing.T) {
		pod := meshPod("web", "10.1.0.5", released)
		f := newSandboxed(t, pod)
		f.mustSync(pod)
		if calls := f.applier.takeCalls(); !slices.Equal(calls, []string{"verify cookie:4097 " + releasedHash, "apply cookie:4097 " + releasedHash}) {
			t.Fatalf("applier calls %q", calls)
		}
		f.expectNoPatch()
		f.expectEvents("Warning DriftRepaired: " + releasedHash)
	})

	edit := annotate(istioapi.AnnotationExcludeInboundPorts, "8080")
	t.Run("spec changed, released rules live: nothing to do", func(t *testing.T) {
		pod := meshPod("web", "10.1.0.5", released, edit)
		_, now := specOf(t, pod)
		f := newSandboxed(t, pod)
		f.applier.live[cookie(4097)] = releasedHash
		f.mustSync(pod)
		if calls := f.applier.takeCalls(); !slices.Equal(calls, []string{"verify cookie:4097 " + now, "programmed cookie:4097"}) {
			t.Fatalf("applier calls %q", calls)
		}
		f.expectNoPatch()
		f.expectEvents("Warning SpecChanged: released rules " + releasedHash + ", now rules " + now)
		f.mustSync(pod)
		if calls := f.applier.takeCalls(); len(calls) != 0 {
			t.Fatalf("checked twice in one round: %q", calls)
		}
	})

	t.Run("spec changed, rules vanished: current spec applied, annotations updated", func(t *testing.T) {
		pod := meshPod("web", "10.1.0.5", released, edit)
		_, now := specOf(t, pod)
		f := newSandboxed(t, pod)
		f.mustSync(pod)
		if calls := f.applier.takeCalls(); !slices.Equal(calls, []string{"verify cookie:4097 " + now, "programmed cookie:4097", "apply cookie:4097 " + now}) {
			t.Fatalf("applier calls %q", calls)
		}
		f.expectPatch(pod, readyPatch("cookie:4097", now, "ipv4"))
		f.expectEvents("Warning SpecChanged: "+now, "Warning DriftRepaired: applied the current configuration's rules "+now)
	})

	t.Run("spec changed, live rules already the current spec's: annotations follow", func(t *testing.T) {
		pod := meshPod("web", "10.1.0.5", released, edit)
		_, now := specOf(t, pod)
		f := newSandboxed(t, pod)
		f.applier.live[cookie(4097)] = now
		f.mustSync(pod)
		f.expectPatch(pod, readyPatch("cookie:4097", now, "ipv4"))
		if calls := f.applier.takeCalls(); !slices.Equal(calls, []string{"verify cookie:4097 " + now}) {
			t.Fatalf("applier calls %q", calls)
		}
	})
}

// TestReprogramsNewNamespace: a released pod whose sandbox was re-created gets the new namespace
// programmed and re-annotated; a wait container running again drops the finder's cache first.
func TestReprogramsNewNamespace(t *testing.T) {
	t.Run("new identity, same IP", func(t *testing.T) {
		pod := meshPod("web", "10.1.0.5")
		f := newSandboxed(t, pod)
		f.mustSync(pod)
		f.watch(pod)
		f.takePatches()
		f.takeEvents()
		f.applier.takeCalls()
		_, hash := specOf(t, pod)

		// The kubelet re-creates the sandbox: new namespace, same IP, the wait container runs again.
		f.finder.sandbox(string(pod.UID), 5001, "10.1.0.5")
		restarted, queued := f.update(pod, func(p *corev1.Pod) {
			p.Status.InitContainerStatuses[0].ContainerID = "containerd://wait-2"
		})
		if !queued {
			t.Fatal("wait container restart not queued")
		}
		f.mustSync(restarted)
		if !slices.Contains(f.finder.forgotten, string(pod.UID)) {
			t.Fatal("the finder's cached namespace was not dropped")
		}
		if calls := f.applier.takeCalls(); !slices.Equal(calls, []string{"foreign cookie:5001", "apply cookie:5001 " + hash}) {
			t.Fatalf("applier calls %q", calls)
		}
		f.expectPatch(pod, readyPatch("cookie:5001", hash, "ipv4"))
		f.expectEvents("Normal SandboxRecreated: changed from cookie:4097 to cookie:5001", "Normal Programmed: cookie:5001")
	})
	t.Run("new IP", func(t *testing.T) {
		pod := meshPod("web", "10.1.0.5")
		f := newSandboxed(t, pod)
		f.mustSync(pod)
		f.watch(pod)
		f.takePatches()
		f.finder.sandbox(string(pod.UID), 5002, "10.1.0.9")
		moved, queued := f.update(pod, func(p *corev1.Pod) {
			p.Status.PodIP, p.Status.PodIPs = "10.1.0.9", []corev1.PodIP{{IP: "10.1.0.9"}}
		})
		if !queued {
			t.Fatal("IP change not queued")
		}
		f.mustSync(moved)
		f.expectReady(pod, moved, "cookie:5002")
	})
}

func TestDeletedPodIsForgotten(t *testing.T) {
	pod := meshPod("web", "10.1.0.5")
	f := newSandboxed(t, pod)
	f.mustSync(pod)

	if err := f.informer.GetIndexer().Delete(pod); err != nil {
		t.Fatal(err)
	}
	f.c.onDelete(cache.DeletedFinalStateUnknown{Key: testNS + "/" + pod.Name, Obj: pod})
	if f.c.queue.Len() != 1 {
		t.Fatal("delete not queued")
	}
	f.c.processNextItem(f.ctx)
	uid := string(pod.UID)
	if !slices.Contains(f.finder.forgotten, uid) || !slices.Equal(f.applier.forgotten, []string{uid}) {
		t.Fatalf("forgotten: finder %v, applier %v", f.finder.forgotten, f.applier.forgotten)
	}
	if len(f.c.pods) != 0 || len(f.c.written) != 0 || len(f.c.seen) != 0 {
		t.Fatal("state of the deleted pod kept")
	}
}

// TestRecreatedUnderSameName: a new pod with the same name is a new pod: the old one's namespace
// and lock are forgotten, the new one is programmed although the cache key is the same.
func TestRecreatedUnderSameName(t *testing.T) {
	pod := meshPod("db-0", "10.1.0.5")
	f := newSandboxed(t, pod)
	f.mustSync(pod)
	f.takePatches()

	again := meshPod("db-0", "10.1.0.5", func(p *corev1.Pod) { p.UID = "00000000-0000-4000-8000-0000000000aa" })
	if err := f.client.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("pods"), testNS, "db-0"); err != nil {
		t.Fatal(err)
	}
	if err := f.client.Tracker().Add(again); err != nil {
		t.Fatal(err)
	}
	f.informer.GetIndexer().Update(again)
	f.finder.sandbox(string(again.UID), 6001, "10.1.0.5")
	f.mustSync(again)
	if !slices.Equal(f.applier.forgotten, []string{string(pod.UID)}) {
		t.Fatalf("old pod's lock not forgotten: %v", f.applier.forgotten)
	}
	f.expectReady(again, again, "cookie:6001")
}

func TestPodGoneWhilePatchingIsSuccess(t *testing.T) {
	pod := meshPod("web", "10.1.0.5")
	f := newSandboxed(t, pod)
	if err := f.client.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("pods"), testNS, "web"); err != nil {
		t.Fatal(err)
	}
	if err := f.sync(pod); err != nil {
		t.Fatalf("sync: %v; want success for a deleted pod", err)
	}
}

func TestPatchErrorIsRetried(t *testing.T) {
	pod := meshPod("web", "10.1.0.5")
	f := newSandboxed(t, pod)
	f.client.PrependReactor("patch", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("connection refused")
	})
	err := f.sync(pod)
	if err == nil || !strings.Contains(err.Error(), "patch the pod's annotations: connection refused") {
		t.Fatalf("sync: %v", err)
	}
	if v := metricValue(t, f.c.metrics.Errors, "reason", reasonPatch); v != 1 {
		t.Fatalf("errors_total{patch} = %v", v)
	}
	f.expectEvents() // no Programmed Event before the pod is released
}

// TestWorkPerPod counts the namespace lookups and applier calls across the events of one pod's
// start, as the kubelet produces them: created without an IP; IP set with the wait container
// running; our own patch echoed; the wait container terminated; Running. The minimum is one
// discovery and one apply (its read-back is the verification); the next drift round verifies once.
func TestWorkPerPod(t *testing.T) {
	pod := meshPod("web", "", func(p *corev1.Pod) {
		p.Status.PodIP, p.Status.PodIPs = "", nil
		p.Status.InitContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}
		p.Status.InitContainerStatuses[0].ContainerID = ""
	})
	f := newSandboxed(t, pod)
	_, hash := specOf(t, pod)
	step := func(name string, wantQueued bool, mutate func(*corev1.Pod)) {
		t.Helper()
		var queued bool
		if mutate == nil {
			_, queued = f.watch(pod)
		} else {
			_, queued = f.update(pod, mutate)
		}
		if queued != wantQueued {
			t.Fatalf("%s: queued = %v, want %v", name, queued, wantQueued)
		}
		f.mustSync(pod) // synced either way: a resync, or another event, must not add work
	}

	f.mustSync(pod) // created: no IP yet
	step("IP set, wait container running", true, func(p *corev1.Pod) {
		p.Status.PodIP, p.Status.PodIPs = "10.1.0.5", []corev1.PodIP{{IP: "10.1.0.5"}}
		p.Status.InitContainerStatuses[0].ContainerID = "containerd://wait-1"
		p.Status.InitContainerStatuses[0].State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	})
	f.expectPatch(pod, readyPatch("cookie:4097", hash, "ipv4"))
	step("our patch echoed", false, nil)
	step("wait container terminated", true, func(p *corev1.Pod) {
		p.Status.InitContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Completed"}}
	})
	step("Running", true, func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodRunning
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Ready: true}, {Name: podconfig.ProxyContainer, Ready: true}}
	})
	if f.finder.finds != 1 {
		t.Errorf("namespace lookups: %d, want 1", f.finder.finds)
	}
	if calls := f.applier.takeCalls(); !slices.Equal(calls, []string{"foreign cookie:4097", "apply cookie:4097 " + hash}) {
		t.Errorf("applier calls %q, want one foreign-rules check and one apply", calls)
	}
	f.expectNoPatch()
	if v := metricValue(t, f.c.metrics.DiscoveryDuration); v != 1 {
		t.Errorf("discovery samples %v, want 1", v)
	}

	// The next drift round looks the namespace up and verifies once; more events in the round, none.
	f.c.driftRound(f.ctx)
	f.c.processNextItem(f.ctx)
	f.mustSync(pod)
	if f.finder.finds != 2 {
		t.Errorf("namespace lookups after a drift round: %d, want 2", f.finder.finds)
	}
	if calls := f.applier.takeCalls(); !slices.Equal(calls, []string{"verify cookie:4097 " + hash}) {
		t.Errorf("drift round: applier calls %q, want one verify", calls)
	}

	// A new run of the wait container (a new sandbox) is not skipped, in this round or any.
	f.finder.sandbox(string(pod.UID), 5001, "10.1.0.5")
	step("wait container running again", true, func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodPending
		p.Status.InitContainerStatuses[0].ContainerID = "containerd://wait-2"
		p.Status.InitContainerStatuses[0].State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	})
	if calls := f.applier.takeCalls(); !slices.Equal(calls, []string{"foreign cookie:5001", "apply cookie:5001 " + hash}) {
		t.Errorf("new sandbox: applier calls %q", calls)
	}
	f.expectPatch(pod, readyPatch("cookie:5001", hash, "ipv4"))

	// An edit of the inputs is not skipped either: reported once.
	step("annotation edited", true, annotate(istioapi.AnnotationExcludeInboundPorts, "8080"))
	f.expectEvents("Normal Programmed", "Normal SandboxRecreated", "Normal Programmed", "Warning SpecChanged")
}
