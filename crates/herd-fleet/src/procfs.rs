//! Resource sampling from `/proc`: RSS and CPU time summed over each instance's process group,
//! so an app started through a wrapper (`npm start`, `sh -c`) is measured whole.

use std::collections::HashMap;

/// Totals for one process group at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GroupUsage {
    pub(crate) rss_bytes: u64,
    /// utime + stime in clock ticks.
    pub(crate) cpu_ticks: u64,
}

/// Parses one `/proc/<pid>/stat` line into (pgrp, cpu ticks, rss pages).
pub(crate) fn parse_stat(line: &str) -> Option<(u32, u64, u64)> {
    // The command name is parenthesised and may contain spaces and parentheses: split at the last ')'.
    let rest = &line[line.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let pgrp = f.get(2)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let rss: i64 = f.get(21)?.parse().ok()?;
    Some((pgrp, utime + stime, u64::try_from(rss).unwrap_or(0)))
}

/// Scans `/proc` once and sums usage for the wanted process groups. Blocking: run it off the
/// async workers.
pub(crate) fn sample_groups(pgids: &[u32]) -> HashMap<u32, GroupUsage> {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096);
    let mut out: HashMap<u32, GroupUsage> = HashMap::new();
    if pgids.is_empty() {
        return out;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(line) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((pgrp, ticks, rss_pages)) = parse_stat(&line) {
            if pgids.contains(&pgrp) {
                let u = out.entry(pgrp).or_default();
                u.rss_bytes += rss_pages * page;
                u.cpu_ticks += ticks;
            }
        }
    }
    out
}

/// Clock ticks per second for CPU time.
pub(crate) fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_name() {
        let line = "1234 (my (odd) app) S 1 1230 1230 0 -1 4194560 100 0 0 0 25 5 0 0 20 0 3 0 100 1000000 250 18446744073709551615";
        assert_eq!(parse_stat(line), Some((1230, 30, 250)));
    }

    #[test]
    fn samples_own_group() {
        let me = nix::unistd::getpgrp().as_raw() as u32;
        let usage = sample_groups(&[me]);
        assert!(usage[&me].rss_bytes > 0);
    }
}
