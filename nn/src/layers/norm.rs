//! Normalization layers: `LayerNorm`, `RMSNorm` (Hugging Face Llama's) and `GroupNorm`.
//!
//! f16 and bf16 inputs are normalized in f32 and the result is cast back, as PyTorch's kernels
//! and Hugging Face's `LlamaRMSNorm` do.

use crate::tensor::Tensor;
use crate::Param;
use kiln_ir::{DType, Dim, Shape};
use std::panic::Location;

/// The dtype statistics are computed in: f32 for f16/bf16, else the input's.
fn compute_dtype(d: DType) -> DType {
    match d {
        DType::F16 | DType::BF16 => DType::F32,
        other => other,
    }
}

/// PyTorch's type promotion for two float dtypes (f16 with bf16 gives f32).
fn promote(a: DType, b: DType) -> DType {
    let rank = |d: DType| match d {
        DType::F16 | DType::BF16 => 1,
        DType::F32 => 2,
        DType::F64 => 3,
        _ => 0,
    };
    if a == b {
        a
    } else if rank(a) == rank(b) {
        DType::F32
    } else if rank(a) > rank(b) {
        a
    } else {
        b
    }
}

/// Configuration of a [`LayerNorm`] layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNormConfig {
    /// The trailing dims normalized over (PyTorch's `normalized_shape`).
    pub normalized_shape: Vec<usize>,
    /// Added to the variance.
    pub eps: f64,
    /// Whether there is a weight (and, with `bias`, a bias).
    pub elementwise_affine: bool,
    /// Whether there is a bias (only with `elementwise_affine`).
    pub bias: bool,
}

impl LayerNormConfig {
    /// Normalizes over the last dim, of size `dim`; eps 1e-5, weight and bias.
    pub fn new(dim: usize) -> LayerNormConfig {
        LayerNormConfig::over(&[dim])
    }

    /// Normalizes over the trailing dims `shape`; eps 1e-5, weight and bias.
    pub fn over(shape: &[usize]) -> LayerNormConfig {
        LayerNormConfig {
            normalized_shape: shape.to_vec(),
            eps: 1e-5,
            elementwise_affine: true,
            bias: true,
        }
    }

    /// With this eps.
    pub fn eps(self, eps: f64) -> LayerNormConfig {
        LayerNormConfig { eps, ..self }
    }

    /// Without weight and bias.
    pub fn no_affine(self) -> LayerNormConfig {
        LayerNormConfig {
            elementwise_affine: false,
            ..self
        }
    }

    /// With a weight but no bias.
    pub fn no_bias(self) -> LayerNormConfig {
        LayerNormConfig {
            bias: false,
            ..self
        }
    }
}

/// `torch.nn.LayerNorm`: `(x − mean) / sqrt(var + eps) · weight + bias`, with the mean and
/// the (biased) variance over the trailing `normalized_shape` dims.
#[crate::model(config = LayerNormConfig)]
pub struct LayerNorm {
    /// `normalized_shape`, if `elementwise_affine`.
    #[param(shape = cfg.normalized_shape.clone(), when = cfg.elementwise_affine)]
    pub weight: Option<Param>,
    /// `normalized_shape`, if `elementwise_affine` and `bias`.
    #[param(shape = cfg.normalized_shape.clone(), when = cfg.elementwise_affine && cfg.bias)]
    pub bias: Option<Param>,
    /// The normalized trailing dims.
    #[config(cfg.normalized_shape.clone())]
    pub normalized_shape: Vec<usize>,
    /// Added to the variance.
    #[config(cfg.eps)]
    pub eps: f64,
}

impl LayerNorm {
    /// Normalizes `[.., *normalized_shape]`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let loc = Location::caller();
        let k = self.normalized_shape.len();
        let shape = x.shape();
        let trailing_ok = k >= 1
            && shape.rank() >= k
            && shape.dims()[shape.rank() - k..]
                .iter()
                .zip(&self.normalized_shape)
                .all(|(d, &n)| *d == Dim::from(n));
        if !trailing_ok {
            return x.usage(
                loc,
                format!(
                    "layer_norm: input {} does not end in the normalized shape {:?}",
                    x.ty(),
                    self.normalized_shape
                ),
            );
        }
        let dims: Vec<isize> = (-(k as isize)..0).collect();
        let in_dtype = x.dtype();
        let dtype = compute_dtype(in_dtype);
        let xc = x.to(dtype);
        let centered = &xc - xc.mean(dims.clone(), true);
        let var = centered.square().mean(dims, true);
        let mut y = centered * (var + self.eps).rsqrt();
        if let Some(w) = &self.weight {
            y = y * w.val().to(dtype);
        }
        if let Some(b) = &self.bias {
            y = y + b.val().to(dtype);
        }
        y.to(in_dtype)
    }
}

/// Configuration of an [`RMSNorm`] layer.
#[derive(Clone, Debug, PartialEq)]
pub struct RMSNormConfig {
    /// Size of the normalized last dim.
    pub hidden_size: usize,
    /// Added to the mean square (Llama: 1e-6 or 1e-5).
    pub eps: f64,
}

impl RMSNormConfig {
    /// eps 1e-6 (Hugging Face's `LlamaRMSNorm` default).
    pub fn new(hidden_size: usize) -> RMSNormConfig {
        RMSNormConfig {
            hidden_size,
            eps: 1e-6,
        }
    }

    /// With this eps.
    pub fn eps(self, eps: f64) -> RMSNormConfig {
        RMSNormConfig { eps, ..self }
    }
}

/// Hugging Face's `LlamaRMSNorm`: in f32, `x · rsqrt(mean(x²) + eps)` over the last dim,
/// cast back to the input dtype, then multiplied by `weight` (the product takes the wider of
/// the two dtypes, as in PyTorch).
#[crate::model(config = RMSNormConfig)]
#[allow(clippy::upper_case_acronyms)]
pub struct RMSNorm {
    /// `[hidden_size]`.
    #[param(shape = [cfg.hidden_size])]
    pub weight: Param,
    /// Size of the normalized last dim.
    #[config(cfg.hidden_size)]
    pub hidden_size: usize,
    /// Added to the mean square.
    #[config(cfg.eps)]
    pub eps: f64,
}

impl RMSNorm {
    /// Normalizes `[.., hidden_size]`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let loc = Location::caller();
        if x.rank() == 0 || x.shape()[x.rank() - 1] != Dim::from(self.hidden_size) {
            return x.usage(
                loc,
                format!(
                    "rms_norm: input {} does not end in the normalized size {}",
                    x.ty(),
                    self.hidden_size
                ),
            );
        }
        let in_dtype = x.dtype();
        let h = x.to(DType::F32);
        let variance = h.square().mean(-1, true);
        let h = (&h * (variance + self.eps).rsqrt()).to(in_dtype);
        let w = self.weight.val();
        let out = promote(w.dtype(), in_dtype);
        w.to(out) * h.to(out)
    }
}

/// Configuration of a [`GroupNorm`] layer.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupNormConfig {
    /// Number of groups the channels are split into.
    pub num_groups: usize,
    /// Channels (dim 1 of the input); a multiple of `num_groups`.
    pub num_channels: usize,
    /// Added to the variance.
    pub eps: f64,
    /// Whether there are a per-channel weight and bias.
    pub affine: bool,
}

impl GroupNormConfig {
    /// eps 1e-5, with weight and bias.
    pub fn new(num_groups: usize, num_channels: usize) -> GroupNormConfig {
        GroupNormConfig {
            num_groups,
            num_channels,
            eps: 1e-5,
            affine: true,
        }
    }

    /// With this eps.
    pub fn eps(self, eps: f64) -> GroupNormConfig {
        GroupNormConfig { eps, ..self }
    }

    /// Without weight and bias.
    pub fn no_affine(self) -> GroupNormConfig {
        GroupNormConfig {
            affine: false,
            ..self
        }
    }
}

/// `torch.nn.GroupNorm`: the input `[N, C, *]` is normalized per sample and per group of
/// `C / num_groups` channels (mean and biased variance over the group's channels and every
/// spatial position), then scaled and shifted per channel.
#[crate::model(config = GroupNormConfig)]
pub struct GroupNorm {
    /// `[num_channels]`, if `affine`.
    #[param(shape = [cfg.num_channels], when = cfg.affine)]
    pub weight: Option<Param>,
    /// `[num_channels]`, if `affine`.
    #[param(shape = [cfg.num_channels], when = cfg.affine)]
    pub bias: Option<Param>,
    /// The configuration.
    #[config(cfg.clone())]
    pub config: GroupNormConfig,
}

impl GroupNorm {
    /// Normalizes `[N, num_channels, *]`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let loc = Location::caller();
        let (g, c) = (self.config.num_groups, self.config.num_channels);
        if g == 0 || !c.is_multiple_of(g) {
            return x.usage(
                loc,
                format!("group_norm: num_channels ({c}) is not a multiple of num_groups ({g})"),
            );
        }
        let shape = x.shape();
        if shape.rank() < 2 || shape[1] != Dim::from(c) {
            return x.usage(
                loc,
                format!("group_norm: expects a [N, {c}, *] input, got {}", x.ty()),
            );
        }
        let in_dtype = x.dtype();
        let dtype = compute_dtype(in_dtype);
        let per_group = shape.dims()[2..]
            .iter()
            .fold(Dim::from(c / g), |acc, d| acc * d.clone());
        let xg = x
            .to(dtype)
            .reshape(Shape(vec![shape[0].clone(), Dim::from(g), per_group]));
        let centered = &xg - xg.mean(-1, true);
        let var = centered.square().mean(-1, true);
        let mut y = (centered * (var + self.config.eps).rsqrt()).reshape(shape.clone());
        // Per-channel affine: [C] viewed as [C, 1, ..] to broadcast over the spatial dims.
        let mut cshape = vec![Dim::from(c)];
        cshape.extend(std::iter::repeat_n(Dim::constant(1), shape.rank() - 2));
        if let Some(w) = &self.weight {
            y = y * w.val().to(dtype).reshape(Shape(cshape.clone()));
        }
        if let Some(b) = &self.bias {
            y = y + b.val().to(dtype).reshape(Shape(cshape));
        }
        y.to(in_dtype)
    }
}
