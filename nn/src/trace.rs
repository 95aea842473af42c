//! Tracing: running a model's `forward` on symbolic [`Tensor`]s records a [`Graph`].
//!
//! A [`Trace`] owns the graph being built. While it is alive it is the thread's current trace,
//! so parameters ([`crate::Param::val`]) and state ([`crate::StateVar`]) find it without being
//! passed around. Tensor ops never fail at the call site: the first error is recorded, with
//! the source location of the call that caused it, and returned by [`Trace::finish`].

use crate::tensor::Tensor;
use kiln_ir::{DType, Graph, IrError, NodeId, Shape};
use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::Location;
use std::rc::Rc;

/// Why tracing failed: the first op that did not fit, and where it was called.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{location}: {error}")]
pub struct TraceError {
    /// `file:line:column` of the tensor call in the model's source.
    pub location: String,
    /// The IR's error (names the op and the operand shapes).
    pub error: TraceErrorKind,
}

/// What went wrong while tracing.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TraceErrorKind {
    /// The IR rejected an op.
    #[error(transparent)]
    Ir(#[from] IrError),
    /// A misuse the IR cannot see (mixing traces, a bad argument to a tensor method).
    #[error("{0}")]
    Usage(String),
}

pub(crate) struct State {
    pub(crate) graph: Graph,
    error: Option<TraceError>,
    /// Parameter, buffer and state nodes by name, so each is read once per graph.
    sources: HashMap<String, NodeId>,
    /// Dtypes that replace parameters' declared dtypes (e.g. the quantized types in a file).
    param_dtypes: HashMap<String, DType>,
}

/// A shared handle to the trace a tensor belongs to.
#[derive(Clone)]
pub struct Tracer(pub(crate) Rc<RefCell<State>>);

thread_local! {
    static CURRENT: RefCell<Vec<Tracer>> = const { RefCell::new(Vec::new()) };
}

/// A graph being traced. Create one, declare inputs, call the model, mark outputs, then
/// [`Trace::finish`].
///
/// ```
/// use kiln_nn::{Trace, dims};
/// use kiln_ir::DType;
///
/// let trace = Trace::new();
/// let x = trace.input("x", DType::F32, dims!["seq", 4]);
/// let y = (&x * 2.0).exp().sum(-1, true);
/// trace.output("y", &y);
/// let graph = trace.finish().unwrap();
/// assert_eq!(graph.outputs().len(), 1);
/// ```
pub struct Trace {
    tracer: Tracer,
    finished: bool,
}

impl Default for Trace {
    fn default() -> Self {
        Trace::new()
    }
}

impl Trace {
    /// Starts a trace and makes it the thread's current one.
    pub fn new() -> Trace {
        Trace::with_param_dtypes(HashMap::new())
    }

    /// Starts a trace in which the named parameters take the given dtypes instead of the
    /// ones their modules declare (a loader knows the dtypes in the weight file).
    pub fn with_param_dtypes(param_dtypes: HashMap<String, DType>) -> Trace {
        let tracer = Tracer(Rc::new(RefCell::new(State {
            graph: Graph::new(),
            error: None,
            sources: HashMap::new(),
            param_dtypes,
        })));
        CURRENT.with(|c| c.borrow_mut().push(tracer.clone()));
        Trace {
            tracer,
            finished: false,
        }
    }

    /// The tracer, for making tensors by hand.
    pub fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    /// A named graph input.
    #[track_caller]
    pub fn input(&self, name: &str, dtype: DType, shape: Shape) -> Tensor {
        self.tracer
            .push_with(Location::caller(), |g| g.input(name, dtype, shape))
    }

    /// Marks `t` as the output called `name`.
    #[track_caller]
    pub fn output(&self, name: &str, t: &Tensor) {
        let loc = Location::caller();
        if let Some(id) = self.tracer.own(t, loc) {
            let r = self.tracer.0.borrow_mut().graph.set_output(name, id);
            if let Err(e) = r {
                self.tracer.record(loc, e.into());
            }
        }
    }

    /// Ends the trace: the graph, or the first error met while tracing.
    pub fn finish(mut self) -> Result<Graph, TraceError> {
        self.finished = true;
        self.pop();
        let mut state = self.tracer.0.borrow_mut();
        match state.error.take() {
            Some(e) => Err(e),
            None => Ok(std::mem::take(&mut state.graph)),
        }
    }

    fn pop(&self) {
        CURRENT.with(|c| {
            let mut stack = c.borrow_mut();
            if let Some(pos) = stack.iter().rposition(|t| Rc::ptr_eq(&t.0, &self.tracer.0)) {
                stack.remove(pos);
            }
        });
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        if !self.finished {
            self.pop();
        }
    }
}

impl Tracer {
    /// The thread's current trace, if one is alive.
    pub fn current() -> Option<Tracer> {
        CURRENT.with(|c| c.borrow().last().cloned())
    }

    /// Records `error` unless an earlier one is already recorded.
    pub(crate) fn record(&self, loc: &Location<'_>, error: TraceErrorKind) {
        let mut s = self.0.borrow_mut();
        if s.error.is_none() {
            s.error = Some(TraceError {
                location: format!("{}:{}:{}", loc.file(), loc.line(), loc.column()),
                error,
            });
        }
    }

    /// True once an error has been recorded.
    pub fn has_error(&self) -> bool {
        self.0.borrow().error.is_some()
    }

    /// `t`'s node if `t` belongs to this trace; records an error otherwise.
    pub(crate) fn own(&self, t: &Tensor, loc: &Location<'_>) -> Option<NodeId> {
        if Rc::ptr_eq(&self.0, &t.tracer.0) {
            Some(t.id)
        } else {
            self.record(
                loc,
                TraceErrorKind::Usage("a tensor from another trace was used".into()),
            );
            None
        }
    }

    /// Runs a graph-building step. On error the error is recorded and the result is a
    /// placeholder: a `full` node of the placeholder type, so tracing can go on (the graph is
    /// discarded by [`Trace::finish`] anyway).
    pub(crate) fn push_with(
        &self,
        loc: &Location<'_>,
        f: impl FnOnce(&mut Graph) -> Result<NodeId, IrError>,
    ) -> Tensor {
        let r = f(&mut self.0.borrow_mut().graph);
        match r {
            Ok(id) => Tensor::from_node(self.clone(), id),
            Err(e) => {
                self.record(loc, e.into());
                self.placeholder()
            }
        }
    }

    /// A stand-in tensor after an error: a scalar f32 zero.
    pub(crate) fn placeholder(&self) -> Tensor {
        let id = self
            .0
            .borrow_mut()
            .graph
            .scalar(kiln_ir::Scalar::Float(0.0), DType::F32)
            .expect("a scalar f32 constant always type-checks");
        Tensor::from_node(self.clone(), id)
    }

    /// A source node read once per trace under `name` (parameters, buffers, state).
    pub(crate) fn source(
        &self,
        loc: &Location<'_>,
        name: &str,
        make: impl FnOnce(&mut Graph, Option<DType>) -> Result<NodeId, IrError>,
    ) -> Tensor {
        if let Some(&id) = self.0.borrow().sources.get(name) {
            return Tensor::from_node(self.clone(), id);
        }
        let dtype = self.0.borrow().param_dtypes.get(name).copied();
        let t = self.push_with(loc, |g| make(g, dtype));
        if !self.has_error() {
            self.0.borrow_mut().sources.insert(name.to_string(), t.id);
        }
        t
    }
}
