//! Parameters, buffers and persistent state: the named tensors a model owns.

use crate::tensor::Tensor;
use crate::trace::Tracer;
use kiln_ir::{DType, Shape};
use std::panic::Location;

/// What a named model tensor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// A weight: loaded from a checkpoint, trainable unless frozen.
    Weight,
    /// A buffer: loaded from a checkpoint (if persistent), never trained.
    Buffer {
        /// Part of the `state_dict` (PyTorch's `persistent=True`).
        persistent: bool,
    },
}

/// A named weight or buffer of a model. Created by the `#[kiln::model]` constructor with its
/// full `state_dict` name (`layers.3.self_attn.q_proj.weight`); read in `forward` with
/// [`Param::val`].
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    name: String,
    shape: Shape,
    dtype: DType,
    kind: ParamKind,
    frozen: bool,
}

/// A description of one parameter, for loaders and optimizers.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// Full `state_dict` name.
    pub name: String,
    /// Shape (may use config-derived constants only; symbols are not allowed in weights).
    pub shape: Shape,
    /// Declared dtype (a loader may substitute the file's dtype when tracing).
    pub dtype: DType,
    /// Weight or buffer.
    pub kind: ParamKind,
    /// True for weights that are not frozen.
    pub trainable: bool,
}

impl Param {
    /// A weight.
    pub fn new(name: impl Into<String>, shape: Shape, dtype: DType) -> Param {
        Param {
            name: name.into(),
            shape,
            dtype,
            kind: ParamKind::Weight,
            frozen: false,
        }
    }

    /// A buffer.
    pub fn buffer(name: impl Into<String>, shape: Shape, dtype: DType, persistent: bool) -> Param {
        Param {
            kind: ParamKind::Buffer { persistent },
            ..Param::new(name, shape, dtype)
        }
    }

    /// Full `state_dict` name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Declared shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// Declared dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Weight or buffer.
    pub fn kind(&self) -> ParamKind {
        self.kind
    }

    /// Excludes this weight from training.
    pub fn freeze(&mut self) {
        self.frozen = true;
    }

    /// Includes this weight in training again.
    pub fn unfreeze(&mut self) {
        self.frozen = false;
    }

    /// True for weights that are not frozen (buffers never are trainable).
    pub fn trainable(&self) -> bool {
        self.kind == ParamKind::Weight && !self.frozen
    }

    /// The description loaders and optimizers use.
    pub fn spec(&self) -> ParamSpec {
        ParamSpec {
            name: self.name.clone(),
            shape: self.shape.clone(),
            dtype: self.dtype,
            kind: self.kind,
            trainable: self.trainable(),
        }
    }

    /// The parameter as a tensor of the current trace (one `param` node per name and graph;
    /// the dtype may be overridden by the trace, see [`crate::Trace::with_param_dtypes`]).
    ///
    /// # Panics
    /// Outside a [`crate::Trace`].
    #[track_caller]
    pub fn val(&self) -> Tensor {
        let tracer = Tracer::current()
            .unwrap_or_else(|| panic!("Param::val of `{}` called outside a kiln trace", self.name));
        tracer.source(Location::caller(), &self.name, |g, dtype| {
            g.param(&self.name, dtype.unwrap_or(self.dtype), self.shape.clone())
        })
    }
}

/// A named piece of persistent state (a KV cache): read with [`StateVar::val`], given its
/// next value with [`StateVar::set`]. Its shape is fixed (a capacity), so a decode step never
/// re-creates it.
#[derive(Clone, Debug, PartialEq)]
pub struct StateVar {
    name: String,
    shape: Shape,
    dtype: DType,
}

impl StateVar {
    /// A state variable.
    pub fn new(name: impl Into<String>, shape: Shape, dtype: DType) -> StateVar {
        StateVar {
            name: name.into(),
            shape,
            dtype,
        }
    }

    /// Full name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// Dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The current value, as a tensor of the current trace.
    ///
    /// # Panics
    /// Outside a [`crate::Trace`].
    #[track_caller]
    pub fn val(&self) -> Tensor {
        let tracer = Tracer::current().unwrap_or_else(|| {
            panic!(
                "StateVar::val of `{}` called outside a kiln trace",
                self.name
            )
        });
        tracer.source(
            Location::caller(),
            &format!("state:{}", self.name),
            |g, _| g.state(&self.name, self.dtype, self.shape.clone()),
        )
    }

    /// Sets the value the state has after this graph runs.
    #[track_caller]
    pub fn set(&self, value: &Tensor) {
        let loc = Location::caller();
        // Make sure the state is declared in this graph even if it was never read.
        let _ = self.val();
        let tracer = &value.tracer;
        let r = tracer
            .0
            .borrow_mut()
            .graph
            .set_state_update(&self.name, value.id);
        if let Err(e) = r {
            tracer.record(loc, e.into());
        }
    }
}
