//! Images written by the tests: strata-testkit's fixtures.

pub use strata_testkit::images::*;
