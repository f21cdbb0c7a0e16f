// Package allocatable computes what a node keeps back from its pods: systemReserved,
// kubeReserved and the hard eviction thresholds, subtracted from capacity, as upstream's Linux
// container manager does. The darwin forks of kubelet report all of capacity as allocatable
// (their container manager is the stub), so the scheduler packs a Mac until macOS itself is
// starved; this project's container manager (overlay cm/container_manager_darwincri.go) uses this
// package on a Mac and in the twin.
package allocatable

import (
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	evictionapi "k8s.io/kubernetes/pkg/kubelet/eviction/api"
)

// EvictionReservation is what the hard eviction thresholds on memory.available and
// nodefs.available keep back: a quantity, or a percentage of capacity.
func EvictionReservation(thresholds []evictionapi.Threshold, capacity v1.ResourceList) v1.ResourceList {
	out := v1.ResourceList{}
	for _, t := range thresholds {
		if t.Operator != evictionapi.OpLessThan {
			continue
		}
		var name v1.ResourceName
		switch t.Signal {
		case evictionapi.SignalMemoryAvailable:
			name = v1.ResourceMemory
		case evictionapi.SignalNodeFsAvailable:
			name = v1.ResourceEphemeralStorage
		default:
			continue
		}
		c, ok := capacity[name]
		if !ok {
			continue
		}
		if q := evictionapi.GetThresholdQuantity(t.Value, &c); q != nil {
			out[name] = *q
		}
	}
	return out
}

// Reservation sums systemReserved, kubeReserved and the eviction reservation for each resource
// of capacity; resources with nothing reserved are left out.
func Reservation(capacity, systemReserved, kubeReserved v1.ResourceList, thresholds []evictionapi.Threshold) v1.ResourceList {
	eviction := EvictionReservation(thresholds, capacity)
	out := v1.ResourceList{}
	for name := range capacity {
		sum := resource.NewQuantity(0, resource.DecimalSI)
		for _, l := range []v1.ResourceList{systemReserved, kubeReserved, eviction} {
			if q, ok := l[name]; ok {
				sum.Add(q)
			}
		}
		if !sum.IsZero() {
			out[name] = *sum
		}
	}
	return out
}

// Allocatable is capacity minus reservation, never below zero.
func Allocatable(capacity, reservation v1.ResourceList) v1.ResourceList {
	out := v1.ResourceList{}
	for name, c := range capacity {
		a := c.DeepCopy()
		if r, ok := reservation[name]; ok {
			a.Sub(r)
		}
		if a.Sign() < 0 {
			a.Set(0)
		}
		out[name] = a
	}
	return out
}
