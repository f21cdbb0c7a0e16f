//go:build linux && darwincri

// The twin keeps upstream's Linux cgroup helpers (helpers_linux.go), which name two things
// defined in the Linux container manager this project replaces. A Mac has no cgroups, and the
// twin reports none either: kubelet's own container is "" as on darwin (helpers_unsupported.go).

package cm

import "k8s.io/klog/v2"

const defaultNodeAllocatableCgroupName = "kubepods"

func getContainer(klog.Logger, int) (string, error) {
	return "", nil
}
