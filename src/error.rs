//! One error type; every message names the file, tensor or shape at fault.

use std::fmt;
use std::path::{Path, PathBuf};

/// Errors of the core library.
#[derive(Debug)]
pub enum Error {
    /// A file or directory could not be read or written.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A diffusers `config.json` is malformed, contradictory or unsupported.
    Config { path: PathBuf, msg: String },
    /// A weights file is unreadable, or a tensor is missing or mis-shaped.
    Weights { path: PathBuf, msg: String },
    /// A learned-tokens file is malformed or does not fit the model.
    Tokens { path: PathBuf, msg: String },
    /// A training checkpoint is unreadable, or does not fit the run that resumes from it.
    Checkpoint { path: PathBuf, msg: String },
    /// An input image could not be decoded.
    Image { path: PathBuf, msg: String },
    /// Invalid arguments (sizes, options, frame layout).
    Invalid(String),
    /// A tensor operation failed.
    Tensor(candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub(crate) fn config(path: &Path, msg: impl Into<String>) -> Self {
        Error::Config {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
    pub(crate) fn weights(path: &Path, msg: impl fmt::Display) -> Self {
        // candle prefixes some messages with the path we print anyway.
        let msg = one_line(&msg.to_string()).replace(&format!("path: {:?} ", path), "");
        Error::Weights {
            path: path.to_path_buf(),
            msg,
        }
    }
    pub(crate) fn checkpoint(path: &Path, msg: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
    pub(crate) fn tokens(path: &Path, msg: impl Into<String>) -> Self {
        Error::Tokens {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
}

/// candle errors may carry backtraces over several lines; users get the first line.
fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Config { path, msg } => write!(f, "{}: invalid config: {msg}", path.display()),
            Error::Weights { path, msg } => write!(f, "{}: {msg}", path.display()),
            Error::Tokens { path, msg } => {
                write!(f, "{}: invalid tokens file: {msg}", path.display())
            }
            Error::Checkpoint { path, msg } => write!(f, "{}: checkpoint: {msg}", path.display()),
            Error::Image { path, msg } => write!(f, "{}: cannot read image: {msg}", path.display()),
            Error::Invalid(msg) => f.write_str(msg),
            Error::Tensor(e) => write!(f, "tensor error: {}", one_line(&e.to_string())),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Tensor(e) => Some(e),
            _ => None,
        }
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Tensor(e)
    }
}
