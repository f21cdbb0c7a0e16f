package machine

// The Mac's facts come from sysctl (golang.org/x/sys/unix, no cgo) and its CPU and memory
// usage from Mach's host_statistics(64), which only a C call reaches: purego calls libSystem
// without cgo, so the kubelet cross-compiles with CGO_ENABLED=0. Only a Mac runs this file.

import (
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
	"golang.org/x/sys/unix"
)

// ReadFacts reads the Mac's facts.
func ReadFacts() (Facts, error) {
	var f Facts
	ncpu, err := unix.SysctlUint32("hw.ncpu")
	if err != nil {
		return f, fmt.Errorf("sysctl hw.ncpu: %w", err)
	}
	f.Cores = int(ncpu)
	if f.MemoryBytes, err = unix.SysctlUint64("hw.memsize"); err != nil {
		return f, fmt.Errorf("sysctl hw.memsize: %w", err)
	}
	f.SystemUUID = platformUUID()
	// A Mac has no /etc/machine-id; its hardware UUID is stable across reinstalls of macOS
	// and unique per machine, which is what machine-id is for.
	f.MachineID = strings.ReplaceAll(strings.ToLower(f.SystemUUID), "-", "")
	if bootSessionUUID, err := unix.Sysctl("kern.bootsessionuuid"); err == nil {
		f.BootID = bootSessionUUID
	} else if tv, err := unix.SysctlTimeval("kern.boottime"); err == nil {
		f.BootID = fmt.Sprintf("boot-%d-%d", tv.Sec, tv.Usec)
	}
	f.KernelVersion, _ = unix.Sysctl("kern.osrelease")
	if v, err := unix.Sysctl("kern.osproductversion"); err == nil {
		f.OSVersion = "macOS " + v
	}
	f.CPUVendor, _ = unix.Sysctl("machdep.cpu.brand_string")
	return f, nil
}

var uuidRE = regexp.MustCompile(`"IOPlatformUUID" = "([0-9A-Fa-f-]{36})"`)

// platformUUID is the hardware UUID (IOKit's IOPlatformUUID). IOKit is a C framework; its
// command-line face, ioreg, answers in a few milliseconds and runs once per kubelet start.
func platformUUID() string {
	out, err := exec.Command("/usr/sbin/ioreg", "-rd1", "-c", "IOPlatformExpertDevice").Output()
	if err == nil {
		if m := uuidRE.FindSubmatch(out); m != nil {
			return string(m[1])
		}
	}
	// The kernel's UUID: unique per macOS build, not per machine, but better than nothing.
	u, _ := unix.Sysctl("kern.uuid")
	return u
}

// Mach, through purego.
var (
	machOnce          sync.Once
	machErr           error
	machHostSelf      func() uint32
	hostStatistics    func(host uint32, flavor int32, info unsafe.Pointer, count *uint32) int32
	hostStatistics64  func(host uint32, flavor int32, info unsafe.Pointer, count *uint32) int32
	pageSize, memSize uint64
)

const (
	hostCPULoadInfo = 3 // HOST_CPU_LOAD_INFO
	hostVMInfo64    = 4 // HOST_VM_INFO64
	clockTicks      = 100
)

// vmStatistics64 is <mach/vm_statistics.h>'s struct vm_statistics64 (152 bytes, 38 integers).
type vmStatistics64 struct {
	FreeCount, ActiveCount, InactiveCount, WireCount uint32
	ZeroFillCount, Reactivations, Pageins, Pageouts  uint64
	Faults, CowFaults, Lookups, Hits, Purges         uint64
	PurgeableCount, SpeculativeCount                 uint32
	Decompressions, Compressions, Swapins, Swapouts  uint64
	CompressorPageCount, ThrottledCount              uint32
	ExternalPageCount, InternalPageCount             uint32
	TotalUncompressedPagesInCompressor               uint64
}

func loadMach() error {
	machOnce.Do(func() {
		lib, err := purego.Dlopen("/usr/lib/libSystem.B.dylib", purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err != nil {
			machErr = fmt.Errorf("dlopen libSystem: %w", err)
			return
		}
		purego.RegisterLibFunc(&machHostSelf, lib, "mach_host_self")
		purego.RegisterLibFunc(&hostStatistics, lib, "host_statistics")
		purego.RegisterLibFunc(&hostStatistics64, lib, "host_statistics64")
		if pageSize, err = unix.SysctlUint64("hw.pagesize"); err != nil {
			machErr = fmt.Errorf("sysctl hw.pagesize: %w", err)
			return
		}
		if memSize, err = unix.SysctlUint64("hw.memsize"); err != nil {
			machErr = fmt.Errorf("sysctl hw.memsize: %w", err)
		}
	})
	return machErr
}

// ReadUsage reads the Mac's CPU ticks (all cores) and memory counters.
func ReadUsage() (Usage, error) {
	var u Usage
	if err := loadMach(); err != nil {
		return u, err
	}
	host := machHostSelf()
	var ticks [4]uint32 // user, system, idle, nice
	count := uint32(len(ticks))
	if kr := hostStatistics(host, hostCPULoadInfo, unsafe.Pointer(&ticks[0]), &count); kr != 0 {
		return u, fmt.Errorf("host_statistics(HOST_CPU_LOAD_INFO): kern_return %d", kr)
	}
	busy := uint64(ticks[0]) + uint64(ticks[1]) + uint64(ticks[3])
	u.CPUNanos = busy * (1e9 / clockTicks)
	var vm vmStatistics64
	count = uint32(unsafe.Sizeof(vm) / 4)
	if kr := hostStatistics64(host, hostVMInfo64, unsafe.Pointer(&vm), &count); kr != 0 {
		return u, fmt.Errorf("host_statistics64(HOST_VM_INFO64): kern_return %d", kr)
	}
	return usageFromVM(vm, pageSize, memSize), nil
}

// usageFromVM: memory as Activity Monitor counts it.
func usageFromVM(vm vmStatistics64, page, total uint64) Usage {
	app := uint64(vm.InternalPageCount) - min(uint64(vm.PurgeableCount), uint64(vm.InternalPageCount))
	ws := (app + uint64(vm.WireCount) + uint64(vm.CompressorPageCount)) * page
	free := (uint64(vm.FreeCount) + uint64(vm.SpeculativeCount)) * page
	return Usage{
		MemoryUsage: total - min(free, total),
		WorkingSet:  min(ws, total),
		RSS:         min(app*page, total),
	}
}

// ReadFs reads the size of the file system holding path.
func ReadFs(path string) (FsStats, error) {
	var s unix.Statfs_t
	if err := unix.Statfs(path, &s); err != nil {
		return FsStats{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	fs := fsFromStatfs(uint64(s.Bsize), s.Blocks, s.Bfree, s.Bavail, s.Files, s.Ffree)
	fs.Device = unix.ByteSliceToString(s.Mntfromname[:])
	fs.Mountpoint = unix.ByteSliceToString(s.Mntonname[:])
	return fs, nil
}
