//! The memory planner: places every intermediate buffer of a launch list in one reusable arena,
//! with byte sizes and offsets that are symbolic [`Dim`]s, so a model is planned once and runs
//! for any `seq`/`past`/`batch` (the offsets are evaluated with [`Bindings`] at run time).
//!
//! # Input
//!
//! A [`MemoryProblem`]: a buffer table ([`BufferDecl`]: id, name, byte size as a [`Dim`],
//! [`BufferKind`], alignment) and an ordered list of [`Step`]s (kernel launches), each naming
//! the buffers it reads and writes, plus optional [`InPlaceHint`]s ("this step may write output
//! `o` into the storage of input `i`"). The planner depends on no scheduler type: the scheduler
//! lowers its launch list into this form.
//!
//! # Output
//!
//! A [`MemoryPlan`]: for every buffer a [`Placement`]. Only [`BufferKind::Intermediate`]
//! buffers go into the arena. Inputs, parameters, state (a KV cache keeps its storage across
//! runs) and outputs (handed back to the caller, so they must outlive the run) are
//! [`Placement::External`]: the runtime owns their storage. An intermediate that no step uses is
//! [`Placement::Unused`] and takes no space.
//!
//! # Algorithm
//!
//! A buffer's lifetime is the inclusive step range from its first write to its last use. Two
//! buffers whose lifetimes intersect (even in one step: a kernel reads one while it writes the
//! other) need disjoint storage, unless an in-place hint applies.
//!
//! Greedy offset packing would need to compare symbolic sizes, which is not always decidable
//! (`4*seq` against `4*past`). Instead buffers are put in **slots**:
//!
//! 1. Buffers are visited in order of first use (ties by table order). A slot is *free* for a
//!    buffer when every buffer already in it died before the buffer's first step.
//! 2. A legal in-place hint puts the output in its input's slot (see below).
//! 3. Otherwise the buffer goes to the best free slot, in this order: one whose size covers it
//!    by a constant (structural equality is slack 0), least slack first; one whose size
//!    provably covers it; one it exceeds by a constant, least growth first; one it provably
//!    exceeds; then any free slot, preferring one whose size mentions the same symbols. Only if
//!    no slot is free is a new slot opened. Sizes are non-negative, so `max(a, b) <= a + b`:
//!    sharing a slot never costs more than a new one, for every binding.
//! 4. A slot's size is the `maximum` of its buffers' sizes, kept as a set of candidates none of
//!    which provably covers another, so it never nests redundant `max` terms. Its alignment is
//!    the largest of its buffers'.
//!
//! "Provably `a >= b`" assumes every symbol is non-negative (they are lengths and batch sizes):
//! `a - b` is a non-negative constant, or splits as `q*s + r` over a symbol `s` (exact
//! polynomial division, `r` is the difference at `s = 0`) with both parts provably
//! non-negative, so `256*seq >= 4*seq` and `4*(seq + past) >= 4*seq` are provable.
//! 5. Slots are laid out by decreasing alignment (alignments are powers of two); each slot's
//!    size is rounded up to its alignment, and its offset is the prefix sum of the rounded
//!    sizes before it, so every offset is a multiple of the slot's alignment. The arena size is
//!    the total. The arena base must be aligned to [`MemoryPlan::arena_align`].
//!
//! An [`InPlaceHint`] at step `s` (output `o`, input `i`) is applied when `i` is read and not
//! written by `s`, `o` is written by `s`, both are intermediates, their sizes are structurally
//! equal, `i`'s last use is `s`, `o`'s first use is `s`, and no other output of `s` already took
//! `i`'s storage. Otherwise it is recorded as rejected, with the reason, and ignored.
//!
//! # Limits
//!
//! - Greedy and order-dependent: the first-use order decides which buffers share; it is not
//!   optimal even for constant sizes (interval packing into slots ignores that two small dead
//!   buffers could share the space of one large one).
//! - A slot shared by incomparable sizes costs `max(a, b)` for every binding, which can exceed
//!   what an offset packer would use for one particular binding.
//! - Comparisons through `//`, `%`, `min` or `max` of a symbol are not attempted
//!   (`4*min(seq, 64)` against `4*seq` is treated as incomparable). Incomparable sizes still
//!   share slots, through `maximum`.
//! - Symbols bound to negative values break the "provably larger" reasoning (the plan is still
//!   evaluated, but a slot could be smaller than a member); sizes must be non-negative, which
//!   evaluation checks for each buffer.
//! - Negative sizes are not detected while planning; evaluation reports them.

mod planner;
mod report;

use kiln_ir::{Bindings, Dim, DimError};

pub use planner::plan;

/// Identifies a buffer in a [`MemoryProblem`]'s table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(pub usize);

/// What a buffer holds, which decides whether it may live in the reusable arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferKind {
    /// A graph input, written by the caller before the run; read-only for the steps.
    Input,
    /// A weight; read-only for the steps.
    Param,
    /// Persistent state (a KV cache): keeps its own storage across runs.
    State,
    /// A graph output, handed back to the caller after the run.
    Output,
    /// A temporary produced and consumed within one run: the only kind placed in the arena.
    Intermediate,
}

impl BufferKind {
    /// Lower-case name, as printed in reports.
    pub fn name(self) -> &'static str {
        match self {
            BufferKind::Input => "input",
            BufferKind::Param => "param",
            BufferKind::State => "state",
            BufferKind::Output => "output",
            BufferKind::Intermediate => "intermediate",
        }
    }

    /// Steps may not write buffers of this kind.
    pub fn is_read_only(self) -> bool {
        matches!(self, BufferKind::Input | BufferKind::Param)
    }
}

/// One entry of the buffer table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferDecl {
    /// Unique id, used by steps to refer to this buffer.
    pub id: BufferId,
    /// Name for reports and errors.
    pub name: String,
    /// Size in bytes (symbolic).
    pub size: Dim,
    /// What the buffer holds.
    pub kind: BufferKind,
    /// Required alignment of its offset in bytes: a power of two.
    pub align: u64,
}

impl BufferDecl {
    /// A buffer declaration.
    pub fn new(
        id: usize,
        name: impl Into<String>,
        size: impl Into<Dim>,
        kind: BufferKind,
        align: u64,
    ) -> Self {
        BufferDecl {
            id: BufferId(id),
            name: name.into(),
            size: size.into(),
            kind,
            align,
        }
    }
}

/// Permission for a step to write `output` into the storage of `input`, which the op allows
/// (e.g. an elementwise op with identical sizes). Applied only where legal (see the module
/// documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InPlaceHint {
    /// The buffer the step writes.
    pub output: BufferId,
    /// The buffer the step reads whose storage it may overwrite.
    pub input: BufferId,
}

/// One kernel launch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Name for reports and errors.
    pub name: String,
    /// Buffers the launch reads.
    pub reads: Vec<BufferId>,
    /// Buffers the launch writes.
    pub writes: Vec<BufferId>,
    /// Optional in-place permissions.
    pub in_place: Vec<InPlaceHint>,
}

impl Step {
    /// A step reading `reads` and writing `writes`, with no in-place hints.
    pub fn new(
        name: impl Into<String>,
        reads: impl IntoIterator<Item = usize>,
        writes: impl IntoIterator<Item = usize>,
    ) -> Self {
        Step {
            name: name.into(),
            reads: reads.into_iter().map(BufferId).collect(),
            writes: writes.into_iter().map(BufferId).collect(),
            in_place: Vec::new(),
        }
    }

    /// Adds a hint that `output` may reuse `input`'s storage (builder style).
    pub fn with_in_place(mut self, output: usize, input: usize) -> Self {
        self.in_place.push(InPlaceHint {
            output: BufferId(output),
            input: BufferId(input),
        });
        self
    }
}

/// The planner's input: a buffer table and a launch list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryProblem {
    /// Every buffer, with a unique id.
    pub buffers: Vec<BufferDecl>,
    /// The launches, in execution order.
    pub steps: Vec<Step>,
}

/// The inclusive range of steps from a buffer's first use to its last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lifetime {
    /// Index of the first step that uses the buffer.
    pub first: usize,
    /// Index of the last step that uses the buffer.
    pub last: usize,
}

impl Lifetime {
    /// True if the two ranges share a step.
    pub fn overlaps(&self, other: &Lifetime) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// Where a buffer's storage is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Not in the arena: the runtime owns its storage (inputs, params, state, outputs).
    External,
    /// An intermediate that no step uses: no storage.
    Unused,
    /// In the arena, in slot `slot` (an index into [`MemoryPlan::slots`]) at byte `offset`.
    Arena {
        /// Index of the slot.
        slot: usize,
        /// Byte offset from the arena base (the slot's offset).
        offset: Dim,
    },
}

/// A buffer and where the plan put it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedBuffer {
    /// The declaration, as given.
    pub decl: BufferDecl,
    /// First and last step using it, if any step does.
    pub lifetime: Option<Lifetime>,
    /// Its storage.
    pub placement: Placement,
}

/// A region of the arena shared by buffers with disjoint lifetimes (or in-place pairs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The `maximum` of its buffers' sizes (before rounding to the alignment).
    pub size: Dim,
    /// The size rounded up to `align`: the room the slot takes in the arena.
    pub padded_size: Dim,
    /// The largest alignment of its buffers.
    pub align: u64,
    /// Byte offset from the arena base.
    pub offset: Dim,
    /// Its buffers, in order of first use.
    pub buffers: Vec<BufferId>,
}

/// An in-place hint the planner applied: `output` shares `input`'s storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppliedInPlace {
    /// The step where `input` dies and `output` is born.
    pub step: usize,
    /// The hint.
    pub hint: InPlaceHint,
}

/// Why an in-place hint was not applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InPlaceRejection {
    /// `output` is not written by the step, `input` is not read by it, the step also writes
    /// `input`, or the two are the same buffer.
    NotOperands,
    /// One of the two is not an intermediate (external storage is never aliased).
    NotIntermediate,
    /// The sizes are not structurally equal.
    SizeMismatch,
    /// `input` is used after this step.
    InputLiveAfter,
    /// `output` is used before this step.
    OutputLiveBefore,
    /// Another output of this step already took `input`'s storage.
    InputAlreadyReused,
    /// Another hint already put `output` in place of some other input.
    OutputAlreadyPlaced,
}

impl InPlaceRejection {
    /// A short description, as printed in reports.
    pub fn describe(self) -> &'static str {
        match self {
            InPlaceRejection::NotOperands => "not an input/output pair of the step",
            InPlaceRejection::NotIntermediate => "not both intermediates",
            InPlaceRejection::SizeMismatch => "sizes differ",
            InPlaceRejection::InputLiveAfter => "input used after the step",
            InPlaceRejection::OutputLiveBefore => "output used before the step",
            InPlaceRejection::InputAlreadyReused => "input already reused by another output",
            InPlaceRejection::OutputAlreadyPlaced => "output already in place of another input",
        }
    }
}

/// An in-place hint the planner ignored, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectedInPlace {
    /// The step that carried the hint.
    pub step: usize,
    /// The hint.
    pub hint: InPlaceHint,
    /// Why it is not legal.
    pub reason: InPlaceRejection,
}

/// Why a problem could not be planned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Two table entries share an id.
    #[error("buffer id {id} is declared twice (`{first}` and `{second}`)")]
    DuplicateBuffer {
        /// The id.
        id: usize,
        /// Name of the first declaration.
        first: String,
        /// Name of the second declaration.
        second: String,
    },
    /// A step (or one of its hints) names a buffer that is not in the table.
    #[error("step {step} (`{step_name}`) refers to buffer id {id}, which is not declared")]
    UnknownBuffer {
        /// Index of the step.
        step: usize,
        /// Name of the step.
        step_name: String,
        /// The unknown id.
        id: usize,
    },
    /// An alignment is zero or not a power of two.
    #[error("buffer `{buffer}` has alignment {align}, which is not a power of two")]
    BadAlignment {
        /// The buffer's name.
        buffer: String,
        /// The alignment given.
        align: u64,
    },
    /// An intermediate is read by a step but written by no step at or before it.
    #[error("step {step} (`{step_name}`) reads intermediate `{buffer}` before any step writes it")]
    ReadBeforeWrite {
        /// Index of the step.
        step: usize,
        /// Name of the step.
        step_name: String,
        /// The buffer's name.
        buffer: String,
    },
    /// A step writes an input or a parameter.
    #[error("step {step} (`{step_name}`) writes {kind} `{buffer}`, which is read-only")]
    WriteToReadOnly {
        /// Index of the step.
        step: usize,
        /// Name of the step.
        step_name: String,
        /// The buffer's name.
        buffer: String,
        /// Its kind's name.
        kind: &'static str,
    },
}

/// Why a plan could not be evaluated for some bindings.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanEvalError {
    /// A size or offset could not be evaluated (unbound symbol, overflow, division by zero).
    #[error("evaluating the memory plan: {0}")]
    Dim(#[from] DimError),
    /// A size evaluated to a negative number.
    #[error("buffer `{buffer}` has size `{size}` = {value} bytes, which is negative")]
    NegativeSize {
        /// The buffer's name.
        buffer: String,
        /// Its symbolic size.
        size: String,
        /// The value it evaluated to.
        value: i64,
    },
}

/// Where every buffer lives, with symbolic offsets and arena size. Built by [`plan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    buffers: Vec<PlannedBuffer>,
    slots: Vec<Slot>,
    arena_size: Dim,
    steps: Vec<String>,
    applied: Vec<AppliedInPlace>,
    rejected: Vec<RejectedInPlace>,
}

/// A plan evaluated for one set of bindings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedPlan {
    /// Total arena size in bytes.
    pub arena_bytes: u64,
    /// For each arena buffer, in table order: its id, byte offset and byte size.
    pub arena_buffers: Vec<(BufferId, u64, u64)>,
}

impl MemoryPlan {
    /// Every buffer, in table order.
    pub fn buffers(&self) -> &[PlannedBuffer] {
        &self.buffers
    }

    /// A buffer by id.
    pub fn buffer(&self, id: BufferId) -> Option<&PlannedBuffer> {
        self.buffers.iter().find(|b| b.decl.id == id)
    }

    /// A buffer's symbolic arena offset, if it is in the arena.
    pub fn offset(&self, id: BufferId) -> Option<&Dim> {
        match &self.buffer(id)?.placement {
            Placement::Arena { offset, .. } => Some(offset),
            _ => None,
        }
    }

    /// The slots, in arena order (by decreasing alignment).
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The arena size in bytes (symbolic).
    pub fn arena_size(&self) -> &Dim {
        &self.arena_size
    }

    /// The alignment the arena base must have: the largest slot alignment (1 if empty).
    pub fn arena_align(&self) -> u64 {
        self.slots.iter().map(|s| s.align).max().unwrap_or(1)
    }

    /// The in-place hints applied.
    pub fn in_place(&self) -> &[AppliedInPlace] {
        &self.applied
    }

    /// The in-place hints ignored, with reasons.
    pub fn rejected_in_place(&self) -> &[RejectedInPlace] {
        &self.rejected
    }

    /// The arena size in bytes for these bindings.
    pub fn arena_bytes(&self, bindings: &Bindings) -> Result<u64, PlanEvalError> {
        let v = self.arena_size.eval(bindings)?;
        u64::try_from(v).map_err(|_| PlanEvalError::NegativeSize {
            buffer: "<arena>".into(),
            size: self.arena_size.to_string(),
            value: v,
        })
    }

    /// The largest number of bytes that arena buffers hold at once during one step, for these
    /// bindings, counting an in-place pair once and ignoring alignment padding: the lower
    /// bound any placement of these lifetimes needs. [`arena_bytes`](Self::arena_bytes) is at
    /// least this.
    pub fn peak_bytes(&self, bindings: &Bindings) -> Result<u64, PlanEvalError> {
        let mut sized = Vec::new();
        for b in &self.buffers {
            if let (Placement::Arena { .. }, Some(life)) = (&b.placement, b.lifetime) {
                sized.push((b.decl.id, life, eval_size(&b.decl, bindings)?));
            }
        }
        let mut peak = 0u64;
        for step in 0..self.steps.len() {
            let live: u64 = sized
                .iter()
                .filter(|(_, life, _)| life.first <= step && step <= life.last)
                .filter(|(id, _, _)| {
                    !self
                        .applied
                        .iter()
                        .any(|a| a.step == step && a.hint.output == *id)
                })
                .map(|(_, _, size)| *size)
                .sum();
            peak = peak.max(live);
        }
        Ok(peak)
    }

    /// Every arena offset and size, and the arena size, for these bindings.
    pub fn resolve(&self, bindings: &Bindings) -> Result<ResolvedPlan, PlanEvalError> {
        let mut arena_buffers = Vec::new();
        for b in &self.buffers {
            if let Placement::Arena { offset, .. } = &b.placement {
                let size = eval_size(&b.decl, bindings)?;
                let off = offset.eval(bindings)?;
                let off = u64::try_from(off).map_err(|_| PlanEvalError::NegativeSize {
                    buffer: format!("offset of {}", b.decl.name),
                    size: offset.to_string(),
                    value: off,
                })?;
                arena_buffers.push((b.decl.id, off, size));
            }
        }
        Ok(ResolvedPlan {
            arena_bytes: self.arena_bytes(bindings)?,
            arena_buffers,
        })
    }
}

fn eval_size(decl: &BufferDecl, bindings: &Bindings) -> Result<u64, PlanEvalError> {
    let v = decl.size.eval(bindings)?;
    u64::try_from(v).map_err(|_| PlanEvalError::NegativeSize {
        buffer: decl.name.clone(),
        size: decl.size.to_string(),
        value: v,
    })
}
