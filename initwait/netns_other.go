//go:build !linux

package initwait

import (
	"errors"

	"github.com/redhat-cop/istio-pod-network-controller/netsetup/contract"
)

// OwnNetnsID is Linux-only: network namespaces are.
func OwnNetnsID() (contract.NetnsID, error) {
	return contract.NetnsID{}, errors.New("network namespace identity is Linux-only")
}
