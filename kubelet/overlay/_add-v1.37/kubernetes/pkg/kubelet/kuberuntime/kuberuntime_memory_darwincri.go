//go:build darwincri && !windows

// Memory QoS (cgroup v2 memory.high) is Linux's; 1.37 asks every platform. A Mac has no cgroups:
// darwin-cri's monitor enforces memory limits itself.

package kuberuntime

import (
	v1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/pkg/kubelet/cm"
)

func (m *kubeGenericRuntimeManager) isMemoryQoSEnforced() bool {
	return false
}

func (m *kubeGenericRuntimeManager) applyPodLevelMemoryHigh(*v1.Pod, *cm.ResourceConfig) {}
