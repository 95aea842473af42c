//! Feed-forward blocks: [`Mlp`] (`fc2(act(fc1(x)))`) and [`GatedMlp`]
//! (`down_proj(act(gate_proj(x)) · up_proj(x))`: SwiGLU, GeGLU).

use super::activation::Activation;
use super::linear::{Linear, LinearConfig};
use crate::functional::GeluApprox;
use crate::tensor::Tensor;

/// Configuration of an [`Mlp`].
#[derive(Clone, Debug, PartialEq)]
pub struct MlpConfig {
    /// Input features.
    pub in_features: usize,
    /// Features between the two layers.
    pub hidden_features: usize,
    /// Output features.
    pub out_features: usize,
    /// Whether both layers have a bias.
    pub bias: bool,
    /// The activation between the layers.
    pub activation: Activation,
}

impl MlpConfig {
    /// `in → hidden → in` with biases and exact GELU.
    pub fn new(in_features: usize, hidden_features: usize) -> MlpConfig {
        MlpConfig {
            in_features,
            hidden_features,
            out_features: in_features,
            bias: true,
            activation: Activation::Gelu(GeluApprox::None),
        }
    }

    /// With this many output features.
    pub fn out_features(self, out_features: usize) -> MlpConfig {
        MlpConfig {
            out_features,
            ..self
        }
    }

    /// With this activation.
    pub fn activation(self, activation: Activation) -> MlpConfig {
        MlpConfig { activation, ..self }
    }

    /// Without biases.
    pub fn no_bias(self) -> MlpConfig {
        MlpConfig {
            bias: false,
            ..self
        }
    }
}

/// A two-layer perceptron with Hugging Face's names (`fc1`, `fc2`, as in CLIP, ViT, Whisper):
/// `fc2(activation(fc1(x)))`.
#[crate::model(config = MlpConfig)]
pub struct Mlp {
    /// `in_features → hidden_features`.
    #[module(config = LinearConfig {
        in_features: cfg.in_features,
        out_features: cfg.hidden_features,
        bias: cfg.bias,
    })]
    pub fc1: Linear,
    /// `hidden_features → out_features`.
    #[module(config = LinearConfig {
        in_features: cfg.hidden_features,
        out_features: cfg.out_features,
        bias: cfg.bias,
    })]
    pub fc2: Linear,
    /// The activation between the layers.
    #[config(cfg.activation)]
    pub activation: Activation,
}

impl Mlp {
    /// Applies the block to `[.., in_features]`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.activation.apply(&self.fc1.forward(x));
        self.fc2.forward(&h)
    }
}

/// Configuration of a [`GatedMlp`].
#[derive(Clone, Debug, PartialEq)]
pub struct GatedMlpConfig {
    /// Model width (input and output features).
    pub hidden_size: usize,
    /// Width of the gated inner layer.
    pub intermediate_size: usize,
    /// Whether the three projections have biases (Llama's `mlp_bias`).
    pub bias: bool,
    /// The gate's activation: SiLU (SwiGLU) or GELU (GeGLU).
    pub activation: Activation,
}

impl GatedMlpConfig {
    /// SwiGLU without biases (Llama, Mistral, Qwen).
    pub fn swiglu(hidden_size: usize, intermediate_size: usize) -> GatedMlpConfig {
        GatedMlpConfig {
            hidden_size,
            intermediate_size,
            bias: false,
            activation: Activation::Silu,
        }
    }

    /// GeGLU without biases (Gemma uses the tanh approximation).
    pub fn geglu(
        hidden_size: usize,
        intermediate_size: usize,
        approx: GeluApprox,
    ) -> GatedMlpConfig {
        GatedMlpConfig {
            activation: Activation::Gelu(approx),
            ..GatedMlpConfig::swiglu(hidden_size, intermediate_size)
        }
    }

    /// With biases on the three projections.
    pub fn with_bias(self) -> GatedMlpConfig {
        GatedMlpConfig { bias: true, ..self }
    }
}

/// The gated feed-forward block of Llama-style models, with Hugging Face's names:
/// `down_proj(act(gate_proj(x)) · up_proj(x))`.
#[crate::model(config = GatedMlpConfig)]
pub struct GatedMlp {
    /// `hidden_size → intermediate_size`, through the activation.
    #[module(config = LinearConfig {
        in_features: cfg.hidden_size,
        out_features: cfg.intermediate_size,
        bias: cfg.bias,
    })]
    pub gate_proj: Linear,
    /// `hidden_size → intermediate_size`.
    #[module(config = LinearConfig {
        in_features: cfg.hidden_size,
        out_features: cfg.intermediate_size,
        bias: cfg.bias,
    })]
    pub up_proj: Linear,
    /// `intermediate_size → hidden_size`.
    #[module(config = LinearConfig {
        in_features: cfg.intermediate_size,
        out_features: cfg.hidden_size,
        bias: cfg.bias,
    })]
    pub down_proj: Linear,
    /// The gate's activation.
    #[config(cfg.activation)]
    pub activation: Activation,
}

impl GatedMlp {
    /// Applies the block to `[.., hidden_size]`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let gate = self.activation.apply(&self.gate_proj.forward(x));
        self.down_proj.forward(&(gate * self.up_proj.forward(x)))
    }
}
