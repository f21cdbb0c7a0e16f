package machine

import "testing"

func TestParseProcStat(t *testing.T) {
	got, err := parseProcStatCPU([]byte("cpu  100 5 50 9000 20 1 2 3 0 0\ncpu0 1 1 1 1 1 1 1 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	// user+nice+system+irq+softirq+steal = 100+5+50+1+2+3 ticks of 10 ms.
	if got != 161*1e7 {
		t.Fatalf("got %d", got)
	}
	if _, err := parseProcStatCPU([]byte("intr 1\n")); err == nil {
		t.Fatal("no cpu line must fail")
	}
	m := parseMeminfo([]byte("MemTotal:  1000 kB\nHugePages_Total: 0\nbad\n"))
	if m["MemTotal"] != 1024000 || m["HugePages_Total"] != 0 {
		t.Fatalf("%v", m)
	}
}
