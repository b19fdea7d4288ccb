//! The server's resident memory, read from `/proc/<pid>/status` (Linux) every few seconds.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// `VmRSS` of a `/proc/<pid>/status` text, in KiB.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let mut fields = line["VmRSS:".len()..].split_whitespace();
    let value = fields.next()?.parse().ok()?;
    (fields.next()? == "kB").then_some(value)
}

/// Samples taken so far: time since the sampler started, and KiB.
pub type Samples = Arc<Mutex<Vec<(Duration, u64)>>>;

/// Samples the RSS of `pid` every `interval` until aborted; a sample that cannot be read (the
/// process is gone) is skipped, so a missing window shows in the report.
pub fn sample(pid: u32, interval: Duration, start: Instant) -> (Samples, JoinHandle<()>) {
    let samples: Samples = Arc::default();
    let recorder = samples.clone();
    let path = format!("/proc/{pid}/status");
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        loop {
            ticks.tick().await;
            let Ok(status) = tokio::fs::read_to_string(&path).await else {
                continue;
            };
            if let Some(kib) = parse_vm_rss(&status) {
                recorder
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((start.elapsed(), kib));
            }
        }
    });
    (samples, task)
}

/// The last sample at or before `at` but after `after`: the RSS at the end of a window.
pub fn at_end_of(samples: &[(Duration, u64)], after: Duration, at: Duration) -> Option<u64> {
    samples
        .iter()
        .rev()
        .find(|(time, _)| *time <= at && *time > after)
        .map(|&(_, kib)| kib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_kib_from_a_real_status_file() {
        let own = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
        let kib = parse_vm_rss(&own).expect("VmRSS present");
        assert!(
            kib > 100,
            "this test process holds more than 100 KiB: {kib}"
        );
        assert_eq!(parse_vm_rss("Name:\tx\nVmRSS:\t  12345 kB\n"), Some(12_345));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn a_window_takes_its_last_sample() {
        let samples = [
            (Duration::from_secs(2), 10),
            (Duration::from_secs(58), 11),
            (Duration::from_secs(60), 12),
            (Duration::from_secs(62), 13),
        ];
        let minute = Duration::from_secs(60);
        assert_eq!(at_end_of(&samples, Duration::ZERO, minute), Some(12));
        assert_eq!(at_end_of(&samples, minute, minute * 2), Some(13));
        assert_eq!(at_end_of(&samples, minute * 2, minute * 3), None);
    }
}
