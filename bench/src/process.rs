//! This process's CPU time and peak resident memory, from /proc (Linux).

/// User + system CPU seconds so far.
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12].iter().filter_map(|i| fields.get(*i)).filter_map(|f| f.parse::<f64>().ok()).sum();
    ticks / 100.0
}

/// Peak resident set size in MiB (VmHWM).
pub fn peak_rss_mib() -> f64 {
    status_mib("/proc/self/status", "VmHWM:")
}

/// Resident set size now, in MiB (VmRSS).
pub fn current_rss_mib() -> f64 {
    status_mib("/proc/self/status", "VmRSS:")
}

/// A kB field of a /proc/PID/status file, in MiB; 0 where it cannot be read.
pub fn status_mib(status_file: &str, field: &str) -> f64 {
    let Ok(status) = std::fs::read_to_string(status_file) else { return 0.0 };
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
