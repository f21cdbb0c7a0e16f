//go:build darwincri && !windows

// What differs per minor in the container manager: 1.35's cAdvisor takes no logger.

package cm

import (
	"context"

	cadvisorapi "github.com/google/cadvisor/info/v1"
	"k8s.io/kubernetes/pkg/kubelet/cadvisor"
)

func readMachineInfo(ctx context.Context, c cadvisor.Interface) (*cadvisorapi.MachineInfo, error) {
	return c.MachineInfo()
}
