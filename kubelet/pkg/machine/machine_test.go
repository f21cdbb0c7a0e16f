package machine

import (
	"testing"
	"time"
)

func TestSamplerComputesNanoCoresAndSurvivesWrap(t *testing.T) {
	readings := []uint64{1<<64 - 2e9, 1<<64 - 1e9, 1e9, 5e8}
	i := 0
	s := NewSampler(func() (Usage, error) {
		u := Usage{CPUNanos: readings[i], WorkingSet: 7}
		i++
		return u, nil
	})
	clock := time.Unix(1000, 0)
	s.now = func() time.Time { clock = clock.Add(2 * time.Second); return clock }
	if len(s.Samples()) != 0 {
		t.Fatal("samples before the first update")
	}
	for range 3 {
		if err := s.Update(); err != nil {
			t.Fatal(err)
		}
	}
	got := s.Samples()
	if len(got) != 2 {
		t.Fatalf("want the last two samples, got %d", len(got))
	}
	// 1e9 -> wrap -> 1e9: a delta of 2e9 ns over 2 s is one core.
	if got[1].CPUTotal != 3e9 || got[1].NanoCores != 1e9 {
		t.Fatalf("after a wrap: total %d, nano-cores %d", got[1].CPUTotal, got[1].NanoCores)
	}
	// A counter that went back by a little was reset: no delta, no negative usage.
	if err := s.Update(); err != nil {
		t.Fatal(err)
	}
	last := s.Samples()[1]
	if last.CPUTotal != 3e9 || last.NanoCores != 0 {
		t.Fatalf("after a reset: total %d, nano-cores %d", last.CPUTotal, last.NanoCores)
	}
}

func TestFsFromStatfs(t *testing.T) {
	fs := fsFromStatfs(4096, 100, 40, 30, 1000, 600)
	if fs.Capacity != 409600 || fs.Available != 122880 || fs.Usage != 245760 || fs.Inodes != 1000 || fs.InodesFree != 600 {
		t.Fatalf("%+v", fs)
	}
	if fsFromStatfs(4096, 10, 20, 5, 0, 0).Usage != 0 {
		t.Fatal("more free than blocks must not underflow")
	}
}

func TestReadsThisMachine(t *testing.T) {
	f, err := ReadFacts()
	if err != nil {
		t.Fatal(err)
	}
	if f.Cores < 1 || f.MemoryBytes < 1<<20 {
		t.Fatalf("%+v", f)
	}
	u, err := ReadUsage()
	if err != nil {
		t.Fatal(err)
	}
	if u.CPUNanos == 0 || u.WorkingSet == 0 || u.WorkingSet > f.MemoryBytes || u.MemoryUsage > f.MemoryBytes {
		t.Fatalf("%+v of %+v", u, f)
	}
	fs, err := ReadFs("/")
	if err != nil {
		t.Fatal(err)
	}
	if fs.Capacity == 0 || fs.Mountpoint == "" {
		t.Fatalf("%+v", fs)
	}
}

func TestUpdateIfOlderKeepsSamplesApart(t *testing.T) {
	n := 0
	s := NewSampler(func() (Usage, error) { n++; return Usage{CPUNanos: uint64(n) * 1e9}, nil })
	clock := time.Unix(1000, 0)
	s.now = func() time.Time { return clock }
	for range 3 {
		if err := s.UpdateIfOlder(time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if n != 1 {
		t.Fatalf("read %d times within a second", n)
	}
	clock = clock.Add(2 * time.Second)
	if err := s.UpdateIfOlder(time.Second); err != nil || n != 2 {
		t.Fatalf("not read after two seconds: %d %v", n, err)
	}
}
