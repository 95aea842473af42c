//! Process-wide switches of the CPU device, read from the environment once per process: an
//! environment variable set to `1` turns one on.

use std::sync::OnceLock;

fn switch(cell: &'static OnceLock<bool>, name: &str) -> bool {
    *cell.get_or_init(|| std::env::var(name).is_ok_and(|v| v == "1"))
}

/// `KILN_Q8_ACTIVATIONS=1` or `=0`: overrides every executable's choice
/// ([`crate::CpuExecutable::quantize_activations`]) of how few-row products with
/// block-quantized weights (decode) multiply: `1` quantizes their activations to 8 bits per
/// block for integer dots, as llama.cpp does (about 0.4% RMS per product); `0` keeps the
/// fused f32-activation dots (exact to f32 rounding). `None` when unset. Test suites and
/// benches run whole on one route with it.
pub fn q8_activations_override() -> Option<bool> {
    static CELL: OnceLock<Option<bool>> = OnceLock::new();
    *CELL.get_or_init(|| match std::env::var("KILN_Q8_ACTIVATIONS").as_deref() {
        Ok("1") => Some(true),
        Ok("0") => Some(false),
        _ => None,
    })
}

/// Whether `KILN_Q8_ACTIVATIONS=1` forces the 8-bit-activation route on every executable
/// (also those built to multiply exactly, the default): tests read it to pick their
/// tolerances.
pub fn q8_activations() -> bool {
    q8_activations_override() == Some(true)
}

/// `KILN_PROFILE=1`: executables time every launch and print a per-op table when dropped
/// (see `profile.rs`).
pub fn profile() -> bool {
    static CELL: OnceLock<bool> = OnceLock::new();
    switch(&CELL, "KILN_PROFILE")
}
