//go:build darwincri && !windows

// What this project's kubelet sends darwin-cri for a container: no ContainerConfig.linux (no
// cgroups, namespaces, capabilities or seccomp on a Mac), and the pod's security context and the
// container's limits as kubelet.darwin-cri.io/ annotations (darwin-cri.io/kubelet/pkg/contract),
// which darwin-cri enforces (user and groups in the chroot, Seatbelt for privileged and
// read-only roots, its monitor for CPU and memory). The twin (Linux, tag darwincri) sends the
// same, so CI drives darwin-cri exactly as a Mac's kubelet does.

package kuberuntime

import (
	"context"

	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/kubernetes/pkg/kubelet/cm"
	kubecontainer "k8s.io/kubernetes/pkg/kubelet/container"
	"k8s.io/kubernetes/pkg/kubelet/types"

	"darwin-cri.io/kubelet/pkg/contract"
)

func (m *kubeGenericRuntimeManager) applyPlatformSpecificContainerConfig(_ context.Context, config *runtimeapi.ContainerConfig, container *v1.Container, pod *v1.Pod, _ *int64, _ string, _ *kubecontainer.ContainerID) error {
	if config.Annotations == nil {
		config.Annotations = map[string]string{}
	}
	for k, v := range contract.Annotations(pod, container, m.runtimeHelper.GetExtraSupplementalGroupsForPod(pod)) {
		config.Annotations[k] = v
	}
	return nil
}

// generateContainerResources: no Linux resources; in-place resize is not offered (darwin-cri
// takes limits at create).
func (m *kubeGenericRuntimeManager) generateContainerResources(context.Context, *v1.Pod, *v1.Container) *runtimeapi.ContainerResources {
	return nil
}

func (m *kubeGenericRuntimeManager) generateUpdatePodSandboxResourcesRequest(string, *v1.Pod, *cm.ResourceConfig) *runtimeapi.UpdatePodSandboxResourcesRequest {
	return nil
}

func toKubeContainerResources(*runtimeapi.ContainerResources) *kubecontainer.ContainerResources {
	return nil
}

func toKubeContainerUser(*runtimeapi.ContainerUser) *kubecontainer.ContainerUser {
	return nil
}

// GetContainerSwapBehavior: macOS swaps on its own terms; pods get no swap configuration.
func (m *kubeGenericRuntimeManager) GetContainerSwapBehavior(*v1.Pod, *v1.Container) types.SwapBehavior {
	return types.NoSwap
}

func initSwapControllerAvailabilityCheck(context.Context) func() bool {
	return func() bool { return false }
}
