//! Activation modules around [`crate::functional`]: `ReLU`, `GELU`, `SiLU`, `Sigmoid`, `Tanh`,
//! and [`Activation`], an activation chosen by configuration.

use crate::functional::{self, GeluApprox};
use crate::tensor::Tensor;

/// An activation function, for layers that take one as configuration (MLPs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// GELU, exact or tanh-approximated.
    Gelu(GeluApprox),
    /// `x · sigmoid(x)` (swish).
    Silu,
    /// `1 / (1 + e^−x)`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
}

impl Activation {
    /// Applies the function.
    #[track_caller]
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Relu => functional::relu(x),
            Activation::Gelu(approx) => functional::gelu(x, approx),
            Activation::Silu => functional::silu(x),
            Activation::Sigmoid => functional::sigmoid(x),
            Activation::Tanh => x.tanh(),
        }
    }

    /// The activation named by a Hugging Face config's `hidden_act`: `relu`, `gelu`,
    /// `gelu_pytorch_tanh` / `gelu_new` (tanh approximation), `silu` / `swish`, `sigmoid`,
    /// `tanh`.
    pub fn from_hf_name(name: &str) -> Option<Activation> {
        Some(match name {
            "relu" => Activation::Relu,
            "gelu" => Activation::Gelu(GeluApprox::None),
            "gelu_pytorch_tanh" | "gelu_new" => Activation::Gelu(GeluApprox::Tanh),
            "silu" | "swish" => Activation::Silu,
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            _ => return None,
        })
    }
}

/// `torch.nn.ReLU`.
#[crate::model(config = ())]
#[allow(clippy::upper_case_acronyms)]
pub struct ReLU {}

impl ReLU {
    /// `max(x, 0)`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        functional::relu(x)
    }
}

/// `torch.nn.GELU`; the config is PyTorch's `approximate` (`"none"` or `"tanh"`).
#[crate::model(config = GeluApprox)]
#[allow(clippy::upper_case_acronyms)]
pub struct GELU {
    /// Exact (`erf`) or tanh approximation.
    #[config(*cfg)]
    pub approximate: GeluApprox,
}

impl GELU {
    /// `x · Φ(x)` or its tanh approximation.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        functional::gelu(x, self.approximate)
    }
}

/// `torch.nn.SiLU`.
#[crate::model(config = ())]
pub struct SiLU {}

impl SiLU {
    /// `x · sigmoid(x)`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        functional::silu(x)
    }
}

/// `torch.nn.Sigmoid`.
#[crate::model(config = ())]
pub struct Sigmoid {}

impl Sigmoid {
    /// `1 / (1 + e^−x)`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        functional::sigmoid(x)
    }
}

/// `torch.nn.Tanh`.
#[crate::model(config = ())]
pub struct Tanh {}

impl Tanh {
    /// `tanh(x)`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.tanh()
    }
}
