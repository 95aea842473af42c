//! `Dropout`: the identity in evaluation mode.

use crate::tensor::Tensor;
use crate::Module;
use std::panic::Location;

/// Configuration of a [`Dropout`] layer.
#[derive(Clone, Debug, PartialEq)]
pub struct DropoutConfig {
    /// Probability of zeroing an element in training mode, in `[0, 1]`.
    pub p: f64,
}

impl DropoutConfig {
    /// Drop probability `p`.
    pub fn new(p: f64) -> DropoutConfig {
        DropoutConfig { p }
    }
}

/// `torch.nn.Dropout`. In evaluation mode (the default after `new`) and with `p = 0` it is the
/// identity; with `p = 1` in training mode every element becomes 0 (PyTorch multiplies by
/// zero). Any other `p` in training mode needs random numbers, which the IR cannot make yet:
/// tracing records an error instead of silently skipping the dropout.
#[crate::model(config = DropoutConfig)]
pub struct Dropout {
    /// Drop probability.
    #[config(cfg.p)]
    pub p: f64,
}

impl Dropout {
    /// Applies dropout (see the type's docs for training mode).
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let loc = Location::caller();
        let p = self.p;
        if !(0.0..=1.0).contains(&p) {
            return x.usage(
                loc,
                format!("dropout probability has to be between 0 and 1, but got {p}"),
            );
        }
        if !self.is_training() || p == 0.0 {
            return x.clone();
        }
        if p == 1.0 {
            return x * 0.0;
        }
        x.usage(
            loc,
            format!(
                "dropout with p = {p} in training mode needs a random source, which the IR \
                 does not have yet (call .eval() on the model to trace inference, or set p = 0)"
            ),
        )
    }
}
