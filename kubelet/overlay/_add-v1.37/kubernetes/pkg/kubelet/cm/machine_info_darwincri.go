//go:build darwincri && !windows

// What differs per minor in the container manager: 1.37's cAdvisor and GetCapacity take a logger.

package cm

import (
	"context"

	v1 "k8s.io/api/core/v1"

	cadvisorapi "github.com/google/cadvisor/lib/model"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/kubelet/cadvisor"
)

func readMachineInfo(ctx context.Context, c cadvisor.Interface) (*cadvisorapi.MachineInfo, error) {
	return c.MachineInfo(klog.FromContext(ctx))
}

func (cm *darwinContainerManager) GetCapacity(logger klog.Logger, localStorageCapacityIsolation bool) v1.ResourceList {
	return cm.currentCapacity(logger, localStorageCapacityIsolation)
}
