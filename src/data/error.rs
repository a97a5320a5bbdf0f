//! Data errors: always name the file and say what to do.

use std::path::{Path, PathBuf};

/// A problem with a data file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct DataError {
    /// The file (or folder) at fault.
    pub path: PathBuf,
    /// What is wrong and what to do.
    pub message: String,
}

impl DataError {
    /// An error about `path`.
    pub fn new(path: &Path, message: impl Into<String>) -> Self {
        DataError { path: path.to_path_buf(), message: message.into() }
    }
}

/// Reads a whole file, naming it on failure.
pub fn read(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|e| DataError::new(path, format!("cannot read: {e}; check the dataset `path`")))
}
