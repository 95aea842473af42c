//! GGUF block-quantized types: their byte layouts and dequantization to f32.
//!
//! A block-quantized tensor stores its elements in fixed-size blocks along its last axis:
//! [`QuantType::block_size`] elements take [`QuantType::block_bytes`] bytes. The layouts are
//! those of the GGUF file format (ggml), bit for bit, so weights are used straight from a
//! memory-mapped file.
//!
//! [`dequantize`] is the reference dequantization: one simple, obviously-right loop per type,
//! checked bit for bit against the `gguf` Python package (`ir/tests/quant.rs`). Fast kernels
//! belong to backends and are tested against this.
//!
//! Exactness: every type computes in f32, as ggml and gguf-py do, and the result does not
//! depend on evaluation order or on fused multiply-add. Apart from `Q8_K` the scales are f16
//! (11 significant bits) and the integer factors small, so every product is exact in f32's
//! 24 bits (at most 11 + 7 + 5 = 23 bits, for `Q6_K`'s `d * i8 scale * 6-bit quant`) and
//! cannot overflow. The only roundings are the final `+ m` (`Q4_1`, `Q5_1`) or `- dmin * mn`
//! (`Q2_K`, `Q4_K`, `Q5_K`), each a single rounding of an exact sum, and `Q8_K`'s single
//! `f32 * i8` multiply (which can overflow to infinity for a huge `d`). So each value is the
//! correctly rounded f32 of the exact formula, and any f32 kernel computing the same formula
//! matches this oracle bit for bit.

use std::fmt;

mod q2_k;
mod q3_k;
mod q4_0;
mod q4_1;
mod q4_k;
mod q5_0;
mod q5_1;
mod q5_k;
mod q6_k;
mod q8_0;
mod q8_k;
mod scales;

/// A GGUF block-quantized element type.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuantType {
    /// 32 elements: f16 scale `d`, 16 bytes of 4-bit values; `x = d * (q - 8)`.
    Q4_0,
    /// 32 elements: f16 scale `d`, f16 minimum `m`, 16 bytes of 4-bit values; `x = d * q + m`.
    Q4_1,
    /// 32 elements: f16 `d`, 4 bytes of high bits, 16 bytes of low nibbles; `x = d * (q - 16)`.
    Q5_0,
    /// 32 elements: f16 `d`, f16 `m`, 4 bytes of high bits, 16 bytes of low nibbles; `x = d * q + m`.
    Q5_1,
    /// 32 elements: f16 `d`, 32 signed bytes; `x = d * q`.
    Q8_0,
    /// 256 elements in 16 sub-blocks of 16 with 4-bit scales and mins, 2-bit values.
    Q2_K,
    /// 256 elements in 16 sub-blocks of 16 with 6-bit scales, 3-bit values (2 low bits + high mask).
    Q3_K,
    /// 256 elements in 8 sub-blocks of 32 with 6-bit scales and mins, 4-bit values.
    Q4_K,
    /// 256 elements in 8 sub-blocks of 32 with 6-bit scales and mins, 5-bit values.
    Q5_K,
    /// 256 elements in 16 sub-blocks of 16 with 8-bit scales, 6-bit values.
    Q6_K,
    /// 256 elements: f32 scale, 256 signed bytes, 16 partial sums (used for activations).
    Q8_K,
}

impl QuantType {
    /// Every block-quantized type, in GGUF type-id order.
    pub const ALL: [QuantType; 11] = [
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
        QuantType::Q2_K,
        QuantType::Q3_K,
        QuantType::Q4_K,
        QuantType::Q5_K,
        QuantType::Q6_K,
        QuantType::Q8_K,
    ];

    /// Elements per block.
    pub const fn block_size(self) -> usize {
        match self {
            QuantType::Q4_0
            | QuantType::Q4_1
            | QuantType::Q5_0
            | QuantType::Q5_1
            | QuantType::Q8_0 => 32,
            _ => 256,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            QuantType::Q4_0 => 18,
            QuantType::Q4_1 => 20,
            QuantType::Q5_0 => 22,
            QuantType::Q5_1 => 24,
            QuantType::Q8_0 => 34,
            QuantType::Q2_K => 84,
            QuantType::Q3_K => 110,
            QuantType::Q4_K => 144,
            QuantType::Q5_K => 176,
            QuantType::Q6_K => 210,
            QuantType::Q8_K => 292,
        }
    }

    /// The type's id in the GGUF file format (`ggml_type`).
    pub const fn gguf_type_id(self) -> u32 {
        match self {
            QuantType::Q4_0 => 2,
            QuantType::Q4_1 => 3,
            QuantType::Q5_0 => 6,
            QuantType::Q5_1 => 7,
            QuantType::Q8_0 => 8,
            QuantType::Q2_K => 10,
            QuantType::Q3_K => 11,
            QuantType::Q4_K => 12,
            QuantType::Q5_K => 13,
            QuantType::Q6_K => 14,
            QuantType::Q8_K => 15,
        }
    }

    /// The quantized type with this GGUF type id, if Kiln knows it.
    pub fn from_gguf_type_id(id: u32) -> Option<QuantType> {
        QuantType::ALL.into_iter().find(|q| q.gguf_type_id() == id)
    }

    /// Lower-case name as used in Kiln's text format (`q4_0`, `q6_k`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            QuantType::Q4_0 => "q4_0",
            QuantType::Q4_1 => "q4_1",
            QuantType::Q5_0 => "q5_0",
            QuantType::Q5_1 => "q5_1",
            QuantType::Q8_0 => "q8_0",
            QuantType::Q2_K => "q2_k",
            QuantType::Q3_K => "q3_k",
            QuantType::Q4_K => "q4_k",
            QuantType::Q5_K => "q5_k",
            QuantType::Q6_K => "q6_k",
            QuantType::Q8_K => "q8_k",
        }
    }

    /// Parses a name as printed by [`QuantType::name`] (case-insensitive).
    pub fn from_name(name: &str) -> Option<QuantType> {
        QuantType::ALL
            .into_iter()
            .find(|q| q.name().eq_ignore_ascii_case(name))
    }

    /// Byte offsets within a block of its f16 scale fields (`d`, and `dmin`/`m` where the
    /// format has one); empty for Q8_K, whose `d` is an f32 at offset 0. Writers of random
    /// test blocks set these so the scales are finite.
    pub const fn f16_scale_offsets(self) -> &'static [usize] {
        match self {
            QuantType::Q4_0 | QuantType::Q5_0 | QuantType::Q8_0 => &[0],
            QuantType::Q4_1 | QuantType::Q5_1 | QuantType::Q4_K | QuantType::Q5_K => &[0, 2],
            QuantType::Q2_K => &[80, 82],
            QuantType::Q3_K => &[108],
            QuantType::Q6_K => &[208],
            QuantType::Q8_K => &[],
        }
    }

    /// Bytes needed to store `elements` values, or `None` if `elements` is not a whole
    /// number of blocks (or the byte count would overflow `usize`).
    pub fn bytes_for(self, elements: usize) -> Option<usize> {
        if !elements.is_multiple_of(self.block_size()) {
            return None;
        }
        (elements / self.block_size()).checked_mul(self.block_bytes())
    }

    /// Values stored in `bytes` bytes, or `None` if `bytes` is not a whole number of blocks
    /// (or the element count would overflow `usize`).
    pub fn elements_for(self, bytes: usize) -> Option<usize> {
        if !bytes.is_multiple_of(self.block_bytes()) {
            return None;
        }
        (bytes / self.block_bytes()).checked_mul(self.block_size())
    }
}

impl fmt::Display for QuantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a dequantization call was refused. Nothing is written to the output when one is
/// returned.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum QuantError {
    /// The output's element count is not a whole number of blocks.
    #[error("{qt}: {elements} elements is not a whole number of {block_size}-element blocks")]
    PartialBlock {
        qt: QuantType,
        elements: usize,
        block_size: usize,
    },
    /// The byte count is not the one the element count needs.
    #[error("{qt}: {elements} elements take {expected} bytes, got {actual}")]
    ByteLength {
        qt: QuantType,
        elements: usize,
        expected: usize,
        actual: usize,
    },
    /// The byte count is not a whole number of blocks (so no element count fits it).
    #[error("{qt}: {bytes} bytes is not a whole number of {block_bytes}-byte blocks")]
    PartialBlockBytes {
        qt: QuantType,
        bytes: usize,
        block_bytes: usize,
    },
    /// [`dequantize_block`] was given an output that is not exactly one block.
    #[error("{qt}: a block holds {block_size} elements, the output has {elements}")]
    NotOneBlock {
        qt: QuantType,
        elements: usize,
        block_size: usize,
    },
}

/// Dequantizes `bytes`, a whole number of `qt` blocks, into `out`.
///
/// `out.len()` must be a whole number of blocks ([`QuantError::PartialBlock`]) and
/// `bytes.len()` exactly the bytes of that many blocks ([`QuantError::ByteLength`]).
pub fn dequantize(qt: QuantType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    let elements = out.len();
    let expected = qt.bytes_for(elements).ok_or(QuantError::PartialBlock {
        qt,
        elements,
        block_size: qt.block_size(),
    })?;
    if bytes.len() != expected {
        return Err(QuantError::ByteLength {
            qt,
            elements,
            expected,
            actual: bytes.len(),
        });
    }
    let blocks = bytes.chunks_exact(qt.block_bytes());
    let outs = out.chunks_exact_mut(qt.block_size());
    for (block, out) in blocks.zip(outs) {
        dequantize_block(qt, block, out)?;
    }
    Ok(())
}

/// Dequantizes `bytes`, a whole number of `qt` blocks, into a new vector of
/// `bytes.len() / block_bytes * block_size` values ([`QuantError::PartialBlockBytes`] if
/// `bytes.len()` is not a multiple of [`QuantType::block_bytes`]).
pub fn dequantize_to_vec(qt: QuantType, bytes: &[u8]) -> Result<Vec<f32>, QuantError> {
    let elements = qt
        .elements_for(bytes.len())
        .ok_or(QuantError::PartialBlockBytes {
            qt,
            bytes: bytes.len(),
            block_bytes: qt.block_bytes(),
        })?;
    let mut out = vec![0.0; elements];
    dequantize(qt, bytes, &mut out)?;
    Ok(out)
}

/// Dequantizes one block: `block` must be exactly [`QuantType::block_bytes`] bytes
/// ([`QuantError::ByteLength`]) and `out` exactly [`QuantType::block_size`] elements
/// ([`QuantError::NotOneBlock`]).
pub fn dequantize_block(qt: QuantType, block: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    match qt {
        QuantType::Q4_0 => with_block(qt, block, out, q4_0::dequantize_block),
        QuantType::Q4_1 => with_block(qt, block, out, q4_1::dequantize_block),
        QuantType::Q5_0 => with_block(qt, block, out, q5_0::dequantize_block),
        QuantType::Q5_1 => with_block(qt, block, out, q5_1::dequantize_block),
        QuantType::Q8_0 => with_block(qt, block, out, q8_0::dequantize_block),
        QuantType::Q2_K => with_block(qt, block, out, q2_k::dequantize_block),
        QuantType::Q3_K => with_block(qt, block, out, q3_k::dequantize_block),
        QuantType::Q4_K => with_block(qt, block, out, q4_k::dequantize_block),
        QuantType::Q5_K => with_block(qt, block, out, q5_k::dequantize_block),
        QuantType::Q6_K => with_block(qt, block, out, q6_k::dequantize_block),
        QuantType::Q8_K => with_block(qt, block, out, q8_k::dequantize_block),
    }
}

/// Checks the lengths of one block and its output, then runs a type's block function on them
/// as fixed-size arrays (so the type's own indexing cannot go out of bounds).
fn with_block<const BYTES: usize, const SIZE: usize>(
    qt: QuantType,
    block: &[u8],
    out: &mut [f32],
    f: fn(&[u8; BYTES], &mut [f32; SIZE]),
) -> Result<(), QuantError> {
    let elements = out.len();
    let out: &mut [f32; SIZE] = out.try_into().map_err(|_| QuantError::NotOneBlock {
        qt,
        elements,
        block_size: qt.block_size(),
    })?;
    let block: &[u8; BYTES] = block.try_into().map_err(|_| QuantError::ByteLength {
        qt,
        elements,
        expected: qt.block_bytes(),
        actual: block.len(),
    })?;
    f(block, out);
    Ok(())
}

/// A little-endian f16, widened (exactly) to f32.
fn read_f16(bytes: [u8; 2]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes(bytes)).to_f32()
}
