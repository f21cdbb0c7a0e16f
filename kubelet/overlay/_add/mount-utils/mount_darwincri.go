//go:build darwin && darwincri

// Mounts on a Mac: the mount table from getfsstat(2), mount points found by comparing devices,
// and tmpfs requests decided by darwin-cri.io/kubelet/pkg/memvol (kubelet's own volumes on disk,
// a user's memory-backed emptyDir refused). Upstream's darwin stub fails every call, and with it
// every emptyDir, secret, configMap and token volume. Only a Mac runs this file; the twin runs
// upstream's Linux mounter with the same tmpfs decision (mount_twin_darwincri.go).

package mount

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"darwin-cri.io/kubelet/pkg/memvol"
)

// Mounter implements mount.Interface on a Mac.
type Mounter struct {
	mounterPath string
}

// New returns the Mac's mount.Interface.
func New(mounterPath string) Interface {
	return &Mounter{mounterPath: mounterPath}
}

func (mounter *Mounter) mount(source, target, fstype string) error {
	if fstype == "tmpfs" {
		if _, err := memvol.OnDisk(target); err != nil {
			return err
		}
		// A directory on disk, which kubelet has made already.
		return nil
	}
	return fmt.Errorf("mounting %s (%s) on %s: macOS nodes mount no volumes through kubelet (no bind mounts, no block devices); use emptyDir, configMap, secret, downwardAPI, projected or hostPath volumes", source, fstype, target)
}

// Mount mounts nothing but tmpfs (see the file's comment).
func (mounter *Mounter) Mount(source string, target string, fstype string, _ []string) error {
	return mounter.mount(source, target, fstype)
}

// MountSensitive is Mount.
func (mounter *Mounter) MountSensitive(source string, target string, fstype string, _ []string, _ []string) error {
	return mounter.mount(source, target, fstype)
}

// MountSensitiveWithoutSystemd is Mount.
func (mounter *Mounter) MountSensitiveWithoutSystemd(source string, target string, fstype string, _ []string, _ []string) error {
	return mounter.mount(source, target, fstype)
}

// MountSensitiveWithoutSystemdWithMountFlags is Mount.
func (mounter *Mounter) MountSensitiveWithoutSystemdWithMountFlags(source string, target string, fstype string, _ []string, _ []string, _ []string) error {
	return mounter.mount(source, target, fstype)
}

// Unmount unmounts target if it is a mount point, and does nothing for a plain directory (the
// on-disk stand-in for a tmpfs).
func (mounter *Mounter) Unmount(target string) error {
	notMnt, err := mounter.IsLikelyNotMountPoint(target)
	if err != nil {
		return err
	}
	if notMnt {
		return nil
	}
	return unix.Unmount(target, 0)
}

// List reads the mount table with getfsstat(2).
func (mounter *Mounter) List() ([]MountPoint, error) {
	n, err := unix.Getfsstat(nil, unix.MNT_NOWAIT)
	if err != nil {
		return nil, fmt.Errorf("getfsstat: %w", err)
	}
	buf := make([]unix.Statfs_t, n+8)
	n, err = unix.Getfsstat(buf, unix.MNT_NOWAIT)
	if err != nil {
		return nil, fmt.Errorf("getfsstat: %w", err)
	}
	out := make([]MountPoint, 0, n)
	for _, s := range buf[:n] {
		opts := []string{"rw"}
		if s.Flags&unix.MNT_RDONLY != 0 {
			opts[0] = "ro"
		}
		if s.Flags&unix.MNT_NOSUID != 0 {
			opts = append(opts, "nosuid")
		}
		if s.Flags&unix.MNT_NODEV != 0 {
			opts = append(opts, "nodev")
		}
		out = append(out, MountPoint{
			Device: unix.ByteSliceToString(s.Mntfromname[:]),
			Path:   unix.ByteSliceToString(s.Mntonname[:]),
			Type:   unix.ByteSliceToString(s.Fstypename[:]),
			Opts:   opts,
		})
	}
	return out, nil
}

// IsLikelyNotMountPoint compares file's device with its parent's.
func (mounter *Mounter) IsLikelyNotMountPoint(file string) (bool, error) {
	var st, parent unix.Stat_t
	if err := unix.Lstat(file, &st); err != nil {
		return true, &os.PathError{Op: "lstat", Path: file, Err: err}
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		// As upstream: a symlink is not a mount point.
		return true, nil
	}
	if err := unix.Stat(filepath.Dir(strings.TrimSuffix(file, "/")), &parent); err != nil {
		return true, &os.PathError{Op: "stat", Path: filepath.Dir(file), Err: err}
	}
	return st.Dev == parent.Dev, nil
}

// CanSafelySkipMountPointCheck: no.
func (mounter *Mounter) CanSafelySkipMountPointCheck() bool {
	return false
}

// IsMountPoint looks file up in the mount table.
func (mounter *Mounter) IsMountPoint(file string) (bool, error) {
	real, err := filepath.EvalSymlinks(file)
	if err != nil {
		return false, err
	}
	mps, err := mounter.List()
	if err != nil {
		return false, err
	}
	for _, mp := range mps {
		if mp.Path == real {
			return true, nil
		}
	}
	return false, nil
}

// GetMountRefs finds the mounts of pathname's device.
func (mounter *Mounter) GetMountRefs(pathname string) ([]string, error) {
	exists, err := PathExists(pathname)
	if !exists {
		return []string{}, nil
	}
	if err != nil {
		return nil, err
	}
	real, err := filepath.EvalSymlinks(pathname)
	if err != nil {
		return nil, err
	}
	return getMountRefsByDev(mounter, real)
}

var errNoFormat = errors.New("formatting and mounting block devices is not supported on macOS nodes")

func (mounter *SafeFormatAndMount) formatAndMountSensitive(string, string, string, []string, []string, []string) error {
	return errNoFormat
}

func (mounter *SafeFormatAndMount) diskLooksUnformatted(string) (bool, error) {
	return false, errNoFormat
}

// IsMountPoint asks the wrapped mounter.
func (mounter *SafeFormatAndMount) IsMountPoint(file string) (bool, error) {
	return mounter.Interface.IsMountPoint(file)
}
