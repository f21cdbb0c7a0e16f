//go:build darwincri && !windows

// What differs per minor in the container manager: 1.37's cAdvisor takes a logger.

package cm

import (
	"context"

	cadvisorapi "github.com/google/cadvisor/lib/model"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/kubelet/cadvisor"
)

func readMachineInfo(ctx context.Context, c cadvisor.Interface) (*cadvisorapi.MachineInfo, error) {
	return c.MachineInfo(klog.FromContext(ctx))
}
