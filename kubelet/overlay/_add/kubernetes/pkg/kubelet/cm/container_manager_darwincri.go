//go:build darwincri && !windows

// This project's container manager: capacity from the machine (cores, memory, and the kubelet
// root's file system as ephemeral storage), and allocatable that keeps systemReserved,
// kubeReserved and the hard eviction thresholds back from pods (darwin-cri.io/kubelet/pkg/
// allocatable). A Mac has no cgroups: nothing is enforced at the node level here; darwin-cri's
// monitor enforces each container's CPU and memory limits, and the eviction manager acts on the
// node's usage. Upstream's stub (container_manager_unsupported.go) fails Start, which stops
// kubelet on darwin, and reports allocatable equal to capacity.
//
// The twin (Linux, tag darwincri) uses this container manager too: no cgroups are made and no
// kernel settings are changed by kubelet, as on a Mac.

package cm

import (
	"context"
	"fmt"
	"sync"

	v1 "k8s.io/api/core/v1"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	internalapi "k8s.io/cri-api/pkg/apis"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/kubelet/cadvisor"
	"k8s.io/kubernetes/pkg/kubelet/config"
	"k8s.io/kubernetes/pkg/kubelet/status"
	"k8s.io/mount-utils"

	"darwin-cri.io/kubelet/pkg/allocatable"
)

type darwinContainerManager struct {
	containerManagerStub
	nodeConfig NodeConfig
	cadvisor   cadvisor.Interface

	mu       sync.Mutex
	capacity v1.ResourceList
}

var _ ContainerManager = &darwinContainerManager{}

// NewContainerManager reads the machine's capacity.
func NewContainerManager(ctx context.Context, _ mount.Interface, cadvisorInterface cadvisor.Interface, nodeConfig NodeConfig, _ bool, _ record.EventRecorder, _ clientset.Interface) (ContainerManager, error) {
	info, err := readMachineInfo(ctx, cadvisorInterface)
	if err != nil {
		return nil, fmt.Errorf("reading the machine's capacity: %w", err)
	}
	return &darwinContainerManager{
		nodeConfig: nodeConfig,
		cadvisor:   cadvisorInterface,
		capacity:   cadvisor.CapacityFromMachineInfo(info),
	}, nil
}

// Start adds the kubelet root's file system to capacity as ephemeral storage.
func (cm *darwinContainerManager) Start(ctx context.Context, node *v1.Node, activePods ActivePodsFunc, getNode GetNodeFunc, sourcesReady config.SourcesReady, podStatusProvider status.PodStatusProvider, runtimeService internalapi.RuntimeService, localStorageCapacityIsolation bool) error {
	// The stub's Start makes the (no-op) CPU and memory managers that kubelet's container
	// lifecycle calls.
	if err := cm.containerManagerStub.Start(ctx, node, activePods, getNode, sourcesReady, podStatusProvider, runtimeService, localStorageCapacityIsolation); err != nil {
		return err
	}
	if !localStorageCapacityIsolation {
		return nil
	}
	rootfs, err := cm.cadvisor.RootFsInfo()
	if err != nil {
		return fmt.Errorf("reading the root file system's size: %w", err)
	}
	cm.mu.Lock()
	defer cm.mu.Unlock()
	for name, q := range cadvisor.EphemeralStorageCapacityFromFsInfo(rootfs) {
		cm.capacity[name] = q
	}
	return nil
}

func (cm *darwinContainerManager) GetNodeConfig() NodeConfig {
	return cm.nodeConfig
}

func (cm *darwinContainerManager) capacityCopy() v1.ResourceList {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	out := make(v1.ResourceList, len(cm.capacity))
	for k, v := range cm.capacity {
		out[k] = v.DeepCopy()
	}
	return out
}

// currentCapacity is the machine's capacity; ephemeral storage is read now if Start has not yet.
// GetCapacity, whose signature moved between minors, is in overlay/_add-<minor>/.
func (cm *darwinContainerManager) currentCapacity(logger klog.Logger, localStorageCapacityIsolation bool) v1.ResourceList {
	c := cm.capacityCopy()
	if !localStorageCapacityIsolation {
		delete(c, v1.ResourceEphemeralStorage)
		return c
	}
	if _, ok := c[v1.ResourceEphemeralStorage]; !ok {
		if rootfs, err := cm.cadvisor.RootFsInfo(); err == nil {
			for name, q := range cadvisor.EphemeralStorageCapacityFromFsInfo(rootfs) {
				c[name] = q
			}
		} else {
			logger.Error(err, "Reading the root file system's size")
		}
	}
	return c
}

func (cm *darwinContainerManager) GetNodeAllocatableReservation() v1.ResourceList {
	nc := cm.nodeConfig.NodeAllocatableConfig
	return allocatable.Reservation(cm.capacityCopy(), nc.SystemReserved, nc.KubeReserved, nc.HardEvictionThresholds)
}

func (cm *darwinContainerManager) GetNodeAllocatableAbsolute() v1.ResourceList {
	return allocatable.Allocatable(cm.capacityCopy(), cm.GetNodeAllocatableReservation())
}
