package machine

// The twin's machine: the same facts and usage read from Linux's /proc and /sys, so that the
// darwin-flavoured kubelet's node status and summary API run in CI as they do on a Mac.

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// ReadFacts reads the machine's facts.
func ReadFacts() (Facts, error) {
	f := Facts{Cores: runtime.NumCPU()}
	mem, err := meminfo()
	if err != nil {
		return f, err
	}
	f.MemoryBytes = mem["MemTotal"]
	f.MachineID = readTrim("/etc/machine-id")
	f.SystemUUID = readTrim("/sys/class/dmi/id/product_uuid")
	f.BootID = readTrim("/proc/sys/kernel/random/boot_id")
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		f.KernelVersion = unix.ByteSliceToString(u.Release[:])
	}
	for _, l := range strings.Split(readTrim("/etc/os-release"), "\n") {
		if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
			f.OSVersion = strings.Trim(v, `"`)
		}
	}
	return f, nil
}

// meminfo reads /proc/meminfo in bytes.
func meminfo() (map[string]uint64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return nil, err
	}
	return parseMeminfo(b), nil
}

func parseMeminfo(b []byte) map[string]uint64 {
	out := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			continue
		}
		if len(fields) > 1 && fields[1] == "kB" {
			n *= 1024
		}
		out[k] = n
	}
	return out
}

// ReadUsage reads the CPU time of all cores (/proc/stat) and memory (/proc/meminfo).
func ReadUsage() (Usage, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return Usage{}, err
	}
	cpu, err := parseProcStatCPU(b)
	if err != nil {
		return Usage{}, err
	}
	mem, err := meminfo()
	if err != nil {
		return Usage{}, err
	}
	return Usage{CPUNanos: cpu, MemoryUsage: mem["MemTotal"] - min(mem["MemFree"], mem["MemTotal"]),
		WorkingSet: mem["MemTotal"] - min(mem["MemAvailable"], mem["MemTotal"]),
		RSS:        mem["AnonPages"]}, nil
}

// parseProcStatCPU: the busy time (user, nice, system, irq, softirq, steal) of the "cpu" line,
// in nanoseconds (USER_HZ is 100 on every Linux the twin runs on).
func parseProcStatCPU(b []byte) (uint64, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: no cpu line")
	}
	var busy uint64
	for _, i := range []int{1, 2, 3, 6, 7} {
		n, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		busy += n
	}
	if len(f) > 8 {
		if n, err := strconv.ParseUint(f[8], 10, 64); err == nil {
			busy += n
		}
	}
	return busy * (1e9 / 100), nil
}

// ReadFs reads the size of the file system holding path.
func ReadFs(path string) (FsStats, error) {
	var s unix.Statfs_t
	if err := unix.Statfs(path, &s); err != nil {
		return FsStats{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	fs := fsFromStatfs(uint64(s.Bsize), s.Blocks, s.Bfree, s.Bavail, s.Files, s.Ffree)
	fs.Mountpoint, fs.Device = mountOf(path)
	return fs, nil
}

// mountOf finds the mount point and device holding path in /proc/self/mounts (longest prefix).
func mountOf(path string) (string, string) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return "", ""
	}
	best, dev := "", ""
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		mp := f[1]
		if (path == mp || strings.HasPrefix(path, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best, dev = mp, f[0]
		}
	}
	return best, dev
}
