//! A Slurm worker (`polyflow exec-node`) computes what the node's key names, not what its own machine would
//! pick: bf16 products off AMX unless the key's `bf16_kernel` entry names AMX (and an error where the key names
//! AMX and the products here do not run on it), the fused CPU block on or off as the `cpu_block` entry says.
//! Its own test binary: the choices are process-wide, made once, and this test makes them.

use polyflow::model::device::{BF16_KERNEL, CPU_BLOCK};
use polyflow::model::fused::kernels::bf16::{kernel, Kernel};
use polyflow::stages::training::follow_key_env;
use std::collections::BTreeMap;

fn env(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn a_worker_follows_the_key_environment_or_refuses_it() {
    // Not on the CPU: nothing to follow, nothing chosen.
    assert_eq!(follow_key_env(&env(&[("backend", "cuda"), (BF16_KERNEL, "AMX-BF16")])), Ok(()));
    // A key without the AMX entry (made on a machine whose bf16 products do not run on AMX): this process keeps
    // its bf16 products off AMX, on every CPU (an AMX machine included), and the fused block on.
    assert_eq!(follow_key_env(&env(&[("backend", "flex"), ("seed", "0")])), Ok(()));
    assert_ne!(kernel(), Kernel::Amx, "the bf16 products left on AMX for a key that does not name it");
    assert!(polyflow::model::fused::enabled());
    // A key that names AMX can no longer be computed here: refused, with what to do.
    let e = follow_key_env(&env(&[("backend", "flex"), (BF16_KERNEL, "AMX-BF16")])).unwrap_err();
    assert!(e.contains("bf16_kernel = AMX-BF16") && e.contains(kernel().name()) && e.contains("POLYFLOW_BF16=avx512"), "{e}");
    // The composed block when the key says so.
    assert_eq!(follow_key_env(&env(&[("backend", "flex"), (CPU_BLOCK, "composed (POLYFLOW_FUSED_CPU=0)")])), Ok(()));
    assert!(!polyflow::model::fused::enabled());
}
