//! Tests that need root and overlayfs: they run on this project's machines and in CI,
//! and elsewhere print why they were skipped.
