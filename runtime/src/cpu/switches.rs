//! Process-wide switches of the CPU device, read from the environment once per process: an
//! environment variable set to `1` turns one on.

use std::sync::OnceLock;

fn switch(cell: &'static OnceLock<bool>, name: &str) -> bool {
    *cell.get_or_init(|| std::env::var(name).is_ok_and(|v| v == "1"))
}

/// `KILN_Q8_ACTIVATIONS=1`: few-row products with block-quantized weights (decode) quantize
/// their activations to 8 bits per block and use integer dots, as llama.cpp does (about
/// 0.4% RMS per product), instead of the fused f32-activation dots (exact to f32 rounding).
/// Kept for comparison; tests and benches read it to know which route ran.
pub fn q8_activations() -> bool {
    static CELL: OnceLock<bool> = OnceLock::new();
    switch(&CELL, "KILN_Q8_ACTIVATIONS")
}

/// `KILN_PROFILE=1`: executables time every launch and print a per-op table when dropped
/// (see `profile.rs`).
pub fn profile() -> bool {
    static CELL: OnceLock<bool> = OnceLock::new();
    switch(&CELL, "KILN_PROFILE")
}
