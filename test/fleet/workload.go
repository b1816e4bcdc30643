package fleet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/cluster"
	"github.com/redhat-cop/istio-pod-network-controller/test/e2e/harness"
)

// PodsPerNode is the kubelet's default pod capacity.
const PodsPerNode = 110

// Namespaces is how many namespaces the pods are spread over.
const Namespaces = 10

// NodeNames returns n node names, fleet-000 to fleet-<n-1>.
func NodeNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("fleet-%03d", i)
	}
	return out
}

// NamespaceName is the i-th pod namespace.
func NamespaceName(i int) string { return fmt.Sprintf("mesh-%d", i%Namespaces) }

// Setup registers the nodes (Ready Node objects) and the pod namespaces.
func Setup(ctx context.Context, c *cluster.Cluster, nodes []string) error {
	if err := parallel(ctx, len(nodes), 8, func(i int) error { return c.RegisterNode(ctx, nodes[i]) }); err != nil {
		return err
	}
	for i := range Namespaces {
		if _, err := c.EnsureNamespace(ctx, NamespaceName(i), nil); err != nil {
			return err
		}
	}
	return nil
}

// podName names pod i of node.
func podName(node string, i int) string { return fmt.Sprintf("%s-p%d", node, i) }

// meshPod is pod i of node, as the injection template makes mesh pods.
func meshPod(node string, i int) *corev1.Pod {
	return harness.MeshPod(NamespaceName(i), podName(node, i), node)
}

// CreatePods creates PodsPerNode mesh pods on every node (indices 0 to PodsPerNode-1), with
// workers requests in flight.
func CreatePods(ctx context.Context, client kubernetes.Interface, nodes []string, workers int) error {
	return parallel(ctx, len(nodes)*PodsPerNode, workers, func(k int) error {
		p := meshPod(nodes[k/PodsPerNode], k%PodsPerNode)
		_, err := client.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
		return err
	})
}

// ChurnResult counts what Churn did.
type ChurnResult struct {
	Created, Deleted, Failed int64
}

// Churner replaces pods across the fleet. It remembers, per node, which pods it has deleted and
// created, so that it can run again after the fleet grew.
type Churner struct {
	Client kubernetes.Interface
	next   map[string]int // per node: the lowest index not deleted yet
	top    map[string]int // per node: the next index to create
	rng    *rand.Rand
}

// Run replaces pods at rate per second for d: each tick deletes one pod of a random node (grace
// period 0: no kubelet runs to finish a graceful deletion) and creates a new one on another random
// node, so the pod count stays the same. New pods get indices from PodsPerNode on.
func (ch *Churner) Run(ctx context.Context, nodes []string, rate float64, d time.Duration) ChurnResult {
	if ch.next == nil {
		ch.next, ch.top, ch.rng = map[string]int{}, map[string]int{}, rand.New(rand.NewPCG(1, 2))
	}
	for _, n := range nodes {
		if _, ok := ch.top[n]; !ok {
			ch.top[n] = PodsPerNode
		}
	}
	var res ChurnResult
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	end := time.After(d)
	var wg sync.WaitGroup
	step := func() {
		del, add := nodes[ch.rng.IntN(len(nodes))], nodes[ch.rng.IntN(len(nodes))]
		if ch.next[del] == ch.top[del] {
			return // nothing left to delete on that node
		}
		victim, fresh := meshPod(del, ch.next[del]), meshPod(add, ch.top[add])
		ch.next[del]++
		ch.top[add]++
		wg.Go(func() {
			err := ch.Client.CoreV1().Pods(victim.Namespace).Delete(ctx, victim.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
			count(&res.Deleted, &res.Failed, err)
			_, err = ch.Client.CoreV1().Pods(fresh.Namespace).Create(ctx, fresh, metav1.CreateOptions{})
			count(&res.Created, &res.Failed, err)
		})
	}
	for {
		select {
		case <-tick.C:
			step()
			continue
		case <-ctx.Done():
		case <-end:
		}
		wg.Wait()
		return res
	}
}

func count(ok, failed *int64, err error) {
	if err != nil {
		atomic.AddInt64(failed, 1)
		return
	}
	atomic.AddInt64(ok, 1)
}

// parallel runs fn(0..n-1) with at most workers at once and returns the first error.
func parallel(ctx context.Context, n, workers int, fn func(int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
						cancel()
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil && !errors.Is(ctx.Err(), context.Canceled) {
		return ctx.Err()
	}
	return first
}
