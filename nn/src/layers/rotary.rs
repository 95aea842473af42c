//! `RotaryEmbedding`: rotary position embeddings (RoPE), with Hugging Face's half-split layout
//! or GPT-J's interleaved pairs, partial rotation and linear, Llama-3 or per-frequency scaling.

use crate::Tensor;
use kiln_ir::{DType, Dim};
use std::panic::Location;
use std::sync::Arc;

/// Which dims of a head are rotated together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RopeConvention {
    /// Dim `i` pairs with dim `i + rotary_dim / 2` (Hugging Face Llama's `rotate_half`).
    #[default]
    HalfSplit,
    /// Dims `2i` and `2i + 1` form a pair (GPT-J, the original LLaMA and Meta's checkpoints).
    Interleaved,
}

/// How the inverse frequencies are rescaled for longer contexts.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum RopeScaling {
    /// Plain RoPE.
    #[default]
    None,
    /// Every frequency divided by `factor` (Hugging Face's `"linear"`, position
    /// interpolation).
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1's scheme (Hugging Face's `"llama3"`): low frequencies divided by `factor`,
    /// high ones kept, the band between interpolated smoothly.
    Llama3 {
        /// The divisor of the low frequencies (8 for Llama 3.1).
        factor: f64,
        /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are scaled.
        low_freq_factor: f64,
        /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context length the model was pretrained with (8192 for Llama 3).
        original_max_position_embeddings: usize,
    },
    /// Frequency `i` divided by `factors[i]` (one per rotated pair): how llama.cpp's GGUF
    /// files carry Llama 3.1's scaling (the `rope_freqs.weight` tensor), already evaluated.
    Factors(Arc<[f32]>),
}

impl RopeScaling {
    /// Checks `factors` for [`RopeScaling::Factors`] over `pairs` rotated pairs: one per
    /// pair, each finite and positive.
    pub fn check_factors(factors: &[f32], pairs: usize) -> Result<(), String> {
        if factors.len() != pairs {
            return Err(format!(
                "RoPE frequency factors: {} given, {pairs} needed (one per rotated pair of {} \
                 dims)",
                factors.len(),
                2 * pairs
            ));
        }
        match factors
            .iter()
            .enumerate()
            .find(|(_, x)| !(x.is_finite() && **x > 0.0))
        {
            Some((i, x)) => Err(format!(
                "RoPE frequency factor {i} is {x}; factors must be finite and positive"
            )),
            None => Ok(()),
        }
    }
}

/// Configuration of a [`RotaryEmbedding`].
#[derive(Clone, Debug, PartialEq)]
pub struct RotaryConfig {
    /// Size of each attention head (the last axis of the rotated tensors).
    pub head_dim: usize,
    /// How many leading dims of each head are rotated (even, at most `head_dim`); the rest
    /// pass through (GPT-NeoX's and Phi's `partial_rotary_factor`).
    pub rotary_dim: usize,
    /// The base of the frequencies (`rope_theta`, 10000 for Llama 2).
    pub theta: f64,
    /// Pairing of the rotated dims.
    pub convention: RopeConvention,
    /// Frequency scaling.
    pub scaling: RopeScaling,
}

impl RotaryConfig {
    /// Half-split RoPE over whole heads, without scaling.
    pub fn new(head_dim: usize, theta: f64) -> RotaryConfig {
        RotaryConfig {
            head_dim,
            rotary_dim: head_dim,
            theta,
            convention: RopeConvention::HalfSplit,
            scaling: RopeScaling::None,
        }
    }

    /// Rotates only the first `rotary_dim` dims of each head.
    pub fn partial(self, rotary_dim: usize) -> RotaryConfig {
        RotaryConfig { rotary_dim, ..self }
    }

    /// The same with another pairing convention.
    pub fn with_convention(self, convention: RopeConvention) -> RotaryConfig {
        RotaryConfig { convention, ..self }
    }

    /// The same with frequency scaling.
    pub fn with_scaling(self, scaling: RopeScaling) -> RotaryConfig {
        RotaryConfig { scaling, ..self }
    }

    /// The `rotary_dim / 2` inverse frequencies as f32, computed as Hugging Face's
    /// `rope_init_fn`s do in float32: `1 / theta^(2i / rotary_dim)`, then scaled.
    pub fn inv_freq(&self) -> Vec<f32> {
        let dim = self.rotary_dim;
        (0..dim / 2)
            .map(|i| {
                // Each step rounded to f32 as torch does: the exponent, the power, the
                // reciprocal.
                let e = (2 * i) as f32 / dim as f32;
                let p = self.theta.powf(f64::from(e)) as f32;
                let inv = (1.0 / f64::from(p)) as f32;
                self.scale(i, inv)
            })
            .collect()
    }

    /// Inverse frequency `i` after the configured scaling.
    fn scale(&self, i: usize, inv: f32) -> f32 {
        match self.scaling {
            RopeScaling::None => inv,
            RopeScaling::Linear { factor } => (f64::from(inv) / factor) as f32,
            // A missing factor is reported by `check` when the layer is used.
            RopeScaling::Factors(ref factors) => {
                (f64::from(inv) / f64::from(factors.get(i).copied().unwrap_or(1.0))) as f32
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let inv = f64::from(inv);
                let old = original_max_position_embeddings as f64;
                let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
                let wavelen = 2.0 * std::f64::consts::PI / inv;
                let out = if wavelen < high_wavelen {
                    inv
                } else if wavelen > low_wavelen {
                    inv / factor
                } else {
                    let smooth =
                        (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * inv / factor + smooth * inv
                };
                out as f32
            }
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.rotary_dim == 0
            || !self.rotary_dim.is_multiple_of(2)
            || self.rotary_dim > self.head_dim
        {
            return Err(format!(
                "RoPE rotary_dim must be even, positive and at most head_dim {}, got {}",
                self.head_dim, self.rotary_dim
            ));
        }
        match &self.scaling {
            RopeScaling::Factors(f) => RopeScaling::check_factors(f, self.rotary_dim / 2),
            _ => Ok(()),
        }
    }
}

/// Rotary position embeddings applied to queries or keys `[.., heads, seq, head_dim]`.
///
/// The inverse frequencies are computed when the layer is built and enter the graph as an f32
/// `constant` (not a parameter: they are not in the `state_dict`). Positions are
/// `arange(seq) + offset` (the offset is `past` for a decode step over a KV cache) or come from
/// a position-ids tensor. Angles and their cosines and sines are computed in f32, as Hugging
/// Face does, then cast to the input's dtype.
#[crate::model(config = RotaryConfig)]
pub struct RotaryEmbedding {
    /// The configuration.
    #[config(cfg.clone())]
    pub config: RotaryConfig,
    /// `rotary_dim / 2` inverse frequencies.
    #[config(cfg.inv_freq())]
    inv_freq: Vec<f32>,
}

impl RotaryEmbedding {
    /// The inverse frequencies.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// Rotates `x` (`[.., heads, seq, head_dim]`) for positions `offset, offset + 1, ...`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor, offset: impl Into<Dim>) -> Tensor {
        let loc = Location::caller();
        let offset = offset.into();
        let pos = Tensor::arange(x.size(-2), DType::F32);
        let pos = if offset == 0 {
            pos
        } else {
            pos + Tensor::dim_value(offset, DType::F32)
        };
        self.rotate(x, &pos, loc)
    }

    /// Rotates `x` (`[batch, heads, seq, head_dim]` or `[heads, seq, head_dim]`) for the
    /// given positions: integer or float, `[seq]` (shared by the batch) or `[batch, seq]`.
    #[track_caller]
    pub fn forward_with_positions(&self, x: &Tensor, positions: &Tensor) -> Tensor {
        let loc = Location::caller();
        let pos = positions.to(DType::F32);
        let pos = match pos.rank() {
            1 => pos,
            2 => pos.unsqueeze(1), // [batch, 1, seq]: broadcast over the heads
            _ => {
                return x.usage(
                    loc,
                    format!(
                        "RoPE positions must be [seq] or [batch, seq], got {}",
                        positions.ty()
                    ),
                )
            }
        };
        self.rotate(x, &pos, loc)
    }

    /// `pos` is `[.., seq]`, broadcastable against `x` without its last axis.
    #[track_caller]
    fn rotate(&self, x: &Tensor, pos: &Tensor, loc: &Location<'_>) -> Tensor {
        let cfg = &self.config;
        if let Err(message) = cfg.check() {
            return x.usage(loc, message);
        }
        if x.rank() < 2 || x.size(-1) != cfg.head_dim as i64 {
            return x.usage(
                loc,
                format!(
                    "RoPE expects [.., seq, {}] (head_dim), got {}",
                    cfg.head_dim,
                    x.ty()
                ),
            );
        }
        let (rd, half) = (cfg.rotary_dim as i64, cfg.rotary_dim as i64 / 2);
        let table = kiln_ir::Tensor::from_vec(vec![half as usize], self.inv_freq.clone())
            .expect("rotary_dim / 2 inverse frequencies");
        let freqs = pos.unsqueeze(-1) * Tensor::constant(table); // [.., seq, half]
        let dtype = x.dtype();
        let (x_rot, x_pass) = if cfg.rotary_dim < cfg.head_dim {
            (
                x.slice(-1, 0, rd, 1),
                Some(x.slice(-1, rd, cfg.head_dim as i64, 1)),
            )
        } else {
            (x.clone(), None)
        };
        let out = match cfg.convention {
            RopeConvention::HalfSplit => {
                let emb = Tensor::cat(&[freqs.clone(), freqs], -1);
                let (cos, sin) = (emb.cos().to(dtype), emb.sin().to(dtype));
                let x1 = x_rot.slice(-1, 0, half, 1);
                let x2 = x_rot.slice(-1, half, rd, 1);
                let rotated = Tensor::cat(&[x2.neg(), x1], -1);
                &x_rot * &cos + &rotated * &sin
            }
            RopeConvention::Interleaved => {
                let (cos, sin) = (freqs.cos().to(dtype), freqs.sin().to(dtype));
                let even = x_rot.slice(-1, 0, rd, 2);
                let odd = x_rot.slice(-1, 1, rd, 2);
                let out_even = &even * &cos - &odd * &sin;
                let out_odd = &odd * &cos + &even * &sin;
                Tensor::stack(&[out_even, out_odd], -1).flatten(-2, -1)
            }
        };
        match x_pass {
            Some(p) => Tensor::cat(&[out, p], -1),
            None => out,
        }
    }
}
