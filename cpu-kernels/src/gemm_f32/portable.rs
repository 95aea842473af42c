//! Portable f32 NT GEMM: 4-column tiles of dot products with eight-lane partial sums.

/// Portable `C = A · Bᵀ`; see [`crate::gemm_nt_f32`] for the contract.
///
/// # Safety
/// As [`crate::gemm_nt_f32`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_nt(
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
    for i in 0..m {
        // SAFETY: row `i < m` of A holds `k` readable f32 (caller contract).
        let ar = unsafe { std::slice::from_raw_parts(a.add(i * lda), k) };
        let mut j = 0;
        while j + 4 <= n {
            // SAFETY: rows `j..j + 4 < n` of B hold `k` readable f32 each.
            let br: [&[f32]; 4] = std::array::from_fn(|t| unsafe {
                std::slice::from_raw_parts(b.add((j + t) * ldb), k)
            });
            let mut acc = [[0.0f32; 8]; 4];
            let chunks = k / 8;
            for q in 0..chunks {
                let x = &ar[q * 8..q * 8 + 8];
                for t in 0..4 {
                    let y = &br[t][q * 8..q * 8 + 8];
                    for l in 0..8 {
                        acc[t][l] += x[l] * y[l];
                    }
                }
            }
            for t in 0..4 {
                let mut s = reduce8(&acc[t]);
                for p in chunks * 8..k {
                    s += ar[p] * br[t][p];
                }
                // SAFETY: element (i, j + t) of C is writable (caller contract).
                unsafe { *c.add(i * ldc + j + t) = s };
            }
            j += 4;
        }
        while j < n {
            // SAFETY: row `j < n` of B is readable, element (i, j) of C writable.
            unsafe {
                *c.add(i * ldc + j) = crate::dot_f32::portable(k, ar.as_ptr(), b.add(j * ldb));
            }
            j += 1;
        }
    }
}

/// Pairwise sum of eight partial sums.
#[inline(always)]
fn reduce8(v: &[f32; 8]) -> f32 {
    ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]))
}
