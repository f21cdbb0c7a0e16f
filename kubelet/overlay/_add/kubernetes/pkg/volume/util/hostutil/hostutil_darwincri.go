//go:build darwin && darwincri

// Host paths on a Mac: hostPath volume types are checked with stat, owners and modes read with
// stat; there is no mount propagation (MakeRShared does nothing: macOS mounts do not propagate)
// and no SELinux. Upstream's darwin stub fails every call, so every hostPath volume with a type
// failed. Only a Mac runs this file: the twin keeps upstream's Linux HostUtil, which does the
// same stat calls.

package hostutil

import (
	"os"
	"path/filepath"
	"syscall"

	"k8s.io/mount-utils"
)

// HostUtil implements HostUtils on a Mac.
type HostUtil struct{}

// NewHostUtil returns the Mac's HostUtils.
func NewHostUtil() *HostUtil {
	return &HostUtil{}
}

// DeviceOpened: block devices are not volumes here; nothing is open.
func (hu *HostUtil) DeviceOpened(string) (bool, error) {
	return false, nil
}

// PathIsDevice reports whether pathname is a block or character device.
func (hu *HostUtil) PathIsDevice(pathname string) (bool, error) {
	info, err := os.Stat(pathname)
	if err != nil {
		return false, err
	}
	return info.Mode()&os.ModeDevice != 0, nil
}

// GetDeviceNameFromMount finds the device of a mount (from getfsstat's table).
func (hu *HostUtil) GetDeviceNameFromMount(mounter mount.Interface, mountPath, pluginMountDir string) (string, error) {
	return getDeviceNameFromMount(mounter, mountPath, pluginMountDir)
}

func getDeviceNameFromMount(mounter mount.Interface, mountPath, _ string) (string, error) {
	dev, _, err := mount.GetDeviceNameFromMount(mounter, mountPath)
	return dev, err
}

// MakeRShared: macOS has no mount propagation; a mount made under the kubelet root is seen by
// every process already.
func (hu *HostUtil) MakeRShared(string) error {
	return nil
}

// GetFileType stats pathname.
func (hu *HostUtil) GetFileType(pathname string) (FileType, error) {
	return getFileType(pathname)
}

// PathExists reports whether pathname exists.
func (hu *HostUtil) PathExists(pathname string) (bool, error) {
	return mount.PathExists(pathname)
}

// EvalHostSymlinks resolves pathname's symlinks.
func (hu *HostUtil) EvalHostSymlinks(pathname string) (string, error) {
	return filepath.EvalSymlinks(pathname)
}

// GetOwner returns pathname's uid and gid.
func (hu *HostUtil) GetOwner(pathname string) (int64, int64, error) {
	info, err := os.Stat(pathname)
	if err != nil {
		return -1, -1, err
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return -1, -1, os.ErrInvalid
	}
	return int64(st.Uid), int64(st.Gid), nil
}

// GetSELinuxSupport: none on a Mac.
func (hu *HostUtil) GetSELinuxSupport(string) (bool, error) {
	return false, nil
}

// GetMode returns pathname's mode.
func (hu *HostUtil) GetMode(pathname string) (os.FileMode, error) {
	info, err := os.Stat(pathname)
	if err != nil {
		return 0, err
	}
	return info.Mode(), nil
}

// GetSELinuxMountContext: none on a Mac.
func (hu *HostUtil) GetSELinuxMountContext(string) (string, error) {
	return "", nil
}
