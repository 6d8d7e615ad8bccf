//! Helpers for the benchmarks in `benchmarks/`; see `BENCHMARKS.md`.
