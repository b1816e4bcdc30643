package cluster

import (
	"fmt"

	"k8s.io/client-go/rest"
	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"
)

// NodeUser is the user name the Node authorizer and NodeRestriction admission know a kubelet by
// (its group is NodesGroup).
func NodeUser(node string) string { return "system:node:" + node }

// NodesGroup is the group of every kubelet's user.
const NodesGroup = "system:nodes"

// ClientConfig returns a client configuration that authenticates as user in groups with a fresh
// client certificate signed by the cluster's CA (which the API server trusts as --client-ca-file),
// as kubeadm's kubeconfigs do. NodeConfig is the kubelet's identity.
func (c *Cluster) ClientConfig(user string, groups ...string) (*rest.Config, error) {
	certPEM, keyPEM, err := c.pki.issue(user, groups, nil)
	if err != nil {
		return nil, err
	}
	return &rest.Config{
		Host:            c.Host,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.CAData, CertData: certPEM, KeyData: keyPEM},
		QPS:             500,
		Burst:           1000,
	}, nil
}

// NodeConfig returns a client configuration with a kubelet's identity for node (user
// system:node:<node>, group system:nodes): the Node authorizer and NodeRestriction admission limit it
// to that node and its pods, as for any kubelet.
func (c *Cluster) NodeConfig(node string) (*rest.Config, error) {
	return c.ClientConfig(NodeUser(node), NodesGroup)
}

// WriteClientKubeconfig writes a kubeconfig (mode 0600) that authenticates as user in groups with
// a client certificate, as ClientConfig.
func (c *Cluster) WriteClientKubeconfig(path, user string, groups ...string) error {
	cfg, err := c.ClientConfig(user, groups...)
	if err != nil {
		return err
	}
	b, err := c.kubeconfig(clientcmdv1.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData})
	if err != nil {
		return fmt.Errorf("kubeconfig for %q: %w", user, err)
	}
	return writeKubeconfig(path, b)
}
