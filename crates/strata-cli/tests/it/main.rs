//! The strata integration tests: one binary, driving the real `strata` executable.

mod checks;
mod common;
mod curate;
mod profile;
mod shards;
mod source_errors;
mod spec_errors;
