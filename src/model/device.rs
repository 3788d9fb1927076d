//! Choosing the compute device: `auto`, `cpu`, `cuda[:N]` or `metal`, with a clear error when the
//! backend was not compiled in.

use std::str::FromStr;

use candle_core::Device;

use super::ModelError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda(usize),
    Metal,
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "metal" => Ok(Self::Metal),
            "cuda" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => Err(format!("unknown device \"{s}\": use auto, cpu, cuda, cuda:N or metal")),
            },
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Metal => f.write_str("metal"),
        }
    }
}

impl DeviceChoice {
    pub fn open(self) -> Result<Device, ModelError> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Auto => {
                if candle_core::utils::cuda_is_available() {
                    Self::Cuda(0).open()
                } else if candle_core::utils::metal_is_available() {
                    Self::Metal.open()
                } else {
                    Ok(Device::Cpu)
                }
            }
            Self::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(ModelError::Device(
                        "CUDA was not compiled into this hearth: rebuild with `cargo build --release --features cuda`".into(),
                    ));
                }
                Device::new_cuda(n).map_err(|e| ModelError::Device(format!("cannot open CUDA device {n}: {e}")))
            }
            Self::Metal => {
                if !candle_core::utils::metal_is_available() {
                    return Err(ModelError::Device(
                        "Metal was not compiled into this hearth: rebuild with `cargo build --release --features metal`".into(),
                    ));
                }
                Device::new_metal(0).map_err(|e| ModelError::Device(format!("cannot open Metal device: {e}")))
            }
        }
    }
}

/// A short name for a device, for logs and the ledger.
pub fn device_name(d: &Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda".into(),
        Device::Metal(_) => "metal".into(),
    }
}

/// Pins candle's thread count in `RAYON_NUM_THREADS` (to the count candle would pick) unless the
/// user set it. Without it candle works the count out again on many operations, reading
/// `/proc/cpuinfo` each time, which costs several percent of a decode step on a small model.
/// Call it first thing in `main`, before any thread starts.
pub fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", candle_core::utils::get_num_threads().to_string());
    }
    keep_freed_memory();
}

/// A forward pass allocates and frees the same large buffers layer after layer. glibc serves
/// allocations over 128 KiB with fresh `mmap`s and returns them on free, so every layer paid
/// for zeroed pages again: SmolLM2's pp512 went from about 165 to 255 tok/s once they stayed in
/// the heap.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}
