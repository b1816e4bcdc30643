package cluster

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"os"
	"runtime"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"
	"sigs.k8s.io/yaml"
)

// RootCAConfigMap is the ConfigMap the controller-manager publishes in every namespace; here
// EnsureNamespace does.
const RootCAConfigMap = "kube-root-ca.crt"

// writeServiceAccountKeys generates the RSA key pair that signs and verifies ServiceAccount tokens.
func writeServiceAccountKeys(keyPath, pubPath string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("generate ServiceAccount signing key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	return os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}

// bootstrap creates what a controller-manager and a kubelet would: the root CA ConfigMap and default
// ServiceAccount of the built-in namespaces, and a Ready Node.
func (c *Cluster) bootstrap(ctx context.Context) error {
	for _, ns := range []string{metav1.NamespaceDefault, metav1.NamespaceSystem} {
		if _, err := c.EnsureNamespace(ctx, ns, nil); err != nil {
			return err
		}
	}
	if c.opts.NoNode {
		return nil
	}
	return c.RegisterNode(ctx, c.NodeName)
}

// EnsureNamespace creates the namespace (or adds labels to an existing one) and what the
// controller-manager would put in it: the `default` ServiceAccount, which pod admission requires,
// and the kube-root-ca.crt ConfigMap. Use a fresh name per test: without a controller-manager a
// deleted namespace stays Terminating.
func (c *Cluster) EnsureNamespace(ctx context.Context, name string, labels map[string]string) (*corev1.Namespace, error) {
	ns, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		ns, err = c.Client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		if err == nil && !containsAll(ns.Labels, labels) {
			if ns.Labels == nil {
				ns.Labels = map[string]string{}
			}
			maps.Copy(ns.Labels, labels)
			ns, err = c.Client.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		return nil, fmt.Errorf("namespace %q: %w", name, err)
	}
	_, err = c.Client.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "default"},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("namespace %q: ServiceAccount \"default\": %w", name, err)
	}
	_, err = c.Client.CoreV1().ConfigMaps(name).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: RootCAConfigMap},
		Data:       map[string]string{"ca.crt": string(c.CAData)},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("namespace %q: ConfigMap %q: %w", name, RootCAConfigMap, err)
	}
	return ns, nil
}

func containsAll(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

// RegisterNode creates a Node (or takes the existing one) with a Ready status and, as the node
// lifecycle controller would once it is Ready, without the not-ready taint that admission puts on
// new nodes. Start registers Options.NodeName; tests add other nodes with it (a pod-bound token
// needs its pod's Node to exist).
func (c *Cluster) RegisterNode(ctx context.Context, name string) error {
	nodes := c.Client.CoreV1().Nodes()
	node, err := nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: name,
		Labels: map[string]string{
			"kubernetes.io/hostname": name,
			"kubernetes.io/os":       "linux",
			"kubernetes.io/arch":     runtime.GOARCH,
		},
	}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		node, err = nodes.Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("register Node %q: %w", name, err)
	}
	now := metav1.Now()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("2"),
		corev1.ResourceMemory: resource.MustParse("8Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	node.Status = corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "simulated node", LastHeartbeatTime: now, LastTransitionTime: now,
		}},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
			{Type: corev1.NodeHostName, Address: name},
		},
		NodeInfo: corev1.NodeSystemInfo{OperatingSystem: "linux", Architecture: runtime.GOARCH, KubeletVersion: "v1.37.2"},
	}
	if node, err = nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("set Node %q Ready: %w", name, err)
	}
	var taints []corev1.Taint
	for _, t := range node.Spec.Taints {
		if t.Key != corev1.TaintNodeNotReady {
			taints = append(taints, t)
		}
	}
	if len(taints) != len(node.Spec.Taints) {
		node.Spec.Taints = taints
		if _, err := nodes.Update(ctx, node, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("remove not-ready taint from Node %q: %w", name, err)
		}
	}
	return nil
}

// PodToken mints a token for the pod's ServiceAccount (spec.serviceAccountName, "default" when
// empty) bound to the pod (TokenRequest with boundObjectRef kind Pod), valid for expiration (the API
// server's default, one hour, when zero; at least 10 minutes otherwise). Because the pod is bound
// to a node, the API server puts authentication.kubernetes.io/node-name (and pod-name, pod-uid,
// node-uid) in the user extra of every request made with it. The token stops working when the pod
// is deleted. pod needs Namespace and Name; its UID is looked up when empty.
func (c *Cluster) PodToken(ctx context.Context, pod *corev1.Pod, expiration time.Duration) (string, error) {
	if pod == nil || pod.Namespace == "" || pod.Name == "" {
		return "", errors.New("PodToken: the pod needs a namespace and a name")
	}
	uid := pod.UID
	sa := pod.Spec.ServiceAccountName
	if uid == "" {
		live, err := c.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return "", fmt.Errorf("PodToken: pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		uid, sa = live.UID, live.Spec.ServiceAccountName
	}
	if sa == "" {
		sa = "default"
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: uid},
	}}
	if expiration != 0 {
		secs := int64(expiration / time.Second)
		req.Spec.ExpirationSeconds = &secs
	}
	resp, err := c.Client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("PodToken: TokenRequest for ServiceAccount %s/%s bound to pod %q: %w", pod.Namespace, sa, pod.Name, err)
	}
	return resp.Status.Token, nil
}

// Kubeconfig returns a kubeconfig (context "e2e") for the API server that authenticates with a
// bearer token, embedding the CA.
func (c *Cluster) Kubeconfig(token string) ([]byte, error) {
	return c.kubeconfig(clientcmdv1.AuthInfo{Token: token})
}

// kubeconfig returns a kubeconfig (context "e2e") for the API server with the given credentials.
func (c *Cluster) kubeconfig(auth clientcmdv1.AuthInfo) ([]byte, error) {
	cfg := clientcmdv1.Config{
		Kind:       "Config",
		APIVersion: "v1",
		Clusters: []clientcmdv1.NamedCluster{{Name: "e2e", Cluster: clientcmdv1.Cluster{
			Server: c.Host, CertificateAuthorityData: c.CAData,
		}}},
		AuthInfos: []clientcmdv1.NamedAuthInfo{{Name: "e2e", AuthInfo: auth}},
		Contexts: []clientcmdv1.NamedContext{{Name: "e2e", Context: clientcmdv1.Context{
			Cluster: "e2e", AuthInfo: "e2e", Namespace: metav1.NamespaceDefault,
		}}},
		CurrentContext: "e2e",
	}
	return yaml.Marshal(cfg)
}

// WriteKubeconfig writes Kubeconfig(token) to path (mode 0600), for the controller binary, kubectl
// or helm.
func (c *Cluster) WriteKubeconfig(path, token string) error {
	b, err := c.Kubeconfig(token)
	if err != nil {
		return err
	}
	return writeKubeconfig(path, b)
}

func writeKubeconfig(path string, b []byte) error {
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}
