//! Processes: the process table, usage (CPU, memory), trees and descendants, limits and
//! niceness, the reaper, pipes and terminals for a container's stdio.

use super::*;

/// One process as the process table reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    /// False for zombies: a process that exited but was not reaped is dead for every purpose here
    /// (on machines whose PID 1 does not reap, orphans stay zombies forever).
    pub alive: bool,
    /// Start time in an OS-specific unit; only ever compared for equality, to tell a pid that was
    /// reused from the process it used to name.
    pub start_time: u64,
}

/// What one process has used, as the process table tells it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcUsage {
    /// User and system CPU time of the process itself.
    pub cpu_ns: u64,
    /// CPU time of its exited children that it waited for (they are gone from the table).
    pub children_cpu_ns: u64,
    pub rss_bytes: u64,
    pub minor_faults: u64,
    pub major_faults: u64,
}

/// Makes the process `cmd` spawns inherit no descriptor but its stdin, stdout and stderr, even
/// one that another thread of this process created without close-on-exec a moment before the
/// fork.
///
/// Linux creates every descriptor close-on-exec atomically (`pipe2`, `MSG_CMSG_CLOEXEC`,
/// `O_CLOEXEC`), so there is nothing to do. macOS has no `pipe2` and no `MSG_CMSG_CLOEXEC`: a
/// pipe or a received descriptor is close-on-exec only once a second call has marked it, and a
/// fork on another thread in between copies it unmarked into the child, which would then hold a
/// pipe's end open (its reader never sees EOF) for as long as it runs. There the child marks
/// every descriptor above stderr close-on-exec itself, between fork and exec.
pub fn inherit_only_stdio(cmd: &mut std::process::Command) {
    imp::inherit_only_stdio(cmd)
}

/// A pipe (read end, write end), both ends close-on-exec: atomically where the OS can (Linux
/// `pipe2`); on macOS with `pipe` and `fcntl`, whose window [`inherit_only_stdio`] closes for
/// every process darwin-cri spawns.
pub fn pipe_cloexec() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    imp::pipe_cloexec()
}

/// Sets the window size of the terminal behind `fd` (a pty), which signals SIGWINCH to the
/// terminal's foreground process group.
#[allow(unsafe_code)]
pub fn set_window_size(fd: std::os::fd::BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which is valid for the call; the fd
    // is borrowed, so it stays open meanwhile. The same on Linux and macOS.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ as _, &size) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new pseudo-terminal: (controlling side, terminal side), both close-on-exec. The terminal
/// side becomes a TTY process's stdin, stdout and stderr.
pub fn open_pty() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    let pty = nix::pty::openpty(None, None)?;
    // openpty(3) has no close-on-exec flag; until these calls a concurrent fork elsewhere in
    // the server could inherit the pair, which costs nothing worse than a late EOF there.
    for fd in [&pty.master, &pty.slave] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    }
    Ok((pty.master, pty.slave))
}

/// Direct children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    imp::children(pid)
}

/// Every live descendant of `root` (not including it), following child links: the cost grows
/// with the size of the tree, not of the process table.
pub fn tree(root: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut next = vec![root];
    while let Some(pid) = next.pop() {
        for child in children(pid) {
            if !found.contains(&child) && found.len() < 1_000_000 {
                found.push(child);
                next.push(child);
            }
        }
    }
    found
}

/// Memory one process holds, in bytes, shared pages counted in proportion (Linux: PSS; macOS:
/// the physical footprint).
pub fn rss_bytes(pid: i32) -> Option<u64> {
    imp::rss_bytes(pid)
}

/// Sets the scheduling priority of a running process (all its threads). On macOS the lowest
/// priority also puts the process in the background QoS class.
pub fn set_nice(pid: i32, nice: i32) -> io::Result<()> {
    imp::set_nice(pid, nice)
}

/// Moves the calling thread to the lowest priority, for background work (deferred deletions,
/// roots made ahead): nice 19 on Linux, where priorities are per thread; the background QoS
/// class on macOS (PRIO_DARWIN_THREAD), which also throttles the thread's disk I/O.
pub fn background_thread() -> io::Result<()> {
    imp::background_thread()
}

/// Changes RLIMIT_NPROC and RLIMIT_NOFILE of a running process where the OS allows it (Linux
/// prlimit); elsewhere only new processes get new rlimits.
pub fn set_rlimits(pid: i32, nproc: Option<u64>, nofile: Option<u64>) -> io::Result<()> {
    imp::set_rlimits(pid, nproc, nofile)
}

/// Live processes whose root directory is `rootfs`: every process of a container, even one that
/// escaped its process group and its parent. Empty where the OS cannot tell (macOS).
pub fn processes_in_root(rootfs: &Path) -> Vec<i32> {
    imp::processes_in_root(rootfs)
}

/// Makes orphaned descendants of this process its children, so that the monitor can reap and
/// kill them. A no-op where the OS has no such mechanism.
pub fn become_subreaper() -> io::Result<()> {
    imp::become_subreaper()
}

/// Hands memory the allocator keeps free back to the OS, after work that allocates much and
/// briefly (an image pull's buffers and decompressors in pool threads' arenas).
pub fn release_free_memory() {
    imp::release_free_memory()
}

/// Waits until a child of this process has exited and returns its pid, leaving it unreaped (so
/// that whoever reaps it decides when, under a lock if need be).
pub fn wait_for_exited_child() -> io::Result<i32> {
    imp::wait_for_exited_child()
}

/// The whole process table.
pub fn process_table() -> io::Result<Vec<ProcInfo>> {
    imp::process_table()
}

/// One process's own CPU time (all its threads) in nanoseconds, exactly: the process table's
/// figure is in clock ticks on Linux (10 ms), which round a small request's work to nothing.
/// Asked only for the processes of containers, not the whole table.
pub fn process_cpu_ns(pid: i32) -> Option<u64> {
    imp::process_cpu_ns(pid)
}

/// The whole process table with each process's usage: one walk for every container's stats.
pub fn process_usage_table() -> io::Result<Vec<(ProcInfo, ProcUsage)>> {
    imp::process_usage_table()
}

/// One process's usage.
pub fn process_usage(pid: i32) -> Option<ProcUsage> {
    imp::process_usage(pid)
}

/// One process, or `None` if there is no such pid.
pub fn process_info(pid: i32) -> Option<ProcInfo> {
    imp::process_info(pid)
}

/// Whether `pid` names a live (not zombie) process that started at `start_time`.
pub fn is_alive(pid: i32, start_time: u64) -> bool {
    matches!(process_info(pid), Some(p) if p.alive && p.start_time == start_time)
}

/// Pids of every live descendant of `root` (not including it), found by walking parent links.
pub fn descendants(table: &[ProcInfo], root: i32) -> Vec<i32> {
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for p in table {
            if p.ppid == parent && p.alive && !found.contains(&p.pid) {
                found.push(p.pid);
            }
        }
        i += 1;
    }
    found.remove(0);
    found
}

/// The TCP ports on which one of `pids` holds a listening socket (IPv4 or IPv6, any local
/// address), for port-forwarding only to ports a pod's own processes serve (issue #26, 15).
/// Processes that are gone or cannot be read are skipped.
///
/// macOS: each process's descriptors (`PROC_PIDLISTFDS`) and each socket's state
/// (`proc_pidfdinfo` with `PROC_PIDFDSOCKETINFO`), as lsof does. Linux twin: the listening
/// sockets of /proc/net/tcp and tcp6 (state 0A) by inode, matched to the `socket:[inode]`
/// descriptors of /proc/PID/fd.
pub fn listening_tcp_ports(pids: &[i32]) -> io::Result<Vec<u16>> {
    let mut ports = imp::listening_tcp_ports(pids)?;
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}
