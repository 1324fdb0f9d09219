//! Resource sampling from `/proc`: memory and CPU time summed over each instance's process
//! group, so an app started through a wrapper (`npm start`, `sh -c`) is measured whole. A group
//! of one process counts its RSS; a group of several counts each process's PSS (its private
//! pages plus its share of pages it shares), so preforked workers that share most of their
//! memory (gunicorn `--preload`, php-fpm, Node cluster) are not counted once per worker.

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
    // With the CPU of its children that exited and were waited for (a recycled gunicorn worker,
    // an ffmpeg run per request): they leave the group, their time stays in the total.
    let cutime: u64 = f.get(13)?.parse().ok()?;
    let cstime: u64 = f.get(14)?.parse().ok()?;
    let rss: i64 = f.get(21)?.parse().ok()?;
    Some((
        pgrp,
        utime + stime + cutime + cstime,
        u64::try_from(rss).unwrap_or(0),
    ))
}

/// A process by its pid and start time (clock ticks after boot), so that a pid the kernel
/// has since given to another process is not mistaken for it.
pub(crate) type ProcId = (u32, u64);

/// `(ppid, pgrp, starttime)` of a `/proc/<pid>/stat` line.
fn parentage(line: &str) -> Option<(u32, u32, u64)> {
    let rest = &line[line.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    Some((
        f.get(1)?.parse().ok()?,
        f.get(2)?.parse().ok()?,
        f.get(19)?.parse().ok()?,
    ))
}

/// The descendants of `pid` outside its process group `pid`: children an app started in a
/// group or session of their own (`setsid`, Node's `detached: true`), which a signal to the
/// group misses (PM2 kills the whole tree for the same reason). Blocking: scans `/proc`.
pub(crate) fn escaped(pid: u32) -> Vec<ProcId> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut all: Vec<(u32, u32, u32, u64)> = Vec::new();
    for entry in dir.flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((ppid, pgrp, start)) = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .as_deref()
            .and_then(parentage)
        {
            all.push((p, ppid, pgrp, start));
        }
    }
    let mut tree = vec![pid];
    let mut out = Vec::new();
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        for &(p, ppid, pgrp, start) in &all {
            if ppid == parent && !tree.contains(&p) {
                tree.push(p);
                if pgrp != pid {
                    out.push((p, start));
                }
            }
        }
        i += 1;
    }
    out
}

/// Whether the process `id` still runs (same pid, same start time, not a zombie).
pub(crate) fn alive(id: ProcId) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", id.0))
        .ok()
        .is_some_and(|line| {
            let zombie = line
                .rfind(')')
                .and_then(|i| line[i + 1..].split_ascii_whitespace().next())
                == Some("Z");
            !zombie && parentage(&line).is_some_and(|(_, _, start)| start == id.1)
        })
}

/// Whether a process of group `pgid` runs (one whose state is not `Z`, a zombie).
pub(crate) fn group_running(pgid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|entry| {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        let Ok(line) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        let Some(rest) = line.rfind(')').map(|i| &line[i + 1..]) else {
            return false;
        };
        let mut f = rest.split_ascii_whitespace();
        let state = f.next();
        let pgrp = f.nth(1).and_then(|p| p.parse::<u32>().ok());
        pgrp == Some(pgid) && state != Some("Z")
    })
}

/// Scans `/proc` once and sums usage for the wanted process groups. Blocking: run it off the
/// async workers.
fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096)
}

pub(crate) fn sample_groups(pgids: &[u32]) -> HashMap<u32, GroupUsage> {
    let page = page_size();
    let mut out: HashMap<u32, GroupUsage> = HashMap::new();
    if pgids.is_empty() {
        return out;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    // (pid, pgrp, rss bytes) of every member of a wanted group.
    let mut members: Vec<(String, u32, u64)> = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(line) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((pgrp, ticks, rss_pages)) = parse_stat(&line) {
            if pgids.contains(&pgrp) {
                out.entry(pgrp).or_default().cpu_ticks += ticks;
                members.push((name, pgrp, rss_pages * page));
            }
        }
    }
    let mut count: HashMap<u32, usize> = HashMap::new();
    for (_, pgrp, _) in &members {
        *count.entry(*pgrp).or_default() += 1;
    }
    for (pid, pgrp, rss) in members {
        let bytes = if count[&pgrp] > 1 {
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
                .ok()
                .and_then(|t| parse_pss(&t))
                .unwrap_or(rss)
        } else {
            rss
        };
        out.entry(pgrp).or_default().rss_bytes += bytes;
    }
    out
}

/// The `Pss:` line of `/proc/<pid>/smaps_rollup`, in bytes.
pub(crate) fn parse_pss(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    let kib: u64 = line.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
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
    fn a_group_of_zombies_is_not_running() {
        use std::os::unix::process::CommandExt as _;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id();
        assert!(group_running(pgid));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pgid).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        // Dead but not reaped yet: a zombie, which `killpg(pgid, 0)` would still find.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while group_running(pgid) {
            assert!(
                std::time::Instant::now() < deadline,
                "a zombie counted as running"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.wait().unwrap();
    }

    #[test]
    fn parses_stat_with_spaces_in_name() {
        let line = "1234 (my (odd) app) S 1 1230 1230 0 -1 4194560 100 0 0 0 25 5 0 0 20 0 3 0 100 1000000 250 18446744073709551615";
        assert_eq!(parse_stat(line), Some((1230, 30, 250)));
        // Children waited for count in (cutime 7, cstime 3).
        let line = "1234 (app) S 1 1230 1230 0 -1 4194560 100 0 0 0 25 5 7 3 20 0 3 0 100 1000000 250 18446744073709551615";
        assert_eq!(parse_stat(line), Some((1230, 40, 250)));
    }

    #[test]
    fn parses_pss() {
        let text = "55a0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:  10240 kB\nPss:   4096 kB\nPss_Anon: 1 kB\n";
        assert_eq!(parse_pss(text), Some(4096 * 1024));
        assert_eq!(parse_pss("Rss: 1 kB\n"), None);
    }

    #[test]
    fn a_group_of_several_counts_shared_pages_once() {
        use std::os::unix::process::CommandExt as _;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let (usage, rss_sum) = loop {
            // The group's members and the sum of their RSS, as counting RSS would give.
            let mut rss_sum = 0;
            let mut n = 0;
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let Ok(line) = std::fs::read_to_string(entry.path().join("stat")) else {
                    continue;
                };
                if let Some((pgrp, _, pages)) = parse_stat(&line) {
                    if pgrp == pgid {
                        rss_sum += pages * page_size();
                        n += 1;
                    }
                }
            }
            if n == 4 {
                break (sample_groups(&[pgid])[&pgid].rss_bytes, rss_sum);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the group never had 4 processes"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(i32::try_from(pgid).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let _ = child.wait();
        assert!(usage > 0);
        assert!(
            usage < rss_sum,
            "PSS {usage} should count the shared pages of sh and sleep once (RSS sum {rss_sum})"
        );
    }

    #[test]
    fn samples_own_group() {
        let me = nix::unistd::getpgrp().as_raw() as u32;
        let usage = sample_groups(&[me]);
        assert!(usage[&me].rss_bytes > 0);
    }
}
