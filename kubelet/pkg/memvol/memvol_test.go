package memvol

import (
	"strings"
	"testing"
)

func TestUserMemoryEmptyDirIsRefusedAndKubeletsOwnAreOnDisk(t *testing.T) {
	_, err := OnDisk("/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/scratch")
	if err == nil || !strings.Contains(err.Error(), `"scratch"`) || !strings.Contains(err.Error(), "medium: Memory") {
		t.Fatalf("want a refusal naming the volume, got %v", err)
	}
	for _, p := range []string{
		"/var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/creds",
		"/var/lib/kubelet/pods/u1/volumes/kubernetes.io~projected/kube-api-access-x",
		"/var/lib/kubelet/pods/u1/volumes/kubernetes.io~configmap/script",
	} {
		if ok, err := OnDisk(p); !ok || err != nil {
			t.Fatalf("%s: %v %v", p, ok, err)
		}
	}
}
