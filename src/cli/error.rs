//! A command's failure and the exit code it ends with.

use super::*;

/// A command failure with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Invalid pipeline or usage.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Other, with exit code.
    #[error("{0}")]
    Other(String, i32),
    /// Problems found before running (exit 2): the message, and each problem as `{node, kind, at, param,
    /// message, set}` for `--json`.
    #[error("{0}")]
    Problems(String, Vec<serde_json::Value>),
}

impl CliError {
    /// The documented exit code.
    pub fn code(&self) -> i32 {
        match self {
            CliError::Spec(_) => exit::USAGE,
            CliError::Store(StoreError::Locked { .. }) => exit::LOCKED,
            CliError::Store(StoreError::NotAStore { .. }) => exit::USAGE,
            CliError::Store(_) => exit::STORE,
            CliError::Other(_, c) => *c,
            CliError::Problems(..) => exit::USAGE,
        }
    }

    /// The `{"event": "error", …}` line of `--json`: `exit` and `message`, with what a script can act on where
    /// known: a pipeline error's place (`at`: `file`, `line`, `col`) and `help`, the problems found before running.
    pub fn json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"event": "error", "exit": self.code(), "message": format!("{self:#}")});
        match self {
            CliError::Spec(e) => {
                if let Some(l) = &e.location {
                    v["at"] = serde_json::json!({"file": l.file, "line": l.line, "col": l.col});
                }
                if let Some(h) = &e.help {
                    v["help"] = serde_json::json!(h);
                }
            }
            CliError::Problems(_, p) => v["problems"] = serde_json::json!(p),
            _ => {}
        }
        v
    }
}

impl From<exec::ExecError> for CliError {
    fn from(e: exec::ExecError) -> Self {
        match e {
            exec::ExecError::Spec(s) => CliError::Spec(s),
            exec::ExecError::Store(s) => CliError::Store(s),
            e @ exec::ExecError::Interrupted { .. } => CliError::Other(format!("{e}"), exit::INTERRUPTED),
            exec::ExecError::Other(s) => CliError::Other(s, exit::NODE_FAILED),
        }
    }
}
