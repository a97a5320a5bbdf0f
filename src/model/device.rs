//! Backend choice lives here and only here: CPU (burn's `flex`) by default, CUDA behind the `cuda` feature.
//!
//! Generic code is written once over `B: AutodiffBackend`; [`dispatch`] instantiates it for the backend named
//! at run time.

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::AutodiffBackend;

/// Work that is generic over the training backend.
pub trait BackendJob {
    /// Result type.
    type Output;
    /// Runs on backend `B` with `device`.
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

/// Names of the backends compiled into this binary.
pub fn available() -> Vec<&'static str> {
    let mut v = vec!["flex"];
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    v
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

/// Runs `job` on the backend called `name` (`flex` or `cuda`).
pub fn dispatch<J: BackendJob>(name: &str, job: J) -> Result<J::Output, String> {
    match name {
        "flex" | "cpu" => Ok(job.run::<Autodiff<Flex>>(Default::default())),
        #[cfg(feature = "cuda")]
        "cuda" => {
            if !cuda_driver_present() {
                return Err("backend `cuda` requested but no CUDA driver (libcuda.so) is available: use --backend flex".into());
            }
            Ok(job.run::<Autodiff<burn::backend::Cuda>>(burn::backend::cuda::CudaDevice { index: 0 }))
        }
        other => Err(format!("backend `{other}` is not available in this build (available: {})", available().join(", "))),
    }
}
