//! The edge's time on a CPU in nanoseconds, for runs too quiet for clock ticks: utime and
//! stime come in ticks (10 ms at CLK_TCK 100), which an idle edge spends a few of a minute.
//! Each thread's `/proc/PID/task/TID/schedstat` (its first field: nanoseconds run) is read
//! ten times a second for the process and its descendants, the same for both edges; a thread
//! that ends (tokio's blocking threads end after 10 s idle) keeps what it was last seen at,
//! short by at most what it ran in its last tenth of a second.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use super::load;

/// Nanoseconds run per thread (by TID), as last seen.
type Seen = HashMap<u32, u64>;

/// Watches the threads of a process tree until dropped.
pub struct RunTime {
    pid: u32,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    sampler: Option<JoinHandle<()>>,
}

impl RunTime {
    /// Start watching `pid` and its descendants.
    pub fn watch(pid: u32) -> RunTime {
        let seen = Arc::new(Mutex::new(Seen::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                // The tree is taken again every second (a scan of /proc), its threads every
                // tenth.
                let mut pids = Vec::new();
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    if n.is_multiple_of(10) {
                        pids = load::tree(pid);
                    }
                    n = n.wrapping_add(1);
                    sample(&pids, &seen);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        RunTime {
            pid,
            seen,
            stop,
            sampler: Some(sampler),
        }
    }

    /// Seconds run so far by every thread seen, read now.
    pub fn seconds(&self) -> f64 {
        sample(&load::tree(self.pid), &self.seen);
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.values().sum::<u64>() as f64 / 1e9
    }
}

impl Drop for RunTime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(s) = self.sampler.take() {
            let _ = s.join();
        }
    }
}

/// Read every thread of the processes `pids` into `seen`.
fn sample(pids: &[u32], seen: &Mutex<Seen>) {
    let mut now = Vec::new();
    for p in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ns) = schedstat_ns(&t.path().join("schedstat")) {
                now.push((tid, ns));
            }
        }
    }
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    for (tid, ns) in now {
        let e = seen.entry(tid).or_insert(0);
        *e = (*e).max(ns);
    }
}

/// The first field of a schedstat file: nanoseconds on a CPU.
fn schedstat_ns(path: &std::path::Path) -> Option<u64> {
    parse_schedstat(&std::fs::read_to_string(path).ok()?)
}

fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_and_our_own_threads() {
        assert_eq!(parse_schedstat("123456 789 10\n"), Some(123_456));
        assert_eq!(parse_schedstat(""), None);
        let me = RunTime::watch(std::process::id());
        let t0 = me.seconds();
        // Burn a little CPU: the count moves by nanoseconds, not by ticks.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(me.seconds() > t0);
    }
}
