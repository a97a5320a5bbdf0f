//! Backend choice lives here and only here: CPU (burn's `flex`) by default, CUDA behind the `cuda` feature,
//! Vulkan / Metal / DirectX 12 GPUs (burn's `wgpu`) behind the `wgpu` feature.
//!
//! [`Backend`] is the one enum of backends: `--backend` is parsed into it (`cpu` is another name for `flex`),
//! and its canonical [`Backend::name`] is the `backend` entry of the run's environment, which enters the keys
//! of backend-dependent nodes, so `--backend cpu` and `--backend flex` give identical keys. Generic code is
//! written once over `B: AutodiffBackend`; [`Backend::dispatch`] instantiates it for the chosen backend.

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::AutodiffBackend;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A training backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// burn's CPU backend `flex` (also accepted as `cpu`).
    #[default]
    Flex,
    /// burn's CUDA backend (needs the `cuda` feature and a driver).
    Cuda,
    /// burn's wgpu backend: Vulkan, Metal or DirectX 12 GPUs (needs the `wgpu` feature and a GPU driver; Mesa's
    /// lavapipe, a Vulkan driver on the CPU, serves where there is no GPU).
    Wgpu,
}

impl Backend {
    /// Every backend, in order.
    pub const ALL: [Backend; 3] = [Backend::Flex, Backend::Cuda, Backend::Wgpu];

    /// The canonical name: what enters keys and what `Display` prints.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Cuda => "cuda",
            Backend::Wgpu => "wgpu",
        }
    }

    /// The backend of a run's environment (its `backend` entry; `flex` when there is none).
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Backend, String> {
        env.get("backend").map_or(Ok(Backend::Flex), |b| b.parse())
    }

    /// Whether nodes on this backend hold the accelerator slot.
    pub fn holds_device(self) -> bool {
        self != Backend::Flex
    }

    /// Whether this backend computes in `precision` (`f32`, `bf16`, `f16`): `Err` says why not and what to use.
    /// wgpu's kernels are WGSL, which has no bf16.
    pub fn supports_precision(self, precision: &str) -> Result<(), String> {
        if self == Backend::Wgpu && precision == "bf16" {
            return Err("precision = \"bf16\" is not available on the wgpu backend (its kernels are WGSL, which has no bf16): use \"f16\" or \"f32\" there, or bf16 on the cuda or flex backend".into());
        }
        Ok(())
    }

    /// The canonical name of the backend called `name` (`cpu` → `flex`): a command-line value parser for
    /// flags that keep the name as text.
    pub fn canonical(name: &str) -> Result<String, String> {
        name.parse::<Backend>().map(|b| b.name().to_string())
    }

    /// Runs `job` on this backend's first device; an error when it is not compiled in or has no driver.
    pub fn dispatch<J: BackendJob>(self, job: J) -> Result<J::Output, String> {
        self.dispatch_on(job, &[])
    }

    /// Runs `job` on the accelerators numbered `indices` (a node's pinned devices, [`crate::stage::StageCtx::devices`];
    /// none = device 0). The CPU backend has one device: the job gets it once.
    #[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_variables))]
    pub fn dispatch_on<J: BackendJob>(self, job: J, indices: &[u32]) -> Result<J::Output, String> {
        match self {
            Backend::Flex => Ok(job.run::<Autodiff<Flex>>(vec![Default::default()])),
            #[cfg(feature = "cuda")]
            Backend::Cuda => {
                if !cuda_driver_present() {
                    return Err("backend `cuda` requested but no CUDA driver (libcuda.so) is available: use --backend flex".into());
                }
                crate::model::gpu_cache::configure(true);
                let devices = if indices.is_empty() { vec![0] } else { indices.to_vec() };
                let count = <burn::backend::Cuda as burn::tensor::backend::Backend>::device_count(0);
                if let Some(bad) = devices.iter().find(|&&i| i as usize >= count) {
                    return Err(format!(
                        "CUDA device {bad} does not exist: this machine has {count} (`--devices` counts them from 0; restrict them with CUDA_VISIBLE_DEVICES)"
                    ));
                }
                let devices = devices.into_iter().map(|i| burn::backend::cuda::CudaDevice { index: i as usize }).collect();
                Ok(job.run::<Autodiff<burn::backend::Cuda>>(devices))
            }
            #[cfg(not(feature = "cuda"))]
            Backend::Cuda => Err(format!("backend `cuda` is not available in this build (available: {})", available().join(", "))),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => {
                use burn::backend::wgpu::WgpuDevice;
                crate::model::gpu_cache::configure(false);
                // One device: the adapter wgpu picks for high performance (a discrete GPU where there is one;
                // `CUBECL_WGPU_DEFAULT_DEVICE` overrides, e.g. `Cpu` for lavapipe). Several: the discrete GPUs
                // numbered `indices` (CubeCL panics, naming the adapters it found, when there are fewer).
                let devices = match indices {
                    [] => vec![WgpuDevice::DefaultDevice],
                    [i] if *i == 0 => vec![WgpuDevice::DefaultDevice],
                    many => many.iter().map(|&i| WgpuDevice::DiscreteGpu(i as usize)).collect(),
                };
                Ok(job.run::<Autodiff<burn::backend::Wgpu>>(devices))
            }
            #[cfg(not(feature = "wgpu"))]
            Backend::Wgpu => Err(format!("backend `wgpu` is not available in this build (available: {})", available().join(", "))),
        }
    }
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Backend, String> {
        match s {
            "flex" | "cpu" => Ok(Backend::Flex),
            "cuda" => Ok(Backend::Cuda),
            "wgpu" => Ok(Backend::Wgpu),
            other => Err(format!("unknown backend `{other}` (flex, also called cpu, cuda or wgpu)")),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Work that is generic over the training backend.
pub trait BackendJob {
    /// Result type.
    type Output;
    /// Runs on backend `B` with `devices` (never empty; the first is the main one).
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output;
}

/// The environment entry of bf16 nodes trained where the products run on AMX (see [`crate::model::fused`]'s kernels).
pub const BF16_KERNEL: &str = "bf16_kernel";

/// The environment entry that marks runs with the fused CPU block turned off (`POLYFLOW_FUSED_CPU=0`).
pub const CPU_BLOCK: &str = "cpu_block";

/// The key environment entries model nodes read ([`arithmetic_env`]'s, with the engine's `seed`, `backend` and
/// `precision`).
pub const MODEL_ENV_KEYS: [&str; 5] = ["seed", "backend", "precision", CPU_BLOCK, BF16_KERNEL];

/// The entries of this machine and process that change a model's arithmetic on `backend`, for cache keys.
///
/// Only when set, so default keys carry none: burn's composition instead of the fused CPU block rounds
/// differently (`POLYFLOW_FUSED_CPU=0`: its nodes have their own keys, and `status` names the variable that made
/// them); on CPUs whose bf16 products run on AMX, which rounds their sums otherwise than `vdpbf16ps` and the
/// emulation, the fused block's bf16 nodes get keys of their own (training's `env_for_block` keeps the entry on
/// those alone), so a shared store or cache never hands one kind of machine's bf16 bits to the other as fresh.
pub fn arithmetic_env(backend: Backend) -> BTreeMap<String, String> {
    use super::fused::kernels::bf16::{kernel, Kernel};
    let mut env = BTreeMap::new();
    if backend == Backend::Flex && !super::fused::enabled() {
        env.insert(CPU_BLOCK.to_string(), "composed (POLYFLOW_FUSED_CPU=0)".to_string());
    }
    if backend == Backend::Flex && kernel() == Kernel::Amx {
        env.insert(BF16_KERNEL.to_string(), Kernel::Amx.name().to_string());
    }
    env
}

/// Names of the backends compiled into this binary.
pub fn available() -> Vec<&'static str> {
    Backend::ALL
        .into_iter()
        .filter(|&b| match b {
            Backend::Flex => true,
            Backend::Cuda => cfg!(feature = "cuda"),
            Backend::Wgpu => cfg!(feature = "wgpu"),
        })
        .map(Backend::name)
        .collect()
}

/// Whether a CUDA driver can be loaded (burn's cuda path panics in a device thread without one).
pub fn cuda_driver_present() -> bool {
    ["libcuda.so.1", "libcuda.so"].iter().any(|name| {
        // SAFETY: loading the driver library has no side effects beyond its initialisers.
        unsafe { libloading_probe(name) }
    })
}

unsafe fn libloading_probe(name: &str) -> bool {
    let c = std::ffi::CString::new(name).unwrap();
    // dlopen/dlclose from libc, declared here to avoid a dependency.
    extern "C" {
        fn dlopen(filename: *const std::os::raw::c_char, flag: std::os::raw::c_int) -> *mut std::ffi::c_void;
        fn dlclose(handle: *mut std::ffi::c_void) -> std::os::raw::c_int;
    }
    let h = dlopen(c.as_ptr(), 2);
    if h.is_null() {
        false
    } else {
        dlclose(h);
        true
    }
}

/// Runs `job` on the backend called `name` (`flex`, `cpu`, `cuda` or `wgpu`): [`Backend::dispatch`] after parsing.
pub fn dispatch<J: BackendJob>(name: &str, job: J) -> Result<J::Output, String> {
    name.parse::<Backend>()?.dispatch(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_flex_and_names_round_trip() {
        assert_eq!("cpu".parse::<Backend>(), Ok(Backend::Flex));
        assert_eq!(Backend::canonical("cpu").as_deref(), Ok("flex"));
        for b in Backend::ALL {
            assert_eq!(b.to_string().parse::<Backend>(), Ok(b));
        }
        assert!("tpu".parse::<Backend>().unwrap_err().contains("unknown backend `tpu`"));
        let mut env = BTreeMap::new();
        assert_eq!(Backend::from_env(&env), Ok(Backend::Flex));
        env.insert("backend".to_string(), "cuda".to_string());
        assert!(Backend::from_env(&env).unwrap().holds_device());
        assert!(Backend::Wgpu.holds_device() && !Backend::Flex.holds_device());
    }

    #[test]
    fn wgpu_refuses_bf16_and_says_what_to_use() {
        let e = Backend::Wgpu.supports_precision("bf16").unwrap_err();
        assert!(e.contains("WGSL") && e.contains("cuda or flex"), "{e}");
        for p in ["f32", "f16"] {
            assert_eq!(Backend::Wgpu.supports_precision(p), Ok(()));
        }
        for b in [Backend::Flex, Backend::Cuda] {
            assert_eq!(b.supports_precision("bf16"), Ok(()));
        }
    }
}
