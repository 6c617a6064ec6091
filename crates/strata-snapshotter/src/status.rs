//! Store errors as the gRPC codes containerd's `errdefs` turns back into its own
//! (`NotFound`, `AlreadyExists`, `FailedPrecondition`, `InvalidArgument`); the message
//! keeps the store's words (which snapshot, why).

use strata_store::Error;
use tonic::{Code, Status};

pub(crate) fn from_store(e: &Error) -> Status {
    let code = match e {
        Error::NotFound { .. } => Code::NotFound,
        Error::AlreadyExists(_) => Code::AlreadyExists,
        // Wrong kind, has children, mounted, an image's top layer: the state forbids it.
        Error::Snapshot { .. } => Code::FailedPrecondition,
        Error::Options(_) => Code::InvalidArgument,
        _ => Code::Unknown,
    };
    Status::new(code, error_chain(e))
}

/// The error and its sources, as one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
