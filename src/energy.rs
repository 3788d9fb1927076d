//! Energy used while computing: Linux RAPL package counters when readable (wrap-around handled),
//! otherwise the process's CPU time × watts per core. Every figure says which method made it.

use std::fmt;
use std::path::{Path, PathBuf};

/// How an energy figure was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnergyMethod {
    Rapl,
    Estimate,
}

impl EnergyMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            EnergyMethod::Rapl => "rapl",
            EnergyMethod::Estimate => "estimate",
        }
    }
}

impl fmt::Display for EnergyMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One RAPL package domain: its counter file, the value it wraps at, and what it read last.
#[derive(Debug, Clone)]
struct Domain {
    counter: PathBuf,
    range_uj: u64,
    last_uj: u64,
}

#[derive(Debug, Clone)]
enum Source {
    Rapl(Vec<Domain>),
    CpuTime { watts_per_core: f64 },
}

/// A cumulative energy counter, read before and after each engine step.
#[derive(Debug, Clone)]
pub struct EnergyMeter {
    source: Source,
    total_j: f64,
}

pub const POWERCAP: &str = "/sys/class/powercap";

/// Watts per busy core for the CPU-time estimate when nothing else says: a 65 W desktop CPU
/// with 8 cores at full load, the built-in price table's assumption.
pub const DEFAULT_WATTS_PER_CORE: f64 = 65.0 / 8.0;

impl EnergyMeter {
    /// RAPL from the system's powercap tree when its package counters can be read, else the
    /// CPU-time estimate.
    pub fn detect(watts_per_core: f64) -> Self {
        Self::from_powercap(Path::new(POWERCAP), watts_per_core)
    }

    /// As [`detect`](Self::detect), reading the powercap tree under `root`.
    pub fn from_powercap(root: &Path, watts_per_core: f64) -> Self {
        let source = match rapl_domains(root) {
            Some(d) => Source::Rapl(d),
            None => Source::CpuTime { watts_per_core },
        };
        Self { source, total_j: 0.0 }
    }

    /// The CPU-time estimate, whatever the system offers.
    pub fn estimate(watts_per_core: f64) -> Self {
        Self { source: Source::CpuTime { watts_per_core }, total_j: 0.0 }
    }

    pub fn method(&self) -> EnergyMethod {
        match self.source {
            Source::Rapl(_) => EnergyMethod::Rapl,
            Source::CpuTime { .. } => EnergyMethod::Estimate,
        }
    }

    /// Joules since an arbitrary origin; only differences between readings mean anything.
    pub fn read(&mut self) -> f64 {
        match &mut self.source {
            Source::Rapl(domains) => {
                for d in domains.iter_mut() {
                    // A counter that cannot be read this once adds nothing rather than failing a step.
                    if let Some(now) = read_u64(&d.counter) {
                        self.total_j += counter_delta(d.last_uj, now, d.range_uj) as f64 / 1e6;
                        d.last_uj = now;
                    }
                }
                self.total_j
            }
            Source::CpuTime { watts_per_core } => process_cpu_seconds() * *watts_per_core,
        }
    }
}

/// Microjoules between two counter readings, across one wrap at `range`.
pub fn counter_delta(last: u64, now: u64, range: u64) -> u64 {
    if now >= last {
        now - last
    } else {
        range.saturating_sub(last) + now
    }
}

/// Top-level RAPL zones (`intel-rapl:N`, not their sub-zones) named `package-*`, all readable.
fn rapl_domains(root: &Path) -> Option<Vec<Domain>> {
    let mut domains = Vec::new();
    for entry in std::fs::read_dir(root).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("intel-rapl:") else { continue };
        if rest.contains(':') {
            continue;
        }
        let dir = entry.path();
        let zone = std::fs::read_to_string(dir.join("name")).unwrap_or_default();
        if !zone.trim().starts_with("package") {
            continue;
        }
        let counter = dir.join("energy_uj");
        let last_uj = read_u64(&counter)?;
        let range_uj = read_u64(&dir.join("max_energy_range_uj")).unwrap_or(u64::MAX);
        domains.push(Domain { counter, range_uj, last_uj });
    }
    (!domains.is_empty()).then_some(domains)
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// CPU seconds used by every thread of this process so far.
pub fn process_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(root: &Path, dir: &str, name: &str, uj: u64, range: u64) {
        let d = root.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
        std::fs::write(d.join("energy_uj"), format!("{uj}\n")).unwrap();
        std::fs::write(d.join("max_energy_range_uj"), format!("{range}\n")).unwrap();
    }

    #[test]
    fn rapl_sums_package_zones_across_a_wrap() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        zone(root, "intel-rapl:0", "package-0", 999_000_000, 1_000_000_000);
        zone(root, "intel-rapl:1", "package-1", 5_000_000, 1_000_000_000);
        // Sub-zones and non-package zones are not counted.
        zone(root, "intel-rapl:0:0", "core", 0, 1_000_000_000);
        zone(root, "intel-rapl:2", "psys", 0, 1_000_000_000);
        let mut m = EnergyMeter::from_powercap(root, 10.0);
        assert_eq!(m.method(), EnergyMethod::Rapl);
        let start = m.read();
        // Package 0 wraps: 999 J → 1000 J (= 0) → 2 J is 3 J; package 1 goes 5 J → 7 J.
        std::fs::write(root.join("intel-rapl:0/energy_uj"), "2000000").unwrap();
        std::fs::write(root.join("intel-rapl:1/energy_uj"), "7000000").unwrap();
        std::fs::write(root.join("intel-rapl:0:0/energy_uj"), "900000000").unwrap();
        let j = m.read() - start;
        assert!((j - 5.0).abs() < 1e-9, "{j}");
    }

    #[test]
    fn unreadable_or_missing_rapl_falls_back_to_the_estimate() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(EnergyMeter::from_powercap(&tmp.path().join("none"), 10.0).method(), EnergyMethod::Estimate);
        zone(tmp.path(), "intel-rapl:0", "package-0", 0, 10);
        std::fs::write(tmp.path().join("intel-rapl:0/energy_uj"), "permission denied?").unwrap();
        assert_eq!(EnergyMeter::from_powercap(tmp.path(), 10.0).method(), EnergyMethod::Estimate);
    }

    #[test]
    fn the_estimate_follows_cpu_time() {
        // Spins for 50 ms of this thread's CPU time (not wall time: a busy machine would
        // give the loop less CPU than its wall clock says).
        let thread_cpu = || {
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: `ts` is a valid timespec for the call to fill.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
            ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
        };
        let mut m = EnergyMeter::estimate(10.0);
        let a = m.read();
        let t = thread_cpu();
        let mut x = 0u64;
        while thread_cpu() - t < 0.05 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let j = m.read() - a;
        // ≥ 40 ms of one core's time at 10 W.
        assert!(j >= 0.4 && j < 5.0, "{j}");
    }

    #[test]
    fn counter_delta_handles_a_wrap() {
        assert_eq!(counter_delta(10, 15, 100), 5);
        assert_eq!(counter_delta(90, 5, 100), 15);
    }
}
