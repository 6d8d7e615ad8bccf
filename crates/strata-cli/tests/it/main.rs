//! The strata integration tests: one binary, driving the real `strata` executable.

mod common;
mod checks;
mod curate;
mod profile;
mod shards;
mod spec_errors;
mod source_errors;
