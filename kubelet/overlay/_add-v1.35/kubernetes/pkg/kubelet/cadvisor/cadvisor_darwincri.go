//go:build darwincri && !windows

// This project's cAdvisor for 1.35 (cAdvisor's info/v1 and v2 types): the node's machine facts and its CPU and memory usage, read by
// darwin-cri.io/kubelet/pkg/machine (sysctl and Mach on a Mac; /proc in the twin). Upstream's
// cAdvisor has no darwin support (its stub fails every call, which stops kubelet), and pods and
// containers need none of it here: their stats come from the CRI (PodAndContainerStatsFromCRI).
// Only the root container "/" (the node) exists.

package cadvisor

import (
	"context"
	"fmt"
	"time"

	cadvisorapi "github.com/google/cadvisor/info/v1"
	cadvisorapiv2 "github.com/google/cadvisor/info/v2"
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
func New(_ ImageFsInfoProvider, rootPath string, _ []string, _, _ bool) (Interface, error) {
	logger := klog.Background()
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

func (m *darwinMachine) rootInfo(options cadvisorapiv2.RequestOptions) (cadvisorapiv2.ContainerInfo, error) {
	if options.MaxAge != nil && *options.MaxAge == 0 {
		// A fresh reading, but not closer than a second to the last (machine.UpdateIfOlder).
		if err := m.sampler.UpdateIfOlder(time.Second); err != nil {
			return cadvisorapiv2.ContainerInfo{}, err
		}
	}
	info := cadvisorapiv2.ContainerInfo{
		Spec: cadvisorapiv2.ContainerSpec{
			CreationTime: m.started,
			HasCpu:       true,
			HasMemory:    true,
			Memory:       cadvisorapiv2.MemorySpec{Limit: m.facts.MemoryBytes},
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
		st := &cadvisorapiv2.ContainerStats{
			Timestamp: s.Time,
			Cpu:       &cadvisorapi.CpuStats{Usage: cadvisorapi.CpuUsage{Total: s.CPUTotal}},
			Memory: &cadvisorapi.MemoryStats{Usage: s.MemoryUsage, WorkingSet: s.WorkingSet,
				RSS: s.RSS},
		}
		if skipped+i > 0 {
			st.CpuInst = &cadvisorapiv2.CpuInstStats{Usage: cadvisorapiv2.CpuInstUsage{Total: s.NanoCores}}
		}
		info.Stats = append(info.Stats, st)
	}
	return info, nil
}

func (m *darwinMachine) ContainerInfoV2(name string, options cadvisorapiv2.RequestOptions) (map[string]cadvisorapiv2.ContainerInfo, error) {
	if name != "/" {
		return nil, fmt.Errorf("no container %q: this kubelet's cAdvisor knows only the node (\"/\"); pods' stats come from the CRI", name)
	}
	info, err := m.rootInfo(options)
	if err != nil {
		return nil, err
	}
	return map[string]cadvisorapiv2.ContainerInfo{"/": info}, nil
}

func (m *darwinMachine) GetRequestedContainersInfo(name string, _ cadvisorapiv2.RequestOptions) (map[string]*cadvisorapi.ContainerInfo, error) {
	// Only the deprecated /stats/container endpoint asks; the summary API uses ContainerInfoV2.
	return nil, fmt.Errorf("no container %q: this kubelet serves node stats through the summary API only", name)
}

func (m *darwinMachine) MachineInfo() (*cadvisorapi.MachineInfo, error) {
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

func fsInfo(path string) (cadvisorapiv2.FsInfo, error) {
	fs, err := machine.ReadFs(path)
	if err != nil {
		return cadvisorapiv2.FsInfo{}, err
	}
	return cadvisorapiv2.FsInfo{Timestamp: time.Now(), Device: fs.Device, Mountpoint: fs.Mountpoint,
		Capacity: fs.Capacity, Available: fs.Available, Usage: fs.Usage,
		Inodes: &fs.Inodes, InodesFree: &fs.InodesFree}, nil
}

// ImagesFsInfo: the image file system's size comes from the CRI (ImageFsInfo names it, and
// kubelet asks GetDirFsInfo for it); this answer, the kubelet root's file system, is for callers
// that ask without a path. On a Mac both usually sit in one APFS container, which shares space.
func (m *darwinMachine) ImagesFsInfo(context.Context) (cadvisorapiv2.FsInfo, error) {
	return fsInfo(m.rootPath)
}

func (m *darwinMachine) RootFsInfo() (cadvisorapiv2.FsInfo, error) {
	return fsInfo(m.rootPath)
}

func (m *darwinMachine) ContainerFsInfo(context.Context) (cadvisorapiv2.FsInfo, error) {
	return fsInfo(m.rootPath)
}

func (m *darwinMachine) GetDirFsInfo(path string) (cadvisorapiv2.FsInfo, error) {
	return fsInfo(path)
}
