//! GGUF block-quantized types: their byte layouts and dequantization to f32.
//!
//! A block-quantized tensor stores its elements in fixed-size blocks along its last axis:
//! [`QuantType::block_size`] elements take [`QuantType::block_bytes`] bytes. The layouts are
//! those of the GGUF file format (ggml), bit for bit, so weights are used straight from a
//! memory-mapped file.

use std::fmt;

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

    /// Bytes needed to store `elements` values, or `None` if `elements` is not a whole
    /// number of blocks.
    pub fn bytes_for(self, elements: usize) -> Option<usize> {
        (elements.checked_rem(self.block_size()) == Some(0))
            .then(|| elements / self.block_size() * self.block_bytes())
    }
}

impl fmt::Display for QuantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why blocks could not be dequantized.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum QuantError {
    /// Placeholder until the dequantization module lands (being written on a branch).
    #[error("{qtype}: {bytes} bytes is not a whole number of {block_bytes}-byte blocks")]
    Length {
        /// The type.
        qtype: QuantType,
        /// Bytes given.
        bytes: usize,
        /// Bytes per block.
        block_bytes: usize,
    },
}

/// Dequantizes whole blocks (temporary; replaced by the dequantization module).
pub fn dequantize_to_vec(qt: QuantType, bytes: &[u8]) -> Result<Vec<f32>, QuantError> {
    Err(QuantError::Length {
        qtype: qt,
        bytes: bytes.len(),
        block_bytes: qt.block_bytes(),
    })
}
