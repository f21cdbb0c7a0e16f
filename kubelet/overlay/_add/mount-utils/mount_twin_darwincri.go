//go:build linux && darwincri

// The twin's mounter: upstream's Linux mounter, with tmpfs requests decided as on a Mac
// (darwin-cri.io/kubelet/pkg/memvol): kubelet's own volumes become directories on disk and a
// user's memory-backed emptyDir is refused, so CI sees what a Mac's kubelet does. New is renamed
// to newLinuxMounter in mount_linux.go by overlay/common.spec.

package mount

import "darwin-cri.io/kubelet/pkg/memvol"

type twinMounter struct {
	*Mounter
}

// New returns the twin's mount.Interface.
func New(mounterPath string) Interface {
	return &twinMounter{Mounter: newLinuxMounter(mounterPath).(*Mounter)}
}

func (m *twinMounter) Mount(source string, target string, fstype string, options []string) error {
	if fstype == "tmpfs" {
		_, err := memvol.OnDisk(target)
		return err
	}
	return m.Mounter.Mount(source, target, fstype, options)
}

func (m *twinMounter) MountSensitive(source string, target string, fstype string, options []string, sensitive []string) error {
	if fstype == "tmpfs" {
		_, err := memvol.OnDisk(target)
		return err
	}
	return m.Mounter.MountSensitive(source, target, fstype, options, sensitive)
}

func (m *twinMounter) MountSensitiveWithoutSystemd(source string, target string, fstype string, options []string, sensitive []string) error {
	if fstype == "tmpfs" {
		_, err := memvol.OnDisk(target)
		return err
	}
	return m.Mounter.MountSensitiveWithoutSystemd(source, target, fstype, options, sensitive)
}

func (m *twinMounter) MountSensitiveWithoutSystemdWithMountFlags(source string, target string, fstype string, options []string, sensitive []string, flags []string) error {
	if fstype == "tmpfs" {
		_, err := memvol.OnDisk(target)
		return err
	}
	return m.Mounter.MountSensitiveWithoutSystemdWithMountFlags(source, target, fstype, options, sensitive, flags)
}
