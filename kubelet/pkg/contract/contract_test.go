package contract

import (
	"reflect"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestABuildPod(t *testing.T) {
	uid, gid, fs := int64(1000), int64(20), int64(5000)
	no := false
	ro := true
	pod := &v1.Pod{Spec: v1.PodSpec{SecurityContext: &v1.PodSecurityContext{
		RunAsUser: &uid, RunAsGroup: &gid, FSGroup: &fs, SupplementalGroups: []int64{12, 5000},
	}}}
	c := &v1.Container{
		Name: "xcodebuild",
		SecurityContext: &v1.SecurityContext{AllowPrivilegeEscalation: &no,
			ReadOnlyRootFilesystem: &ro},
		Resources: v1.ResourceRequirements{Limits: v1.ResourceList{
			v1.ResourceCPU:    resource.MustParse("1500m"),
			v1.ResourceMemory: resource.MustParse("8Gi"),
		}},
	}
	got := Annotations(pod, c, []int64{7})
	want := map[string]string{
		RunAsUser:          "1000",
		RunAsGroup:         "20",
		SupplementalGroups: "5000,12,7",
		ReadOnlyRootfs:     "true",
		NoNewPrivs:         "true",
		CPULimit:           "1500",
		MemoryLimit:        "8589934592",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}

func TestTheContainerWinsAndNothingIsInvented(t *testing.T) {
	podUID, cUID := int64(1000), int64(0)
	priv := true
	pod := &v1.Pod{Spec: v1.PodSpec{SecurityContext: &v1.PodSecurityContext{RunAsUser: &podUID}}}
	c := &v1.Container{SecurityContext: &v1.SecurityContext{RunAsUser: &cUID, Privileged: &priv}}
	got := Annotations(pod, c, nil)
	want := map[string]string{RunAsUser: "0", Privileged: "true"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if len(Annotations(&v1.Pod{}, &v1.Container{}, nil)) != 0 {
		t.Fatal("a pod that asks for nothing gets no keys")
	}
}
