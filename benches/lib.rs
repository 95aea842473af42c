//! Benchmarks live in `benches/benches/`; see `benches/README.md` for what they measure and how
//! to run them.
