//! A process's resident memory and CPU time, read from `/proc`.
//!
//! Both are read for the relay under test (and its peers), never for the load tool, so that the
//! numbers say what the relay costs and not what generating the load costs.

use std::sync::OnceLock;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// User plus system CPU time since the process started, seconds.
    pub cpu_secs: f64,
}

impl std::ops::Add for Sample {
    type Output = Sample;
    fn add(self, o: Sample) -> Sample {
        Sample {
            rss_bytes: self.rss_bytes + o.rss_bytes,
            cpu_secs: self.cpu_secs + o.cpu_secs,
        }
    }
}

/// Reads `pid`'s RSS and CPU time.
pub fn sample(pid: u32) -> std::io::Result<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let bad = || std::io::Error::other(format!("unexpected /proc/{pid} format"));
    let ticks = cpu_ticks(&stat).ok_or_else(bad)?;
    let rss_kb = vm_rss_kb(&status).ok_or_else(bad)?;
    Ok(Sample {
        rss_bytes: rss_kb * 1024,
        cpu_secs: ticks as f64 / clock_ticks_per_sec(),
    })
}

/// The sum of readings of every pid.
pub fn sample_all(pids: &[u32]) -> std::io::Result<Sample> {
    pids.iter()
        .try_fold(Sample::default(), |acc, &pid| Ok(acc + sample(pid)?))
}

/// `utime + stime` from a `/proc/PID/stat` line. The command name (field 2) may contain spaces
/// and parentheses, so fields are counted from the last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn vm_rss_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `CLK_TCK`, asked of `getconf` once (100 on every Linux this runs on, but not assumed).
fn clock_ticks_per_sec() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The machine, for the report: CPU model, cores, memory, kernel.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU", str::trim)
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // Counted from /proc/cpuinfo: the tool's own affinity may be narrower once it is pinned.
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    format!(
        "{model}, {cores} cores, {:.1} GiB RAM, Linux {}",
        mem_kb as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_names() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 9 0 \
                    123 456 789";
        assert_eq!(cpu_ticks(stat), Some(281));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn parses_rss() {
        let status = "Name:\tx\nVmPeak:\t  9 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(vm_rss_kb(status), Some(12345));
        assert_eq!(vm_rss_kb("Name:\tx\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0);
        assert!(s.cpu_secs >= 0.0);
        let both = sample_all(&[std::process::id(), std::process::id()]).unwrap();
        assert!(both.rss_bytes >= s.rss_bytes);
    }
}
