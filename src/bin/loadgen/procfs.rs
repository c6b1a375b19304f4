//! What Linux says about a process, from `/proc`: resident memory and CPU time. The benchmark's
//! memory targets are about resident memory, which only the kernel knows exactly, and CPU time
//! tells whether the service (or the generator beside it) was busy or waiting.

use serde::Serialize;

/// `USER_HZ`: the unit of the CPU times in `/proc/<pid>/stat`. It is 100 on every Linux
/// architecture this runs on (the kernel's ABI fixes it, whatever the kernel's own HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// Resident set now (`VmRSS`) and its peak so far (`VmHWM`), in KiB.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
}

/// `None` when the process is gone or `/proc` is not there (not Linux).
pub fn memory_of(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&status)
}

fn parse_status(status: &str) -> Option<Memory> {
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        peak_rss_kib: field("VmHWM:")?,
    })
}

/// CPU time (user + system) used so far by process `pid`, or by this process when `pid` is
/// `None`, in seconds; `None` when it can not be read.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

fn parse_stat(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// CPU used over the measured window, as a share of one core (200 % = two cores busy).
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuUse {
    pub seconds: f64,
    pub percent_of_one_core: f64,
}

impl CpuUse {
    pub fn between(start: Option<f64>, end: Option<f64>, wall_secs: f64) -> Option<CpuUse> {
        let seconds = end? - start?;
        (wall_secs > 0.0).then(|| CpuUse {
            seconds,
            percent_of_one_core: 100.0 * seconds / wall_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_rss_and_peak() {
        let status = "Name:\tx\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\nThreads:\t9\n";
        let m = super::parse_status(status).unwrap();
        assert_eq!((m.rss_kib, m.peak_rss_kib), (40960, 51200));
    }

    #[test]
    fn reads_cpu_time_past_an_awkward_name() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1 2 3";
        assert_eq!(super::parse_stat(stat), Some(3.0));
    }

    #[test]
    fn our_own_cpu_time_is_readable() {
        assert!(super::cpu_seconds(None).is_some());
    }
}
