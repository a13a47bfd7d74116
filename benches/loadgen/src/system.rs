//! What the load generator reads from the operating system: the server's CPU time and
//! resident memory from `/proc`, its own CPU time, and the open-file limit it raises.
//! The only module with `unsafe` (three libc calls, each with its `SAFETY:` line).
//!
//! The server is a process tree (iorelay's master and its workers, a Node cluster, …), or
//! several (the nodes of a cluster, `--server-pid A,B`): every figure is summed over each
//! `--server-pid` and all its descendants, found by walking the parent ids of
//! `/proc/*/stat` at each sample.
//!
//! - CPU: `utime + stime + cutime + cstime` (fields 14–17 of `/proc/<pid>/stat`, in clock
//!   ticks, converted with `sysconf(_SC_CLK_TCK)`). The children's fields keep the sum
//!   steady when a worker exits and is reaped during a run. Resolution is one tick
//!   (10 ms at the usual 100 Hz), so per-unit figures need runs of a few seconds.
//! - Memory: `VmRSS` of `/proc/<pid>/status`, in KiB. Shared pages are counted once per
//!   process, as `ps` does.

use std::collections::{HashMap, HashSet};
use std::fs;

/// The server process trees, sampled on demand.
#[derive(Debug, Clone)]
pub struct Server {
    pids: Vec<u32>,
}

/// One sample of the server tree.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// CPU time of the tree, µs.
    pub cpu_us: u64,
    /// Resident memory of the tree, KiB.
    pub rss_kib: u64,
    /// Processes in the tree.
    pub processes: usize,
}

impl Server {
    /// The trees rooted at `pids`; `Err` with the first pid that is not visible.
    pub fn new(pids: &[u32]) -> Result<Server, u32> {
        for &pid in pids {
            fs::metadata(format!("/proc/{pid}/stat")).map_err(|_| pid)?;
        }
        Ok(Server {
            pids: pids.to_vec(),
        })
    }

    /// CPU and memory of the whole trees now; `None` once any root is gone (a sum
    /// without one of them would be no figure at all).
    pub fn sample(&self) -> Option<Sample> {
        let tree = trees(&self.pids)?;
        let tck = clock_ticks();
        let mut ticks = 0u64;
        let mut rss_kib = 0u64;
        for pid in &tree {
            // A process may exit between the walk and the read: skip it.
            if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
                if let Some(fields) = stat_fields(&stat) {
                    ticks += (11..=14)
                        .filter_map(|i| fields.get(i)?.parse::<u64>().ok())
                        .sum::<u64>();
                }
            }
            if let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) {
                rss_kib += vm_rss_kib(&status).unwrap_or(0);
            }
        }
        Some(Sample {
            cpu_us: ticks.saturating_mul(1_000_000) / tck,
            rss_kib,
            processes: tree.len(),
        })
    }
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces and
/// parentheses, so the split is at the last `)`): index 0 is the state, 1 the ppid,
/// 11..=14 utime, stime, cutime, cstime.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let close = stat.rfind(')')?;
    Some(stat[close + 1..].split_whitespace().collect())
}

fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Every root and every process descending from one, each once; `None` when a root
/// does not exist.
fn trees(roots: &[u32]) -> Option<Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut seen = HashSet::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if roots.contains(&pid) {
                seen.insert(pid);
            }
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            if let Some(ppid) =
                stat_fields(&stat).and_then(|f| f.get(1).and_then(|p| p.parse::<u32>().ok()))
            {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    if roots.iter().any(|r| !seen.contains(r)) {
        return None;
    }
    // A root may be given twice or descend from another: count each process once.
    let mut included = HashSet::new();
    let mut out = Vec::new();
    let mut queue: Vec<u32> = roots.to_vec();
    while let Some(pid) = queue.pop() {
        if included.insert(pid) {
            out.push(pid);
            if let Some(kids) = children.get(&pid) {
                queue.extend(kids.iter().copied());
            }
        }
    }
    Some(out)
}

/// Clock ticks per second for `/proc/<pid>/stat` times.
#[allow(unsafe_code)]
fn clock_ticks() -> u64 {
    // SAFETY: sysconf takes an integer name and has no other precondition.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// CPU time (user + system) this process has used, µs.
#[allow(unsafe_code)]
pub fn self_cpu_us() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` points to writable memory of the right size; RUSAGE_SELF is valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    // SAFETY: getrusage returned 0, so it filled the struct (and zeroed() made every
    // byte initialised before).
    let usage = unsafe { usage.assume_init() };
    let us = |t: libc::timeval| {
        u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec).unwrap_or(0)
    };
    us(usage.ru_utime) + us(usage.ru_stime)
}

/// Raise the soft open-file limit to the hard one, so that 10,000 connections fit.
/// Returns the soft limit now in force.
#[allow(unsafe_code)]
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit whose soft value does not exceed the hard.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let stat = "42 (a (b) c) S 7 42 42 0 -1 4194560 100 0 0 0 5 6 7 8 20 0 1 0";
        let f = stat_fields(stat).unwrap();
        assert_eq!(f[0], "S");
        assert_eq!(f[1], "7");
        assert_eq!(&f[11..=14], ["5", "6", "7", "8"]);
    }

    #[test]
    fn samples_this_process() {
        let me = Server::new(&[std::process::id()]).unwrap();
        let s = me.sample().unwrap();
        assert!(s.rss_kib > 0);
        assert!(s.processes >= 1);
        // The same tree twice counts once.
        let twice = Server::new(&[std::process::id(), std::process::id()]).unwrap();
        assert_eq!(twice.sample().unwrap().processes, s.processes);
        assert_eq!(
            Server::new(&[std::process::id(), u32::MAX]).err(),
            Some(u32::MAX)
        );
    }

    #[test]
    fn reads_vm_rss() {
        assert_eq!(vm_rss_kib("Name:\tx\nVmRSS:\t  1234 kB\n"), Some(1234));
        assert_eq!(vm_rss_kib("Name:\tx\n"), None);
    }
}
