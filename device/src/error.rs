//! Errors of verbs commands: what the caller (a guest driver, a test) did wrong.
//!
//! Data-path errors are not here: they become completion statuses, NAKs or async events.

use thiserror::Error;

/// Why a verbs command was refused. Each maps onto an errno a driver would return.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum VerbsError {
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("{0} limit of this VF reached")]
    Exhausted(&'static str),
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("{0} is still in use")]
    Busy(&'static str),
    #[error("QP state does not allow this: {0}")]
    BadState(&'static str),
    #[error("work queue full")]
    QueueFull,
    #[error("address outside guest memory")]
    Fault,
    #[error("PF has no free VF (totalvfs reached)")]
    NoVf,
}

impl VerbsError {
    /// The Linux errno a verbs provider would return for this error.
    pub fn errno(self) -> i32 {
        match self {
            VerbsError::NotFound(_) => 2,   // ENOENT
            VerbsError::Exhausted(_) => 12, // ENOMEM
            VerbsError::Invalid(_) => 22,   // EINVAL
            VerbsError::Busy(_) => 16,      // EBUSY
            VerbsError::BadState(_) => 22,  // EINVAL
            VerbsError::QueueFull => 12,    // ENOMEM, as mlx5 and rxe return
            VerbsError::Fault => 14,        // EFAULT
            VerbsError::NoVf => 28,         // ENOSPC
        }
    }
}

pub type VerbsResult<T> = Result<T, VerbsError>;
