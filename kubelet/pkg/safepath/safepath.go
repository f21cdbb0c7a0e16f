// Package safepath resolves and creates paths inside a volume that its pod controls, without
// following a symlink out of it. Upstream's Linux kubelet pins a subPath by bind-mounting an
// open descriptor (/proc/self/fd/N); a Mac has neither bind mounts nor /proc, so this project's
// darwin subPath (overlay util/subpath/subpath_darwincri.go) resolves the path here, checks that
// it stays within the volume, and hands darwin-cri the resolved path. Plain POSIX: the same code
// is tested on Linux.
package safepath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Within reports whether path is base or beneath it (both clean, absolute).
func Within(path, base string) bool {
	if path == base {
		return true
	}
	return strings.HasPrefix(path, strings.TrimSuffix(base, "/")+"/")
}

// Resolve evaluates the symlinks of path, which must lie in base, and returns the resolved path
// if it is still within base's resolved path.
func Resolve(path, base string) (string, error) {
	realBase, err := filepath.EvalSymlinks(base)
	if err != nil {
		return "", fmt.Errorf("volume %s: %w", base, err)
	}
	if !Within(filepath.Clean(path), filepath.Clean(base)) {
		return "", fmt.Errorf("subPath %s is outside its volume %s", path, base)
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", fmt.Errorf("subPath %s: %w", path, err)
	}
	if !Within(real, realBase) {
		return "", fmt.Errorf("subPath %s resolves to %s, outside its volume %s", path, real, base)
	}
	return real, nil
}

// MakeDir creates subdir (and its parents) beneath base, opening each existing component with
// O_NOFOLLOW beneath its parent's descriptor, so that a symlink planted in the volume cannot
// make kubelet create a directory elsewhere.
func MakeDir(subdir, base string, perm os.FileMode) error {
	subdir, base = filepath.Clean(subdir), filepath.Clean(base)
	if !Within(subdir, base) {
		return fmt.Errorf("%s is outside %s", subdir, base)
	}
	rel, err := filepath.Rel(base, subdir)
	if err != nil {
		return err
	}
	fd, err := unix.Open(base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", base, err)
	}
	if rel == "." {
		return unix.Close(fd)
	}
	defer func() { unix.Close(fd) }()
	at := base
	for _, name := range strings.Split(rel, "/") {
		if name == "" || name == "." || name == ".." {
			return fmt.Errorf("%s: bad component %q", subdir, name)
		}
		at = filepath.Join(at, name)
		err := unix.Mkdirat(fd, name, uint32(perm.Perm()))
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("mkdir %s: %w", at, err)
		}
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
				return fmt.Errorf("%s is a symlink or not a directory: refused", at)
			}
			return fmt.Errorf("open %s: %w", at, err)
		}
		unix.Close(fd)
		fd = next
	}
	return nil
}
