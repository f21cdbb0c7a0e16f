//go:build darwincri && !windows

// This project's cAdvisor: the node's machine facts and its CPU and memory usage, read by
// darwin-cri.io/kubelet/pkg/machine (sysctl and Mach on a Mac; /proc in the twin). Upstream's
// cAdvisor has no darwin support (its stub fails every call, which stops kubelet), and pods and
// containers need none of it here: their stats come from the CRI (PodAndContainerStatsFromCRI).
// Only the root container "/" (the node) exists.

package cadvisor

import (
	"context"
	"fmt"
	"time"

	cadvisorapi "github.com/google/cadvisor/lib/model"
	"k8s.io/klog/v2"

	"darwin-cri.io/kubelet/pkg/machine"
)

// housekeeping is how often the node's usage is read between requests (cAdvisor's default).
const housekeeping = 10 * time.Second

type darwinMachine struct {
	logger   klog.Logger
	facts    machine.Facts
	rootPath string
	sampler  *machine.Sampler
	started  time.Time
}

var _ Interface = &darwinMachine{}

// New reads the machine's facts; Start begins sampling its usage.
func New(logger klog.Logger, _ ImageFsInfoProvider, rootPath string, _ []string, _, _, _ bool) (Interface, error) {
	facts, err := machine.ReadFacts()
	if err != nil {
		return nil, fmt.Errorf("reading the machine's facts: %w", err)
	}
	return &darwinMachine{logger: logger, facts: facts, rootPath: rootPath,
		sampler: machine.NewSampler(machine.ReadUsage), started: time.Now()}, nil
}

func (m *darwinMachine) Start() error {
	if err := m.sampler.Update(); err != nil {
		return fmt.Errorf("reading the node's usage: %w", err)
	}
	go m.sampler.Run(housekeeping, nil, func(err error) {
		m.logger.Error(err, "Reading the node's CPU and memory usage")
	})
	return nil
}

func (m *darwinMachine) rootInfo(options cadvisorapi.RequestOptions) (cadvisorapi.ContainerInfo, error) {
	if options.MaxAge != nil && *options.MaxAge == 0 {
		// A fresh reading, but not closer than a second to the last (machine.UpdateIfOlder).
		if err := m.sampler.UpdateIfOlder(time.Second); err != nil {
			return cadvisorapi.ContainerInfo{}, err
		}
	}
	info := cadvisorapi.ContainerInfo{
		ContainerReference: cadvisorapi.ContainerReference{Name: "/"},
		Spec: cadvisorapi.ContainerSpec{
			CreationTime: m.started,
			HasCpu:       true,
			HasMemory:    true,
			Memory:       cadvisorapi.MemorySpec{Limit: m.facts.MemoryBytes},
		},
	}
	all := m.sampler.Samples()
	samples := all
	if options.Count > 0 && len(samples) > options.Count {
		samples = samples[len(samples)-options.Count:]
	}
	// Samples before the first returned one: the instantaneous rate needs a previous sample.
	skipped := len(all) - len(samples)
	for i, s := range samples {
		st := &cadvisorapi.ContainerStats{
			Timestamp: s.Time,
			Cpu:       &cadvisorapi.CpuStats{Usage: cadvisorapi.CpuUsage{Total: s.CPUTotal}},
			Memory: &cadvisorapi.MemoryStats{Usage: s.MemoryUsage, WorkingSet: s.WorkingSet,
				RSS: s.RSS},
		}
		if skipped+i > 0 {
			st.CpuInst = &cadvisorapi.CpuInstStats{Usage: cadvisorapi.CpuInstUsage{Total: s.NanoCores}}
		}
		info.Stats = append(info.Stats, st)
	}
	return info, nil
}

func (m *darwinMachine) ContainerInfoV2(name string, options cadvisorapi.RequestOptions) (map[string]cadvisorapi.ContainerInfo, error) {
	if name != "/" {
		return nil, fmt.Errorf("no container %q: this kubelet's cAdvisor knows only the node (\"/\"); pods' stats come from the CRI", name)
	}
	info, err := m.rootInfo(options)
	if err != nil {
		return nil, err
	}
	return map[string]cadvisorapi.ContainerInfo{"/": info}, nil
}

func (m *darwinMachine) GetRequestedContainersInfo(name string, options cadvisorapi.RequestOptions) (map[string]*cadvisorapi.ContainerInfo, error) {
	infos, err := m.ContainerInfoV2(name, options)
	if err != nil {
		return nil, err
	}
	info := infos["/"]
	return map[string]*cadvisorapi.ContainerInfo{"/": &info}, nil
}

func (m *darwinMachine) MachineInfo(_ klog.Logger) (*cadvisorapi.MachineInfo, error) {
	return &cadvisorapi.MachineInfo{
		Timestamp:        time.Now(),
		CPUVendorID:      m.facts.CPUVendor,
		NumCores:         m.facts.Cores,
		NumPhysicalCores: m.facts.Cores,
		NumSockets:       1,
		MemoryCapacity:   m.facts.MemoryBytes,
		MachineID:        m.facts.MachineID,
		SystemUUID:       m.facts.SystemUUID,
		BootID:           m.facts.BootID,
	}, nil
}

func (m *darwinMachine) VersionInfo() (*cadvisorapi.VersionInfo, error) {
	return &cadvisorapi.VersionInfo{KernelVersion: m.facts.KernelVersion,
		ContainerOsVersion: m.facts.OSVersion}, nil
}

func fsInfo(path string) (cadvisorapi.FsInfo, error) {
	fs, err := machine.ReadFs(path)
	if err != nil {
		return cadvisorapi.FsInfo{}, err
	}
	return cadvisorapi.FsInfo{Timestamp: time.Now(), Device: fs.Device, Mountpoint: fs.Mountpoint,
		Capacity: fs.Capacity, Available: fs.Available, Usage: fs.Usage,
		Inodes: &fs.Inodes, InodesFree: &fs.InodesFree}, nil
}

// ImagesFsInfo: the image file system's size comes from the CRI (ImageFsInfo names it, and
// kubelet asks GetDirFsInfo for it); this answer, the kubelet root's file system, is for callers
// that ask without a path. On a Mac both usually sit in one APFS container, which shares space.
func (m *darwinMachine) ImagesFsInfo(context.Context) (cadvisorapi.FsInfo, error) {
	return fsInfo(m.rootPath)
}

func (m *darwinMachine) RootFsInfo() (cadvisorapi.FsInfo, error) {
	return fsInfo(m.rootPath)
}

func (m *darwinMachine) ContainerFsInfo(context.Context) (cadvisorapi.FsInfo, error) {
	return fsInfo(m.rootPath)
}

func (m *darwinMachine) GetDirFsInfo(path string) (cadvisorapi.FsInfo, error) {
	return fsInfo(path)
}

// IsPsiEnabled: pressure stall information is Linux's; a Mac has none, and the twin reports
// none either.
func IsPsiEnabled(_ klog.Logger) bool {
	return false
}
