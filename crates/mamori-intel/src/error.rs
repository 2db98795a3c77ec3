//! Errors of loading IP data.

use std::path::PathBuf;

/// Why IP data could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum IntelError {
    /// The file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line of a range CSV or CIDR list is malformed. `message` names the field where there is
    /// one, e.g. ``field `asn`: "x" is not an AS number``.
    #[error("{}:{line}: {message}", path.display())]
    Line {
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        message: String,
    },
    /// A MaxMind DB file cannot be opened, is corrupt, or does not hold the expected data.
    #[error("{}: MaxMind DB: {message}", path.display())]
    Mmdb { path: PathBuf, message: String },
}

impl IntelError {
    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            IntelError::Io { path, .. }
            | IntelError::Line { path, .. }
            | IntelError::Mmdb { path, .. } => path,
        }
    }
}
