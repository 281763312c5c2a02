//! Figures: percentiles of durations, and a process's CPU time and resident memory from `/proc`
//! (Linux), read by the load client itself so that set-up requests stay out of the figures, and
//! the CPU time of the measuring thread.

use std::time::Duration;

use serde_json::{json, Value};

/// `utime`/`stime` in `/proc/<pid>/stat` count USER_HZ ticks, 100 a second on every Linux ABI.
const TICKS_PER_SECOND: u64 = 100;

/// p50, p95, max and mean in milliseconds (nearest rank), or `null` when there are none.
pub fn summary(mut values: Vec<Duration>) -> Value {
    if values.is_empty() {
        return Value::Null;
    }
    values.sort_unstable();
    let rank = |p: f64| values[((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
    let mean = values.iter().sum::<Duration>() / u32::try_from(values.len()).unwrap_or(u32::MAX);
    json!({
        "p50": ms(rank(0.50)),
        "p95": ms(rank(0.95)),
        "max": ms(values[values.len() - 1]),
        "mean": ms(mean),
    })
}

/// Milliseconds with three decimals.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// User plus system CPU time of a process (`self` for this one), all threads together.
pub fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields follow the last `)`.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11); // utime is field 14, state is 3
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / TICKS_PER_SECOND))
}

/// CPU time of the calling thread so far, to the nanosecond (`/proc/thread-self/schedstat`):
/// what a single-threaded measurement spent, whatever else the machine was running.
pub fn thread_cpu_time() -> Option<Duration> {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(schedstat.split_whitespace().next()?.parse().ok()?))
}

/// Resident memory of a process in KiB (`VmRSS`).
pub fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| line.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(summary(values), json!({"p50": 50.0, "p95": 95.0, "max": 100.0, "mean": 50.5}));
        assert_eq!(
            summary(vec![Duration::from_micros(1500)]),
            json!({"p50": 1.5, "p95": 1.5, "max": 1.5, "mean": 1.5})
        );
        assert_eq!(summary(vec![]), Value::Null);
    }

    #[test]
    fn reads_its_own_process() {
        assert!(cpu_time("self").is_some());
        assert!(rss_kib("self").is_some_and(|kib| kib > 0));
        let before = thread_cpu_time().unwrap();
        let spin = (0..1_000_000u64).fold(0u64, |a, b| std::hint::black_box(a ^ b.wrapping_mul(31)));
        std::hint::black_box(spin);
        assert!(thread_cpu_time().unwrap() > before);
    }
}
