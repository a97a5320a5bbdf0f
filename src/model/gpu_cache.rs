//! Where GPU kernels and autotune results are kept between runs, and kernel timing on request.
//!
//! burn's GPU backends (CubeCL: cuda, wgpu) tunes every new matrix-product and reduction shape at first use by compiling
//! and timing each candidate kernel (about 10 s per shape on an H200, NVRTC compiles dominating). By default
//! it keeps the tuning results under the nearest Cargo project's `target/` (or the user's cache outside
//! one: a result that depends on where the command was started) and does not keep compiled kernels at all.
//! Before the first GPU use polyflow points both caches at one folder of the user's cache:
//!
//! - autotune results: `<root>/autotune/<GPU model>` on cuda, `<root>/autotune` on wgpu — CubeCL keys them by
//!   device index (`device-4-0`), runtime and kernel set, not by GPU model, so on cuda the folder is per model:
//!   a home directory shared by machines with different GPUs (a cluster's) keeps each model's choices apart;
//!   with no model known (none, or several in one machine) the folder is shared, as CubeCL would have it;
//! - compiled PTX: `<root>/ptx/<GPU model>` — CubeCL keys PTX by kernel only, not by GPU architecture, so
//!   the folder is per GPU model (read from the NVIDIA driver's `/proc/driver/nvidia/gpus/*/information`);
//!   when the model is unknown or the machine mixes models, the PTX cache stays off (cuda only).
//!
//! `<root>` is `$POLYFLOW_KERNEL_CACHE`, else `$XDG_CACHE_HOME/polyflow/kernels`, else
//! `~/.cache/polyflow/kernels`. A `cubecl.toml` (or `burn.toml` `[cubecl]`) of the user's that sets either
//! cache to something other than CubeCL's default is left as it is. None of this enters a key: kernels
//! and tuning choices change speed, and results only as far as the backend's own nondeterminism does.
//!
//! Kernel timing: with [`PROFILE_VAR`] (`POLYFLOW_KERNEL_PROFILE=<file>`) set, CubeCL waits for every kernel it
//! launches and writes its duration to that file, one line `| <duration> | <kernel>` a launch, plus a summary
//! at each synchronisation (`benches/cubecl_profile.py` sums them by kernel). The waits slow the run: use it
//! to see where a step's time goes, not to time the step.

use std::path::{Path, PathBuf};

/// The cache root from the process environment (see the module docs).
pub fn root() -> PathBuf {
    root_from(|k| std::env::var_os(k).filter(|v| !v.is_empty()))
}

/// [`root`] with the environment given by `var`.
fn root_from(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    if let Some(dir) = var("POLYFLOW_KERNEL_CACHE") {
        return PathBuf::from(dir);
    }
    let base = var("XDG_CACHE_HOME").map(PathBuf::from).or_else(|| var("HOME").map(|h| Path::new(&h).join(".cache")));
    base.unwrap_or_else(std::env::temp_dir).join("polyflow").join("kernels")
}

/// The one GPU model of this machine as a folder name (`NVIDIA_H200`), from the driver's per-GPU
/// `information` files under `gpus`; `None` when there is none or more than one model.
pub fn gpu_model(gpus: &Path) -> Option<String> {
    let mut models = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(gpus).ok()?.flatten() {
        let text = std::fs::read_to_string(entry.path().join("information")).ok()?;
        let model = text.lines().find_map(|l| l.strip_prefix("Model:"))?.trim();
        models.insert(model.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect::<String>());
    }
    if models.len() == 1 {
        models.pop_first()
    } else {
        None
    }
}

/// Where the autotune results go under `root`: per GPU model when it is known (module docs).
#[cfg(any(feature = "cuda", feature = "wgpu", test))]
fn autotune_dir(root: &Path, model: Option<&str>) -> PathBuf {
    match model {
        Some(m) => root.join("autotune").join(m),
        None => root.join("autotune"),
    }
}

/// The environment variable naming the file CubeCL's kernel timings go to (module docs).
pub const PROFILE_VAR: &str = "POLYFLOW_KERNEL_PROFILE";

/// Points CubeCL's autotune and (on CUDA, `ptx`) PTX caches under [`root`], and turns on kernel timing when
/// [`PROFILE_VAR`] is set, once per process, before CubeCL reads its configuration (it can be set only once).
/// Leaves a configuration CubeCL has already read as it is.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub fn configure(ptx: bool) {
    use cubecl_runtime::config::cache::CacheConfig;
    use cubecl_runtime::config::profiling::ProfilingLogLevel;
    use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // What CubeCL itself would load: the user's cubecl.toml / burn.toml, then CUBECL_* variables.
        let mut cfg = CubeClRuntimeConfig::from_current_dir().override_from_env();
        let root = root();
        let model = if ptx { gpu_model(Path::new("/proc/driver/nvidia/gpus")) } else { None };
        if matches!(cfg.autotune.cache, CacheConfig::Target) {
            cfg.autotune.cache = CacheConfig::File(autotune_dir(&root, model.as_deref()));
        }
        if let Some(model) = model.as_deref().filter(|_| cfg.compilation.cache.is_none()) {
            cfg.compilation.cache = Some(CacheConfig::File(root.join("ptx").join(model)));
        }
        if let Some(file) = std::env::var_os(PROFILE_VAR).filter(|v| !v.is_empty()).map(PathBuf::from) {
            // Checked here: CubeCL's logger would fail on its own thread, far from the variable that named the file.
            match std::fs::File::create(&file) {
                Ok(_) => {
                    cfg.profiling.logger.level = ProfilingLogLevel::Basic;
                    cfg.profiling.logger.file = Some(file);
                    cfg.profiling.logger.append = false;
                }
                Err(e) => tracing::warn!(
                    "{PROFILE_VAR}={}: cannot write it ({e}); kernel timing stays off (name a file in a folder that exists)",
                    file.display()
                ),
            }
        }
        // Set under the lock CubeCL reads it with (its `set` panics when it was read meanwhile).
        let mut state = CubeClRuntimeConfig::storage().lock();
        if state.is_none() {
            tracing::debug!(autotune = ?cfg.autotune.cache, ptx = ?cfg.compilation.cache, "CubeCL caches");
            *state = Some(std::sync::Arc::new(cfg));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn root_prefers_the_variable_then_xdg_then_home() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| OsString::from(v))
        };
        assert_eq!(root_from(env(&[("POLYFLOW_KERNEL_CACHE", "/k"), ("HOME", "/h")])), PathBuf::from("/k"));
        assert_eq!(root_from(env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])), PathBuf::from("/x/polyflow/kernels"));
        assert_eq!(root_from(env(&[("HOME", "/h")])), PathBuf::from("/h/.cache/polyflow/kernels"));
    }

    #[test]
    fn autotune_results_are_kept_per_gpu_model() {
        let r = Path::new("/k");
        assert_eq!(autotune_dir(r, Some("NVIDIA_H200")), PathBuf::from("/k/autotune/NVIDIA_H200"));
        assert_ne!(autotune_dir(r, Some("NVIDIA_H200")), autotune_dir(r, Some("NVIDIA_A100-SXM4-80GB")));
        assert_eq!(autotune_dir(r, None), PathBuf::from("/k/autotune"));
    }

    #[test]
    fn gpu_model_is_the_one_model_of_the_machine() {
        let d = tempfile::tempdir().unwrap();
        let gpu = |bus: &str, model: &str| {
            let p = d.path().join(bus);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("information"), format!("Model: \t\t {model}\nIRQ:   \t\t 42\nGPU UUID: \t GPU-1\n")).unwrap();
        };
        assert_eq!(gpu_model(d.path()), None, "no GPU");
        gpu("0000:18:00.0", "NVIDIA H200");
        gpu("0000:2a:00.0", "NVIDIA H200");
        assert_eq!(gpu_model(d.path()).as_deref(), Some("NVIDIA_H200"));
        gpu("0000:3a:00.0", "NVIDIA A100-SXM4-80GB");
        assert_eq!(gpu_model(d.path()), None, "two models share no PTX");
        assert_eq!(gpu_model(&d.path().join("missing")), None);
    }
}
