//! `Linear`: `y = x Wᵀ + b`, weight `[out, in]` as in PyTorch.

use crate::{Param, Tensor};

/// Configuration of a [`Linear`] layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearConfig {
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
    /// Whether there is a bias.
    pub bias: bool,
}

impl LinearConfig {
    /// A layer with a bias.
    pub fn new(in_features: usize, out_features: usize) -> LinearConfig {
        LinearConfig {
            in_features,
            out_features,
            bias: true,
        }
    }

    /// The same layer without a bias.
    pub fn no_bias(self) -> LinearConfig {
        LinearConfig {
            bias: false,
            ..self
        }
    }
}

/// `torch.nn.Linear`: `x @ weight.T + bias`. The weight may be loaded block-quantized or in
/// f16/bf16; the product is taken without transposing it.
#[crate::model(config = LinearConfig)]
pub struct Linear {
    /// `[out_features, in_features]`.
    #[param(shape = [cfg.out_features, cfg.in_features])]
    pub weight: Param,
    /// `[out_features]`, if configured.
    #[param(shape = [cfg.out_features], when = cfg.bias)]
    pub bias: Option<Param>,
}

impl Linear {
    /// Applies the layer to `[.., in_features]`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.matmul_t(&self.weight.val());
        match &self.bias {
            Some(b) => y + b.val(),
            None => y,
        }
    }
}
