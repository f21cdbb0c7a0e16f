//go:build darwin && darwincri

// subPath on a Mac, which has no bind mounts to pin a path with (upstream's Linux subPath
// bind-mounts an open descriptor; its darwin stub fails every subPath). The subPath is resolved
// and checked to stay within its volume (darwin-cri.io/kubelet/pkg/safepath), and its resolved
// path is what darwin-cri mounts. The limit, as upstream's Windows subPath has one: a container
// that can write the volume could swap a component for a symlink between this check and
// darwin-cri's mount; darwin-cri opens host paths without following symlinks out of them.
// Only a Mac runs this file: the twin keeps upstream's Linux subPath.

package subpath

import (
	"os"
	"path/filepath"

	"k8s.io/mount-utils"

	"darwin-cri.io/kubelet/pkg/safepath"
)

type subpath struct{}

// New returns the Mac's subpath.Interface.
func New(mount.Interface) Interface {
	return &subpath{}
}

// PrepareSafeSubpath resolves the subPath within its volume.
func (sp *subpath) PrepareSafeSubpath(subPath Subpath) (string, func(), error) {
	p, err := safepath.Resolve(subPath.Path, subPath.VolumePath)
	if err != nil {
		return "", nil, err
	}
	return p, func() {}, nil
}

// CleanSubPaths removes the pod's volume-subpaths directory for the volume: nothing was mounted.
func (sp *subpath) CleanSubPaths(podDir string, volumeName string) error {
	return os.RemoveAll(filepath.Join(podDir, "volume-subpaths", volumeName))
}

// SafeMakeDir creates subdir beneath base without following symlinks.
func (sp *subpath) SafeMakeDir(subdir string, base string, perm os.FileMode) error {
	return safepath.MakeDir(subdir, base, perm)
}
