//! End-to-end tests live in `tests/tests/`; this crate has no library code of its own. They sit
//! in a crate of their own so that the compiler's tests can use models without the compiler
//! depending (even for tests) on crates that depend on it.
