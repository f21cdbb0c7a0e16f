// Package machine reads the facts and usage of the node the kubelet runs on, in place of
// cAdvisor (which has no darwin support: upstream kubelet's cAdvisor stub fails every call on a
// Mac). What is read from the system is in machine_darwin.go (sysctl, and Mach host statistics
// through purego, without cgo) and machine_linux.go (the twin's /proc and /sys, so that the same
// kubelet logic runs in CI on Linux); what is computed from it is here, tested on both.
package machine

import (
	"sync"
	"time"
)

// Facts are what does not change while the node runs.
type Facts struct {
	Cores         int
	MemoryBytes   uint64
	MachineID     string
	SystemUUID    string
	BootID        string
	KernelVersion string
	OSVersion     string
	CPUVendor     string
}

// Usage is one reading of the node's CPU and memory.
type Usage struct {
	// CPU time of every core, in nanoseconds, since an unspecified start. It may wrap (Mach's
	// counters are 32-bit ticks); the Sampler keeps a cumulative total that does not.
	CPUNanos uint64
	// Memory in use, bytes: everything but free pages.
	MemoryUsage uint64
	// The working set, bytes: what cannot be reclaimed without writing to disk (on a Mac,
	// Activity Monitor's "Memory Used": app memory, wired and compressed).
	WorkingSet uint64
	// Anonymous memory, bytes.
	RSS uint64
}

// Sample is a Usage at a time, with the cumulative CPU the Sampler keeps.
type Sample struct {
	Time time.Time
	Usage
	// Cumulative CPU nanoseconds since the Sampler's first reading.
	CPUTotal uint64
	// CPU nanoseconds per second between the previous sample and this one: the node's
	// instantaneous usage in nano-cores (0 for the first sample).
	NanoCores uint64
}

// Sampler keeps the last two readings of a usage source.
type Sampler struct {
	read func() (Usage, error)
	now  func() time.Time

	mu      sync.Mutex
	samples []Sample // at most two, oldest first
}

// NewSampler reads usage with read.
func NewSampler(read func() (Usage, error)) *Sampler {
	return &Sampler{read: read, now: time.Now}
}

// Update takes a reading.
func (s *Sampler) Update() error {
	u, err := s.read()
	if err != nil {
		return err
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	next := Sample{Time: now, Usage: u}
	if n := len(s.samples); n > 0 {
		prev := s.samples[n-1]
		// Unsigned subtraction: a counter that wrapped still gives the right delta, as long as
		// it wrapped once at most between two readings (Mach's 32-bit ticks take weeks).
		delta := u.CPUNanos - prev.CPUNanos
		if u.CPUNanos < prev.CPUNanos && prev.CPUNanos-u.CPUNanos < 1<<62 {
			// Went backwards by a little: not a wrap but a reset (a new counter); no delta.
			delta = 0
		}
		next.CPUTotal = prev.CPUTotal + delta
		if dt := now.Sub(prev.Time); dt > 0 {
			next.NanoCores = uint64(float64(delta) / dt.Seconds())
		}
		s.samples = []Sample{prev, next}
	} else {
		s.samples = []Sample{next}
	}
	return nil
}

// UpdateIfOlder takes a reading unless the last one is younger than age: two readings a few
// milliseconds apart give a rate from a handful of 10 ms ticks, which can read above the
// machine's cores (seen once in the end-to-end tests: 2.18 cores on a 2-core machine).
func (s *Sampler) UpdateIfOlder(age time.Duration) error {
	s.mu.Lock()
	fresh := len(s.samples) > 0 && s.now().Sub(s.samples[len(s.samples)-1].Time) < age
	s.mu.Unlock()
	if fresh {
		return nil
	}
	return s.Update()
}

// Samples returns the readings, oldest first (none before the first Update).
func (s *Sampler) Samples() []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sample(nil), s.samples...)
}

// Run takes a reading every interval until stop is closed.
func (s *Sampler) Run(interval time.Duration, stop <-chan struct{}, onError func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.Update(); err != nil && onError != nil {
			onError(err)
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// FsStats is a file system's size.
type FsStats struct {
	Device     string
	Mountpoint string
	Capacity   uint64
	Available  uint64
	Usage      uint64
	Inodes     uint64
	InodesFree uint64
}

// fsFromStatfs computes FsStats from statfs's block counts.
func fsFromStatfs(blockSize, blocks, free, avail, files, ffree uint64) FsStats {
	return FsStats{
		Capacity:   blocks * blockSize,
		Available:  avail * blockSize,
		Usage:      (blocks - min(free, blocks)) * blockSize,
		Inodes:     files,
		InodesFree: ffree,
	}
}
