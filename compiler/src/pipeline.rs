//! The compiler's pipeline: optimize (e-graph), schedule (kernels in loop IR), plan memory.
//!
//! [`compile`] runs the three stages; [`Report`] measures a compiled graph at given symbol
//! values (kernel count, bytes the kernels move, peak and arena bytes) for `kiln inspect` and
//! `docs/compiler.md`.

use crate::egraph::{optimize, OptimizeOptions, RuleStats};
use crate::memory::{self, BufferDecl, MemoryPlan, MemoryProblem, Step};
use crate::schedule::{schedule, BufferKind, Schedule, ScheduleError};
use kiln_ir::{Bindings, DType, Dim, Graph};
use std::fmt;

/// Everything the compiler produced for a graph.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The graph after the e-graph rewrites (the input graph if optimization was skipped).
    pub graph: Graph,
    /// What the rewrites did (`None` if optimization was skipped).
    pub stats: Option<RuleStats>,
    /// Kernels, buffers and launches.
    pub schedule: Schedule,
    /// Arena offsets for the intermediates.
    pub memory: MemoryPlan,
}

/// Why a graph could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The optimizer failed.
    #[error("optimizer: {0}")]
    Optimize(#[from] crate::egraph::OptimizeError),
    /// The scheduler could not lower a node.
    #[error("scheduler: {0}")]
    Schedule(#[from] ScheduleError),
    /// The memory planner rejected the launch list.
    #[error("memory planner: {0}")]
    Memory(#[from] memory::PlanError),
    /// A size could not be evaluated for a report.
    #[error("report: {0}")]
    Eval(String),
}

/// Compiles `graph`: optimizes it with `options` (or not, if `None`), schedules it and plans
/// its memory.
pub fn compile(graph: &Graph, options: Option<&OptimizeOptions>) -> Result<Compiled, CompileError> {
    let (graph, stats) = match options {
        Some(o) => {
            let opt = optimize(graph, o)?;
            (opt.graph, Some(opt.stats))
        }
        None => (graph.clone(), None),
    };
    let schedule = schedule(&graph)?;
    let memory = memory::plan(&memory_problem(&schedule))?;
    Ok(Compiled {
        graph,
        stats,
        schedule,
        memory,
    })
}

/// Bytes of `elements` values of `dtype` (block-quantized types by whole blocks).
fn bytes(dtype: DType, elements: &Dim) -> Dim {
    match dtype {
        DType::Quant(q) => {
            elements.floor_div(&Dim::from(q.block_size())).clone() * Dim::from(q.block_bytes())
        }
        d => elements.clone() * Dim::from(d.size_bytes().unwrap_or(1)),
    }
}

/// The schedule's per-run launches as a memory-planning problem (load-time buffers are
/// weights: they live with the params), with the in-place writes each kernel allows
/// ([`crate::loop_ir::Kernel::in_place_candidates`]).
pub fn memory_problem(s: &Schedule) -> MemoryProblem {
    let buffers = s
        .buffers
        .iter()
        .map(|b| {
            let kind = match &b.kind {
                BufferKind::Input(_) => memory::BufferKind::Input,
                BufferKind::Param(_) | BufferKind::Constant(_) | BufferKind::Derived => {
                    memory::BufferKind::Param
                }
                BufferKind::State(_) => memory::BufferKind::State,
                BufferKind::Output => memory::BufferKind::Output,
                BufferKind::Intermediate | BufferKind::Scratch => memory::BufferKind::Intermediate,
            };
            BufferDecl::new(
                b.id.0 as usize,
                format!("b{}", b.id.0),
                bytes(b.dtype, &b.size),
                kind,
                64,
            )
        })
        .collect();
    let steps = s
        .launches
        .iter()
        .map(|l| {
            let kernel = &s.kernels[l.kernel];
            let mut step = Step::new(
                kernel.name.clone(),
                l.inputs.iter().map(|b| b.0 as usize),
                l.outputs.iter().map(|b| b.0 as usize),
            );
            // The planner applies a hint only where lifetimes allow it.
            for (out, input) in kernel.in_place_candidates() {
                if l.outputs.contains(&out) && l.inputs.contains(&input) {
                    step = step.with_in_place(out.0 as usize, input.0 as usize);
                }
            }
            step
        })
        .collect();
    MemoryProblem { buffers, steps }
}

/// Measurements of a compiled graph at concrete symbol values.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Nodes in the (optimized) graph.
    pub nodes: usize,
    /// Per-run kernel launches.
    pub kernels: usize,
    /// Launches run once at load time.
    pub load_time_kernels: usize,
    /// Bytes all per-run launches read and write (each buffer counted once per launch, a
    /// state updated in place by the slice its update writes).
    pub bytes_moved: u64,
    /// Most bytes of intermediates live at once.
    pub peak_bytes: u64,
    /// Size of the intermediates' arena.
    pub arena_bytes: u64,
}

impl Compiled {
    /// Measures the compiled graph with the symbols bound to `bindings`.
    pub fn report(&self, bindings: &Bindings) -> Result<Report, CompileError> {
        let eval = |d: &Dim| -> Result<u64, CompileError> {
            let v = d
                .eval(bindings)
                .map_err(|e| CompileError::Eval(e.to_string()))?;
            u64::try_from(v).map_err(|_| CompileError::Eval(format!("{d} is negative")))
        };
        let mut moved = 0u64;
        for l in &self.schedule.launches {
            for id in l.inputs.iter().chain(&l.outputs) {
                let b = &self.schedule.buffers[id.0 as usize];
                // A state updated in place: its update kernel writes only the new slice.
                let written = match &b.kind {
                    BufferKind::State(name) if l.outputs.contains(id) => self
                        .graph
                        .state_updates()
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, u)| self.graph.ty(self.graph.node(*u).inputs[1]).shape.numel()),
                    _ => None,
                };
                moved += eval(&bytes(b.dtype, written.as_ref().unwrap_or(&b.size)))?;
            }
        }
        let ev = |r: Result<u64, memory::PlanEvalError>| {
            r.map_err(|e| CompileError::Eval(e.to_string()))
        };
        Ok(Report {
            nodes: self.graph.nodes().len(),
            kernels: self.schedule.launches.len(),
            load_time_kernels: self.schedule.load_time.len(),
            bytes_moved: moved,
            peak_bytes: ev(self.memory.peak_bytes(bindings))?,
            arena_bytes: ev(self.memory.arena_bytes(bindings))?,
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} nodes, {} kernels (+{} at load time), {} moved, peak {} of intermediates, arena {}",
            self.nodes,
            self.kernels,
            self.load_time_kernels,
            human(self.bytes_moved),
            human(self.peak_bytes),
            human(self.arena_bytes)
        )
    }
}

/// `1234567` as `1.18 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}
