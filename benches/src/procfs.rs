//! What the harness reads from `/proc`: a process' CPU time and peak memory, and a description of
//! the machine. Plain file reads, no libc calls (the workspace denies `unsafe`).

use std::fs;
use std::io;
use std::process::Command;
use std::sync::OnceLock;

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, 100 on Linux when that
/// cannot be run).
pub fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// CPU seconds a process has used so far, user plus system, over all its threads (fields 14
/// `utime` and 15 `stime` of `/proc/<pid>/stat`). Resolution: one clock tick (10 ms).
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (utime, stime) = parse_stat_times(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("unexpected /proc/{pid}/stat: {stat:?}")))?;
    Ok((utime + stime) as f64 / clock_ticks() as f64)
}

/// `(utime, stime)` in ticks from the text of `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so fields are counted after the last `)`.
fn parse_stat_times(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the `)`: field 3 (state) is index 0, so field n is index n - 3.
    let mut fields = rest.split_ascii_whitespace().skip(14 - 3);
    let utime = fields.next()?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// CPU seconds the whole machine has been busy so far, all CPUs together (the first line of
/// `/proc/stat`: everything but `idle` and `iowait`; `guest` time is already inside `user`).
pub fn machine_busy_seconds() -> io::Result<f64> {
    let stat = fs::read_to_string("/proc/stat")?;
    parse_machine_busy(&stat)
        .map(|ticks| ticks as f64 / clock_ticks() as f64)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/stat"))
}

fn parse_machine_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_ascii_whitespace().skip(1).map(|x| x.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let busy = v.get(..8)?.iter().enumerate().filter(|&(k, _)| k != 3 && k != 4).map(|(_, x)| x).sum();
    Some(busy)
}

/// `/proc/loadavg`'s three load averages.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_ascii_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A `kB` line of `/proc/<pid>/status` (`VmHWM`, `VmRSS`, …), in KiB.
pub fn status_kib(pid: u32, key: &str) -> io::Result<Option<u64>> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(parse_status_kib(&status, key))
}

fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// The machine, for the report header.
#[derive(Clone, Debug)]
pub struct Machine {
    /// CPUs this process may run on (`nproc`).
    pub nproc: usize,
    /// `model name` of the first CPU in `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `MemTotal` in MiB.
    pub mem_total_mib: u64,
    /// Kernel release.
    pub kernel: String,
}

impl Machine {
    /// Reads the current machine.
    pub fn current() -> Machine {
        let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_mib = parse_status_kib(&meminfo, "MemTotal").unwrap_or(0) / 1024;
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
        Machine { nproc, cpu_model, mem_total_mib, kernel }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_after_a_tricky_command_name() {
        let stat = "4242 (a b) c)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 1234 567 0 0 20 0 9 0 100 2000 300";
        assert_eq!(parse_stat_times(stat), Some((1234, 567)));
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(cpu_seconds(std::process::id()).unwrap() >= 0.0);
        assert!(status_kib(std::process::id(), "VmHWM").unwrap().unwrap() > 0);
    }

    #[test]
    fn machine_busy_skips_idle_and_iowait() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 40 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        assert_eq!(parse_machine_busy(stat), Some(100 + 5 + 50 + 3 + 2 + 1));
        assert!(machine_busy_seconds().unwrap() > 0.0);
    }

    #[test]
    fn status_lines() {
        let s = "Name:\tx\nVmPeak:\t  10 kB\nVmHWM:\t    2048 kB\n";
        assert_eq!(parse_status_kib(s, "VmHWM"), Some(2048));
        assert_eq!(parse_status_kib(s, "VmRSS"), None);
    }
}
