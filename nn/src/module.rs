//! The `Module` trait that `#[kiln::model]` implements.

use crate::param::{Param, ParamSpec, StateVar};

/// A model or layer: a tree of parameters, buffers, state and sub-modules with PyTorch
/// `state_dict` names. Implemented by `#[kiln::model]`; the forward pass is an ordinary method
/// of the struct, written against [`crate::Tensor`].
pub trait Module {
    /// The configuration the module is built from.
    type Config;

    /// Builds the module from its config; every name is prefixed with `prefix` (empty for
    /// the root, `"layers.3."` for a child).
    fn build(config: &Self::Config, prefix: &str) -> Self
    where
        Self: Sized;

    /// Visits every parameter and buffer, depth first in field order.
    fn visit_params(&self, f: &mut dyn FnMut(&Param));

    /// Visits every parameter and buffer mutably.
    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param));

    /// Visits every state variable.
    fn visit_states(&self, f: &mut dyn FnMut(&StateVar));

    /// Sets training (`true`) or evaluation mode, recursively.
    fn set_training(&mut self, training: bool);

    /// True in training mode.
    fn is_training(&self) -> bool;

    /// Training mode (dropout active).
    fn train(&mut self) {
        self.set_training(true);
    }

    /// Evaluation mode (dropout is the identity).
    fn eval(&mut self) {
        self.set_training(false);
    }

    /// Every parameter and buffer, with names equal to PyTorch `state_dict` keys.
    fn param_specs(&self) -> Vec<ParamSpec> {
        let mut out = Vec::new();
        self.visit_params(&mut |p| out.push(p.spec()));
        out
    }

    /// The `state_dict` keys: weights and persistent buffers.
    fn state_dict_keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.visit_params(&mut |p| {
            if p.kind() != (crate::param::ParamKind::Buffer { persistent: false }) {
                out.push(p.name().to_string());
            }
        });
        out
    }

    /// Freezes every weight (excludes it from training).
    fn freeze(&mut self) {
        self.visit_params_mut(&mut |p| p.freeze());
    }

    /// Unfreezes every weight.
    fn unfreeze(&mut self) {
        self.visit_params_mut(&mut |p| p.unfreeze());
    }
}
