package initwait

import "github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"

// OwnNetnsID returns the identity of the network namespace this process runs in, as the controller
// writes it into contract.KeyNetns (SO_NETNS_COOKIE, or the namespace inode on old kernels).
func OwnNetnsID() (contract.NetnsID, error) { return contract.CurrentNetnsID() }
