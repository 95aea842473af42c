//! Shared test helpers: a small deterministic RNG and random valid quantized blocks.
#![allow(dead_code)]

use kiln_cpu_kernels::QuantType;

/// SplitMix64: small, deterministic, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-1, 1)`.
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// `k` elements of random valid `w` blocks: random quant bytes, finite random scales.
pub fn random_row(rng: &mut Rng, w: QuantType, k: usize) -> Vec<u8> {
    let mut row = rng.bytes(w.bytes_for(k).unwrap());
    for block in row.chunks_exact_mut(w.block_bytes()) {
        for &off in w.f16_scale_offsets() {
            let v = half::f16::from_f32(rng.uniform() * 0.05);
            block[off..off + 2].copy_from_slice(&v.to_bits().to_le_bytes());
        }
        if w == QuantType::Q8_K {
            block[..4].copy_from_slice(&(rng.uniform() * 0.01).to_le_bytes());
        }
    }
    row
}

/// Dequantizes a whole row with the reference dequantization of `kiln-ir`.
pub fn dequant(w: QuantType, bytes: &[u8]) -> Vec<f32> {
    kiln_ir::quant::dequantize_to_vec(w, bytes).unwrap()
}
