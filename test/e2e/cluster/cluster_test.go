package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// TestControlPlane runs one cluster through everything the e2e and chart tests rely on.
func TestControlPlane(t *testing.T) {
	c := StartForTest(t, Options{})
	ctx := t.Context()

	t.Run("bootstrap objects", func(t *testing.T) {
		node, err := c.Client.CoreV1().Nodes().Get(ctx, DefaultNodeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !nodeReady(node) {
			t.Errorf("node %q is not Ready: %+v", node.Name, node.Status.Conditions)
		}
		if len(node.Spec.Taints) != 0 {
			t.Errorf("node %q has taints %+v, want none", node.Name, node.Spec.Taints)
		}
		ns := uniqueName("boot")
		if _, err := c.EnsureNamespace(ctx, ns, map[string]string{"a": "1"}); err != nil {
			t.Fatal(err)
		}
		// Again, adding a label: idempotent, labels merged.
		got, err := c.EnsureNamespace(ctx, ns, map[string]string{"b": "2"})
		if err != nil {
			t.Fatal(err)
		}
		if got.Labels["a"] != "1" || got.Labels["b"] != "2" {
			t.Errorf("namespace labels = %v, want a=1 and b=2", got.Labels)
		}
		for _, n := range []string{metav1.NamespaceDefault, metav1.NamespaceSystem, ns} {
			if _, err := c.Client.CoreV1().ServiceAccounts(n).Get(ctx, "default", metav1.GetOptions{}); err != nil {
				t.Errorf("namespace %q: %v", n, err)
			}
			cm, err := c.Client.CoreV1().ConfigMaps(n).Get(ctx, RootCAConfigMap, metav1.GetOptions{})
			if err != nil {
				t.Errorf("namespace %q: %v", n, err)
			} else if cm.Data["ca.crt"] != string(c.CAData) {
				t.Errorf("namespace %q: %s does not hold the cluster CA", n, RootCAConfigMap)
			}
		}
		// The admin kubeconfig file works as kubectl and helm would read it.
		conf, err := clientcmd.BuildConfigFromFlags("", c.AdminKubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		cs := kubernetes.NewForConfigOrDie(conf)
		v, err := cs.Discovery().ServerVersion()
		if err != nil {
			t.Fatal(err)
		}
		if v.GitVersion != "v1.37.2" {
			t.Errorf("server version %q, want v1.37.2", v.GitVersion)
		}
	})

	t.Run("pod-bound token carries the node name", func(t *testing.T) {
		ns := uniqueName("token")
		if _, err := c.EnsureNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
		pod := createPodWithServiceAccount(t, c, ns, "app")
		token, err := c.PodToken(ctx, pod, 0)
		if err != nil {
			t.Fatal(err)
		}
		user := whoAmI(t, c, token)
		if want := "system:serviceaccount:" + ns + ":app"; user.Username != want {
			t.Errorf("username %q, want %q", user.Username, want)
		}
		for key, want := range map[string]string{
			"authentication.kubernetes.io/node-name": DefaultNodeName,
			"authentication.kubernetes.io/pod-name":  pod.Name,
			"authentication.kubernetes.io/pod-uid":   string(pod.UID),
		} {
			if got := user.Extra[key]; len(got) != 1 || got[0] != want {
				t.Errorf("user extra %q = %q, want [%q]", key, got, want)
			}
		}
		// A pod on another node: its token names that node.
		const otherNode = "node-b"
		if err := c.RegisterNode(ctx, otherNode); err != nil {
			t.Fatal(err)
		}
		other := testPod("on-"+otherNode, "app")
		other.Spec.NodeName = otherNode
		if other, err = c.Client.CoreV1().Pods(ns).Create(ctx, other, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		otherToken, err := c.PodToken(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: other.Name}}, 20*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if got := whoAmI(t, c, otherToken).Extra["authentication.kubernetes.io/node-name"]; len(got) != 1 || got[0] != otherNode {
			t.Errorf("token of a pod on %s: node-name extra %q", otherNode, got)
		}

		// Authorization is real: an ordinary ServiceAccount may not list pods.
		cs := kubernetes.NewForConfigOrDie(c.ConfigForToken(token))
		if _, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("listing pods as %s: got %v, want Forbidden", user.Username, err)
		}
		// The token dies with its pod.
		if err := c.Client.CoreV1().Pods(ns).Delete(ctx, pod.Name, *metav1.NewDeleteOptions(0)); err != nil {
			t.Fatal(err)
		}
		// The API server caches successful token authentications for 10 s.
		var lastErr error
		err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			_, lastErr = cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
			return apierrors.IsUnauthorized(lastErr), nil
		})
		if err != nil {
			t.Errorf("token of a deleted pod: got %v, want Unauthorized", lastErr)
		}
	})

	t.Run("pod security restricted is enforced", func(t *testing.T) {
		ns := uniqueName("restricted")
		if _, err := c.EnsureNamespace(ctx, ns, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}); err != nil {
			t.Fatal(err)
		}
		privileged := testPod("privileged", "")
		yes := true
		privileged.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: &yes}
		_, err := c.Client.CoreV1().Pods(ns).Create(ctx, privileged, metav1.CreateOptions{})
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `violates PodSecurity "restricted:latest"`) || !strings.Contains(err.Error(), "privileged") {
			t.Errorf("privileged pod in a restricted namespace: got %v, want Forbidden by PodSecurity naming privileged", err)
		}
		if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, restrictedPod("compliant"), metav1.CreateOptions{}); err != nil {
			t.Errorf("restricted-compliant pod: %v", err)
		}
	})

	t.Run("validating admission policy is enforced", func(t *testing.T) {
		ns := uniqueName("vap")
		if _, err := c.EnsureNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
		denyLabelledConfigMaps(t, c, ns)
		denied := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "x-", Labels: map[string]string{"e2e-deny": "yes"}}}
		// Policies take effect asynchronously: poll until the API server enforces it.
		var lastErr error
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			cm, err := c.Client.CoreV1().ConfigMaps(ns).Create(ctx, denied, metav1.CreateOptions{})
			if err == nil {
				return false, c.Client.CoreV1().ConfigMaps(ns).Delete(ctx, cm.Name, metav1.DeleteOptions{})
			}
			lastErr = err
			return true, nil
		})
		if err != nil {
			t.Fatalf("policy never enforced: %v", err)
		}
		if !strings.Contains(lastErr.Error(), "e2e-deny label is refused") {
			t.Errorf("denied with %v, want the policy's message", lastErr)
		}
		if _, err := c.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "allowed"}}, metav1.CreateOptions{}); err != nil {
			t.Errorf("unlabelled ConfigMap refused: %v", err)
		}
	})

	t.Run("clients recover across an API server restart", func(t *testing.T) {
		ns := uniqueName("restart")
		if _, err := c.EnsureNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
		pod := createPodWithServiceAccount(t, c, ns, "app")
		token, err := c.PodToken(ctx, pod, 0)
		if err != nil {
			t.Fatal(err)
		}
		// A watching informer, as the controller has.
		factory := informers.NewSharedInformerFactoryWithOptions(c.Client, 0, informers.WithNamespace(ns))
		cms := factory.Core().V1().ConfigMaps().Informer()
		stop := make(chan struct{})
		defer close(stop)
		factory.Start(stop)
		if !cache.WaitForCacheSync(ctx.Done(), cms.HasSynced) {
			t.Fatal("informer did not sync")
		}

		for _, restart := range []struct {
			name string
			stop func() error
		}{{"graceful", c.StopAPIServer}, {"crash", c.KillAPIServer}} {
			if err := restart.stop(); err != nil {
				t.Fatal(err)
			}
			down, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = c.Client.CoreV1().Namespaces().Get(down, ns, metav1.GetOptions{})
			cancel()
			if err == nil {
				t.Fatalf("%s: request succeeded while the API server was down", restart.name)
			}
			if err := restart.stop(); err == nil {
				t.Errorf("%s: stopping a stopped API server: no error", restart.name)
			}
			if err := c.StartAPIServer(ctx); err != nil {
				t.Fatal(err)
			}
			if err := c.StartAPIServer(ctx); err == nil {
				t.Errorf("%s: StartAPIServer while running: no error", restart.name)
			}

			// The same clientset, the same informer and the token minted before all work again.
			name := "after-" + restart.name
			if _, err := c.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
				t.Fatalf("%s: same clientset after restart: %v", restart.name, err)
			}
			err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
				_, exists, err := cms.GetStore().GetByKey(ns + "/" + name)
				return exists, err
			})
			if err != nil {
				t.Errorf("%s: informer did not see a ConfigMap created after the restart: %v", restart.name, err)
			}
			if user := whoAmI(t, c, token); user.Extra["authentication.kubernetes.io/node-name"] == nil {
				t.Errorf("%s: token minted before the restart: user extra %v has no node name", restart.name, user.Extra)
			}
		}
	})
}

// TestStartFailureReportsTheLog checks that a kube-apiserver that cannot start makes Start fail
// with the log's tail, and leaves no state directory behind.
func TestStartFailureReportsTheLog(t *testing.T) {
	Require(t)
	tools, err := BuildTools(t.Context(), nil, "etcd", "kube-apiserver")
	if err != nil {
		t.Fatal(err)
	}
	var progress strings.Builder
	_, err = Start(t.Context(), Options{ToolsDir: tools, Log: &progress, ExtraAPIServerArgs: []string{"--no-such-flag"}})
	if err == nil {
		t.Fatal("Start succeeded with an unknown kube-apiserver flag")
	}
	for _, want := range []string{"kube-apiserver exited before it was ready", "unknown flag: --no-such-flag"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start error does not contain %q:\n%v", want, err)
		}
	}
	m := regexp.MustCompile(`\(see (\S+)/kube-apiserver\.log\)`).FindStringSubmatch(err.Error())
	if m == nil {
		t.Fatalf("Start error names no log file:\n%v", err)
	}
	if dir := m[1]; !fileGone(dir) {
		t.Errorf("state directory %s still there after a failed Start", dir)
	}
}

// TestStartRejectsNonEmptyDir needs no binaries: the directory is checked first.
func TestStartRejectsNonEmptyDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "leftover"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Start(t.Context(), Options{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("Options.Dir %q is not empty", dir)) || !strings.Contains(err.Error(), `"leftover"`) {
		t.Errorf("Start with a non-empty Dir: got %v, want an error naming Options.Dir and its content", err)
	}
}

// BenchmarkStart measures a cold start (etcd, kube-apiserver to /readyz, bootstrap objects) and Stop.
func BenchmarkStart(b *testing.B) {
	Require(b)
	tools, err := BuildTools(b.Context(), nil, "etcd", "kube-apiserver")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		c, err := Start(b.Context(), Options{ToolsDir: tools})
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Stop(); err != nil {
			b.Fatal(err)
		}
	}
}

func fileGone(path string) bool {
	_, err := os.Stat(path)
	return errors.Is(err, os.ErrNotExist)
}

func uniqueName(prefix string) string { return prefix + "-" + rand.String(6) }

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func testPod(name, serviceAccount string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeName:           DefaultNodeName,
			ServiceAccountName: serviceAccount,
			Containers:         []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}},
		},
	}
}

func restrictedPod(name string) *corev1.Pod {
	p := testPod(name, "")
	yes, no, uid := true, false, int64(1337)
	p.Spec.SecurityContext = &corev1.PodSecurityContext{
		RunAsNonRoot:   &yes,
		RunAsUser:      &uid,
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{
		AllowPrivilegeEscalation: &no,
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
	return p
}

func createPodWithServiceAccount(t *testing.T, c *Cluster, ns, sa string) *corev1.Pod {
	t.Helper()
	_, err := c.Client.CoreV1().ServiceAccounts(ns).Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod, err := c.Client.CoreV1().Pods(ns).Create(t.Context(), testPod("workload", sa), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

func whoAmI(t *testing.T, c *Cluster, token string) authenticationv1.UserInfo {
	t.Helper()
	cs := kubernetes.NewForConfigOrDie(c.ConfigForToken(token))
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(t.Context(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SelfSubjectReview: %v", err)
	}
	return r.Status.UserInfo
}

// denyLabelledConfigMaps installs a ValidatingAdmissionPolicy refusing ConfigMaps labelled e2e-deny
// in namespace ns.
func denyLabelledConfigMaps(t *testing.T, c *Cluster, ns string) {
	t.Helper()
	fail := admissionregistrationv1.Fail
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: ns},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: &fail,
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}},
				},
			}}},
			Validations: []admissionregistrationv1.Validation{{
				Expression: "!has(object.metadata.labels) || !('e2e-deny' in object.metadata.labels)",
				Message:    "the e2e-deny label is refused",
			}},
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: ns},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        ns,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
			MatchResources: &admissionregistrationv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{corev1.LabelMetadataName: ns},
			}},
		},
	}
	api := c.Client.AdmissionregistrationV1()
	if _, err := api.ValidatingAdmissionPolicies().Create(t.Context(), policy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.ValidatingAdmissionPolicyBindings().Create(t.Context(), binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
