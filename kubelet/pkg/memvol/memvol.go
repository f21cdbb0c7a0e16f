// Package memvol decides what a tmpfs mount request from kubelet's volume plugins becomes on a
// Mac, which has no tmpfs. kubelet asks for tmpfs in two cases: a user's emptyDir with
// `medium: Memory`, and the volumes it writes itself (secret, configMap, downwardAPI, projected
// service-account tokens), which wrap an emptyDir of medium Memory to keep secrets off disk.
// A user's memory-backed emptyDir is refused with a clear error (a RAM disk would need hdiutil
// and diskutil per volume, with memory the scheduler does not count); kubelet's own volumes are
// plain directories on disk. Secrets then rest on the Mac's disk: keep the kubelet root on a
// FileVault-encrypted volume (docs/kubelet.md). The twin decides the same, so CI sees what a Mac
// does.
package memvol

import (
	"fmt"
	"strings"
)

// EmptyDirPlugin is the path element of a user's emptyDir volume in kubelet's pod directory.
const EmptyDirPlugin = "/volumes/kubernetes.io~empty-dir/"

// OnDisk says whether a tmpfs mount at target is to be a directory on disk (true, nil), or is
// refused (an error naming the volume and the fix).
func OnDisk(target string) (bool, error) {
	if i := strings.Index(target, EmptyDirPlugin); i >= 0 {
		name := strings.SplitN(target[i+len(EmptyDirPlugin):], "/", 2)[0]
		return false, fmt.Errorf("emptyDir volume %q asks for medium: Memory, which a Mac cannot give (macOS has no tmpfs): drop `medium: Memory` to use the node's disk", name)
	}
	return true, nil
}
