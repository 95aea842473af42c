//! `extern "C"` entry points for compiled code, and their symbol table.
//!
//! JIT-compiled or ahead-of-time compiled kernels call these by name. Quantized types are
//! passed as their GGUF type id ([`QuantType::gguf_type_id`]); an unknown id aborts the
//! process (a panic cannot unwind out of an `extern "C"` function). The contracts are
//! those of the Rust functions each wraps.

use kiln_ir::quant::QuantType;

fn quant_type(id: u32) -> QuantType {
    QuantType::from_gguf_type_id(id)
        .unwrap_or_else(|| panic!("kiln-cpu-kernels: unknown GGUF quantized type id {id}"))
}

/// [`crate::gemm_nt_f32`] by symbol name.
///
/// # Safety
/// As [`crate::gemm_nt_f32`].
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn kiln_gemm_nt_f32(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
) {
    // SAFETY: forwarded contract.
    unsafe { crate::gemm_nt_f32(m, n, k, a, lda, b, ldb, c, ldc) }
}

/// [`crate::dot_f32`] by symbol name.
///
/// # Safety
/// As [`crate::dot_f32`].
#[no_mangle]
pub unsafe extern "C" fn kiln_dot_f32(n: usize, a: *const f32, b: *const f32) -> f32 {
    // SAFETY: forwarded contract.
    unsafe { crate::dot_f32(n, a, b) }
}

/// [`crate::vec_dot_q`] by symbol name, `w` as a GGUF type id.
///
/// # Safety
/// As [`crate::vec_dot_q`].
#[no_mangle]
pub unsafe extern "C" fn kiln_vec_dot_q(
    w: u32,
    k: usize,
    w_row: *const u8,
    act_row: *const u8,
) -> f32 {
    // SAFETY: forwarded contract.
    unsafe { crate::vec_dot_q(quant_type(w), k, w_row, act_row) }
}

/// [`crate::quantize_activations`] by symbol name: quantizes the `k` f32 at `x` into
/// `activation_type(w).bytes_for(k)` bytes at `out`.
///
/// # Safety
/// `x` must be readable for `k` f32 and `out` writable for the output bytes, not
/// overlapping.
#[no_mangle]
pub unsafe extern "C" fn kiln_quantize_activations(w: u32, x: *const f32, k: usize, out: *mut u8) {
    let w = quant_type(w);
    let bytes = crate::activation_type(w).bytes_for(k).unwrap_or_else(|| {
        panic!("kiln_quantize_activations: {k} is not a whole number of blocks")
    });
    // SAFETY: the caller guarantees `k` readable f32 and `bytes` writable bytes.
    let (x, out) = unsafe {
        (
            std::slice::from_raw_parts(x, k),
            std::slice::from_raw_parts_mut(out, bytes),
        )
    };
    crate::quantize_activations(w, x, out);
}

/// [`crate::gemm_nt_q`] by symbol name, `w` as a GGUF type id.
///
/// # Safety
/// As [`crate::gemm_nt_q`].
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn kiln_gemm_nt_q(
    w: u32,
    m: usize,
    n: usize,
    k: usize,
    act: *const u8,
    a_stride: usize,
    wq: *const u8,
    w_stride: usize,
    c: *mut f32,
    ldc: usize,
) {
    // SAFETY: forwarded contract.
    unsafe { crate::gemm_nt_q(quant_type(w), m, n, k, act, a_stride, wq, w_stride, c, ldc) }
}

/// [`crate::gemm_nt_qf32`] by symbol name, `w` as a GGUF type id.
///
/// # Safety
/// As [`crate::gemm_nt_qf32`].
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn kiln_gemm_nt_qf32(
    w: u32,
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    wq: *const u8,
    w_stride: usize,
    c: *mut f32,
    ldc: usize,
) {
    // SAFETY: forwarded contract.
    unsafe { crate::gemm_nt_qf32(quant_type(w), m, n, k, a, lda, wq, w_stride, c, ldc) }
}

/// [`crate::dequantize_row`] by symbol name, `w` as a GGUF type id.
///
/// # Safety
/// As [`crate::dequantize_row`].
#[no_mangle]
pub unsafe extern "C" fn kiln_dequantize_row(w: u32, k: usize, src: *const u8, dst: *mut f32) {
    // SAFETY: forwarded contract.
    unsafe { crate::dequantize_row(quant_type(w), k, src, dst) }
}

/// Every exported `extern "C"` symbol with its address, for a JIT to register
/// (`kiln_gemm_nt_f32`, `kiln_dot_f32`, `kiln_vec_dot_q`, `kiln_quantize_activations`,
/// `kiln_gemm_nt_q`, `kiln_gemm_nt_qf32`, `kiln_dequantize_row`).
pub fn symbols() -> Vec<(&'static str, *const u8)> {
    vec![
        ("kiln_gemm_nt_f32", kiln_gemm_nt_f32 as *const u8),
        ("kiln_dot_f32", kiln_dot_f32 as *const u8),
        ("kiln_vec_dot_q", kiln_vec_dot_q as *const u8),
        (
            "kiln_quantize_activations",
            kiln_quantize_activations as *const u8,
        ),
        ("kiln_gemm_nt_q", kiln_gemm_nt_q as *const u8),
        ("kiln_gemm_nt_qf32", kiln_gemm_nt_qf32 as *const u8),
        ("kiln_dequantize_row", kiln_dequantize_row as *const u8),
    ]
}
