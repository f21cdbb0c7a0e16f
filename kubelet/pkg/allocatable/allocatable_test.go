package allocatable

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	evictionapi "k8s.io/kubernetes/pkg/kubelet/eviction/api"
)

func TestAMacMini(t *testing.T) {
	// An M2 Pro Mac mini: 12 cores, 32 GiB, a 1 TB disk.
	capacity := v1.ResourceList{
		v1.ResourceCPU:              resource.MustParse("12"),
		v1.ResourceMemory:           resource.MustParse("32Gi"),
		v1.ResourceEphemeralStorage: resource.MustParse("1000G"),
		v1.ResourcePods:             resource.MustParse("110"),
	}
	system := v1.ResourceList{v1.ResourceCPU: resource.MustParse("1"), v1.ResourceMemory: resource.MustParse("4Gi")}
	kube := v1.ResourceList{v1.ResourceCPU: resource.MustParse("500m"), v1.ResourceMemory: resource.MustParse("1Gi")}
	thresholds := []evictionapi.Threshold{
		{Signal: evictionapi.SignalMemoryAvailable, Operator: evictionapi.OpLessThan,
			Value: evictionapi.ThresholdValue{Quantity: ptr(resource.MustParse("500Mi"))}},
		{Signal: evictionapi.SignalNodeFsAvailable, Operator: evictionapi.OpLessThan,
			Value: evictionapi.ThresholdValue{Percentage: 0.25}},
		// Not a reservation: image fs and inodes are not allocatable resources.
		{Signal: evictionapi.SignalImageFsAvailable, Operator: evictionapi.OpLessThan,
			Value: evictionapi.ThresholdValue{Percentage: 0.15}},
	}
	r := Reservation(capacity, system, kube, thresholds)
	want := map[v1.ResourceName]string{
		v1.ResourceCPU:              "1500m",
		v1.ResourceMemory:           "5620Mi",
		v1.ResourceEphemeralStorage: "250G",
	}
	if len(r) != len(want) {
		t.Fatalf("reservation %v", r)
	}
	for name, w := range want {
		q := r[name]
		if q.Cmp(resource.MustParse(w)) != 0 {
			t.Errorf("%s reserved %s, want %s", name, q.String(), w)
		}
	}
	a := Allocatable(capacity, r)
	for name, w := range map[v1.ResourceName]string{
		v1.ResourceCPU:              "10500m",
		v1.ResourceMemory:           "27148Mi",
		v1.ResourceEphemeralStorage: "750G",
		v1.ResourcePods:             "110",
	} {
		q := a[name]
		if q.Cmp(resource.MustParse(w)) != 0 {
			t.Errorf("%s allocatable %s, want %s", name, q.String(), w)
		}
	}
}

func TestNeverNegativeAndNothingReservedIsLeftOut(t *testing.T) {
	capacity := v1.ResourceList{v1.ResourceCPU: resource.MustParse("2"), v1.ResourceMemory: resource.MustParse("1Gi")}
	r := Reservation(capacity, v1.ResourceList{v1.ResourceCPU: resource.MustParse("3")}, nil, nil)
	if _, ok := r[v1.ResourceMemory]; ok {
		t.Fatalf("memory reserved from nothing: %v", r)
	}
	a := Allocatable(capacity, r)
	cpu := a[v1.ResourceCPU]
	if cpu.Sign() != 0 {
		t.Fatalf("cpu allocatable %s", cpu.String())
	}
	mem := a[v1.ResourceMemory]
	if mem.Cmp(resource.MustParse("1Gi")) != 0 {
		t.Fatalf("memory allocatable %s", mem.String())
	}
}

func ptr[T any](v T) *T { return &v }
