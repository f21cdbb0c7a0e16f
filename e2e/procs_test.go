package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a process the harness started, in its own process group, with its output in a log
// file under the cluster's directory.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProc(dir, name, bin string, args []string, env []string) (*proc, error) {
	logPath := filepath.Join(dir, "logs", name+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail is the end of the process's log, for failure messages.
func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stop sends SIGTERM to the process group, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if p == nil || p.cmd.Process == nil {
		return
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
	// Whatever else is left of the group.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// freePort asks the kernel for a free loopback TCP port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ----- /proc ---------------------------------------------------------------------------------

type procInfo struct {
	pid     int
	state   string
	cmdline string
	root    string
	cwd     string
	exe     string
}

// alive tells whether pid exists and is not a zombie (PID 1 here reaps no orphans, so dead
// processes stay in the table as state Z).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

// processes lists every live (non-zombie) process but this one.
func processes() []procInfo {
	ents, _ := os.ReadDir("/proc")
	var out []procInfo
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || !alive(pid) {
			continue
		}
		base := "/proc/" + e.Name()
		cmd, _ := os.ReadFile(base + "/cmdline")
		root, _ := os.Readlink(base + "/root")
		cwd, _ := os.Readlink(base + "/cwd")
		exe, _ := os.Readlink(base + "/exe")
		out = append(out, procInfo{
			pid:     pid,
			state:   "",
			cmdline: strings.ReplaceAll(strings.TrimRight(string(cmd), "\x00"), "\x00", " "),
			root:    root,
			cwd:     cwd,
			exe:     exe,
		})
	}
	return out
}

// processesMentioning lists live processes whose command line, root, working directory or
// executable contains any of needles.
func processesMentioning(needles ...string) []procInfo {
	var out []procInfo
	for _, p := range processes() {
		for _, n := range needles {
			if n == "" {
				continue
			}
			if strings.Contains(p.cmdline, n) || strings.Contains(p.root, n) ||
				strings.Contains(p.cwd, n) || strings.Contains(p.exe, n) {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// killMentioning SIGKILLs every live process that mentions dir, until none is left (or 10 s).
func killMentioning(dir string) []procInfo {
	var killed []procInfo
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		left := processesMentioning(dir)
		if len(left) == 0 {
			break
		}
		for _, p := range left {
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
			killed = append(killed, p)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return killed
}

// ----- mounts ----------------------------------------------------------------------------------

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unmountUnder detaches every mount below dir (lazily: a busy one goes when its last user does).
func unmountUnder(dir string) []string {
	var done []string
	for range 5 {
		mps := mountsUnder(dir)
		if len(mps) == 0 {
			break
		}
		for _, mp := range mps {
			if err := syscall.Unmount(mp, syscall.MNT_DETACH); err == nil {
				done = append(done, mp)
			}
		}
	}
	return done
}

// ----- sysctls ---------------------------------------------------------------------------------

// The kernel settings kubelet's Linux container manager sets (and a darwin-flavoured one should
// not): saved before kubelet starts and put back at the end.
var kubeletSysctls = []string{"vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops"}

func saveSysctls() map[string]string {
	saved := map[string]string{}
	for _, k := range kubeletSysctls {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			saved[k] = strings.TrimSpace(string(b))
		}
	}
	return saved
}

// restoreSysctls puts saved values back and returns the ones that had changed.
func restoreSysctls(saved map[string]string) map[string]string {
	changed := map[string]string{}
	for k, v := range saved {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			continue
		}
		if now := strings.TrimSpace(string(b)); now != v {
			changed[k] = now + " (was " + v + ")"
			_ = os.WriteFile("/proc/sys/"+k, []byte(v+"\n"), 0o644)
		}
	}
	return changed
}
