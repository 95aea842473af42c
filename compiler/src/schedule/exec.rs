//! Runs a [`Schedule`] with the loop-IR evaluator: load-time launches, then the per-run
//! launches, in order, over one buffer per [`super::BufferInfo`]. This is how the scheduler
//! is tested against the reference interpreter before any backend exists.

use super::{BufferKind, Schedule};
use crate::loop_ir::eval::{eval_kernel, Buffer, LoopEvalError};
use kiln_ir::{Bindings, DimError, Tensor};
use std::collections::HashMap;

/// Tensors and symbol values for [`run`] (builder style, like [`kiln_ir::interp::Env`]).
#[derive(Clone, Debug, Default)]
pub struct Feeds {
    inputs: HashMap<String, Tensor>,
    params: HashMap<String, Tensor>,
    states: HashMap<String, Tensor>,
    bindings: Bindings,
}

impl Feeds {
    /// Nothing given.
    pub fn new() -> Feeds {
        Feeds::default()
    }
    /// Gives an input.
    pub fn input(mut self, name: &str, t: Tensor) -> Feeds {
        self.inputs.insert(name.into(), t);
        self
    }
    /// Gives a param.
    pub fn param(mut self, name: &str, t: Tensor) -> Feeds {
        self.params.insert(name.into(), t);
        self
    }
    /// Gives a state's current value.
    pub fn state(mut self, name: &str, t: Tensor) -> Feeds {
        self.states.insert(name.into(), t);
        self
    }
    /// Binds a symbol.
    pub fn bind(mut self, symbol: &str, value: i64) -> Feeds {
        self.bindings.set(symbol, value);
        self
    }
}

/// Tensors by name.
pub type Named = Vec<(String, Tensor)>;

/// Why a schedule could not be run.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RunError {
    /// A source tensor was not given.
    #[error("no tensor given for {0}")]
    Missing(String),
    /// A buffer size could not be evaluated.
    #[error(transparent)]
    Dim(#[from] DimError),
    /// A kernel failed.
    #[error(transparent)]
    Eval(#[from] LoopEvalError),
    /// A result did not fit its shape.
    #[error("buffer {0} does not match its shape")]
    Shape(String),
}

/// Runs `s` on `feeds`; returns the outputs and the new state values, by name. Symbols not
/// bound in `feeds` are inferred from source tensors whose dim is a bare symbol.
pub fn run(s: &Schedule, feeds: &Feeds) -> Result<(Named, Named), RunError> {
    let mut b = feeds.bindings.clone();
    let source = |kind: &BufferKind| -> Option<Result<&Tensor, RunError>> {
        let (map, name) = match kind {
            BufferKind::Input(n) => (&feeds.inputs, n),
            BufferKind::Param(n) => (&feeds.params, n),
            BufferKind::State(n) => (&feeds.states, n),
            _ => return None,
        };
        Some(map.get(name).ok_or_else(|| RunError::Missing(name.clone())))
    };
    for info in &s.buffers {
        if let Some(Ok(t)) = source(&info.kind) {
            for (d, &n) in info.shape.dims().iter().zip(t.shape()) {
                if let Some(sym) = d.as_symbol() {
                    if b.get(sym).is_none() {
                        b.set(sym, n as i64);
                    }
                }
            }
        }
    }
    let mut bufs = HashMap::new();
    for info in &s.buffers {
        let buf = match &info.kind {
            BufferKind::Constant(t) => Buffer::from_tensor(t),
            k => match source(k) {
                Some(t) => Buffer::from_tensor(t?),
                None => Buffer::zeros(info.dtype, info.size.eval(&b)?.max(0) as usize),
            },
        };
        bufs.insert(info.id, buf);
    }
    for l in s.load_time.iter().chain(&s.launches) {
        eval_kernel(&s.kernels[l.kernel], &mut bufs, &b)?;
    }
    let fetch = |list: &[(String, crate::loop_ir::BufferId)]| {
        list.iter()
            .map(|(name, id)| {
                let info = &s.buffers[id.0 as usize];
                let shape = info
                    .shape
                    .dims()
                    .iter()
                    .map(|d| d.eval(&b).map(|v| v.max(0) as usize))
                    .collect::<Result<Vec<_>, _>>()?;
                let t = bufs[id]
                    .to_tensor(shape)
                    .ok_or_else(|| RunError::Shape(name.clone()))?;
                Ok((name.clone(), t))
            })
            .collect::<Result<Vec<_>, RunError>>()
    };
    Ok((fetch(&s.outputs)?, fetch(&s.state_updates)?))
}
