//go:build darwincri && !windows

// What differs per minor in the container manager: 1.36's cAdvisor and GetCapacity take no logger.

package cm

import (
	"context"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	cadvisorapi "github.com/google/cadvisor/info/v1"
	"k8s.io/kubernetes/pkg/kubelet/cadvisor"
)

func readMachineInfo(ctx context.Context, c cadvisor.Interface) (*cadvisorapi.MachineInfo, error) {
	return c.MachineInfo()
}

func (cm *darwinContainerManager) GetCapacity(localStorageCapacityIsolation bool) v1.ResourceList {
	return cm.currentCapacity(klog.Background(), localStorageCapacityIsolation)
}
