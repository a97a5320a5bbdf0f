//! Built-in node kinds. [`registry`] returns all of them.

pub mod generic;

use crate::stage::Registry;

/// Every built-in kind.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(generic::ValueStage)
        .register(generic::CommandStage);
    r
}
