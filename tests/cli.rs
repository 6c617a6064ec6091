//! The `strata` binary.
