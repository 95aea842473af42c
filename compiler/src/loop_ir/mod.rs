//! The loop IR: Kiln's backend-neutral kernel language.
//!
//! A [`Kernel`] is a name, typed buffer parameters, symbol parameters (symbolic dims bound at
//! run time) and a body of [`Stmt`]s: nested [`Loop`]s with symbolic extents, scalar
//! [`Stmt::Let`]s, mutable accumulators ([`Stmt::Declare`] / [`Stmt::Assign`]), [`Stmt::If`]
//! and [`Stmt::Store`]s. Backends (Cranelift, WGSL, PTX) only print and run this IR.
//!
//! # Indices
//!
//! Buffer indices are [`kiln_ir::Dim`]s: canonical integer polynomials with `//`, `%`, `min`,
//! `max`, over *symbols* that are (a) the kernel's symbol parameters (`seq`, `past`), (b) loop
//! variables (`r0`, `i1`, `k0`, ...), and (c) `i64` scalars bound by [`Stmt::Let`] or
//! [`Expr::Bind`] (data-dependent indices: embedding lookups, gather, scatter). Reusing `Dim`
//! gives simplification (`(i0*16 + i1) // 16 == i0 + i1 // 16`), structural equality and
//! printing for free; every index is a flat element offset into its buffer (row-major).
//!
//! # Values and rounding points
//!
//! Scalar values are typed [`Expr`] trees. Every [`Expr::Unary`] and [`Expr::Binary`] names
//! the dtype it computes in, and **that is a rounding point**: the op is computed exactly as
//! the reference interpreter does (floats in f64, integers in wrapping i64) and the result is
//! rounded (floats) or wrapped (integers) to that dtype. [`Expr::Cast`] is the only
//! conversion. So a fused expression rounds at exactly the original IR op boundaries and is
//! bit-exact with [`kiln_ir::interp`]. Reductions accumulate in an `f64` (or `i64`)
//! accumulator, where `add.f64` is exact f64 addition, and round once with a final `Cast`,
//! as the interpreter does. Block-quantized weights are read with [`Expr::LoadDequant`],
//! which yields the element's dequantized f32 value.
//!
//! [`Expr::Select`] is lazy: only the chosen operand is evaluated (pad, concat and
//! slice-update guard out-of-range loads with it; a backend prints a branch or clamps).
//!
//! # Tunables
//!
//! [`LoopAnnot`] (per loop: parallel/serial/reduction, vector width, unroll, tile size, GPU
//! grid/workgroup axis, shared-memory staging) and [`KernelConfig`] (GPU workgroup size) are
//! explicit and never change semantics: the evaluator ignores them. [`heuristic::annotate`]
//! fills the defaults.

mod display;
pub mod eval;
pub mod heuristic;
mod in_place;
pub mod reuse;

use kiln_ir::{BinaryOp, DType, Dim, QuantType, Scalar, UnaryOp};

/// A buffer's id within a [`crate::schedule::Schedule`] (printed `b3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(pub u32);

/// How a kernel uses a buffer parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferRole {
    /// Read only.
    Input,
    /// Written (and possibly read back) by this kernel.
    Output,
    /// Persistent state (a KV cache), read only here.
    State,
    /// Temporary memory private to one launch (e.g. an f64 accumulation buffer).
    Scratch,
}

/// A buffer parameter of a kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct BufferParam {
    /// The buffer.
    pub id: BufferId,
    /// Element type; block-quantized types hold whole blocks.
    pub dtype: DType,
    /// Element count (symbolic).
    pub len: Dim,
    /// How the kernel uses it.
    pub role: BufferRole,
}

/// What a loop is for (a tunable, except that reductions and serial loops must stay in
/// order for bit-exactness: their accumulation order is the reference interpreter's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoopKind {
    /// Iterations are independent and may run in any order or concurrently.
    Parallel,
    /// Iterations run in order (they write through data-dependent indices).
    Serial,
    /// Iterations update an accumulator in order.
    Reduction,
}

/// Which GPU index a loop maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GpuAxis {
    /// Not mapped: a loop inside one thread.
    None,
    /// The grid (workgroup id) axis 0, 1 or 2.
    Grid(u8),
    /// The local (thread within the workgroup) axis 0, 1 or 2.
    Thread(u8),
}

/// Tunable annotations of a loop. None of them change the result.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LoopAnnot {
    /// Parallel, serial or reduction.
    pub kind: LoopKind,
    /// SIMD width (1 = scalar); a backend handles a remainder when the extent is not a
    /// multiple.
    pub vector: u32,
    /// Unroll factor (1 = none).
    pub unroll: u32,
    /// Split into tiles of this many iterations (cache / register blocking), if set.
    pub tile: Option<u32>,
    /// GPU mapping.
    pub gpu: GpuAxis,
    /// Stage the tiles this loop reads in GPU shared memory (matmul operands).
    pub stage_shared: bool,
}

impl LoopAnnot {
    /// A plain loop of the given kind: scalar, not unrolled, not tiled, not mapped.
    pub fn new(kind: LoopKind) -> LoopAnnot {
        LoopAnnot {
            kind,
            vector: 1,
            unroll: 1,
            tile: None,
            gpu: GpuAxis::None,
            stage_shared: false,
        }
    }
}

/// A counted loop `for var in 0..extent`.
#[derive(Clone, Debug, PartialEq)]
pub struct Loop {
    /// The loop variable (a symbol in the body's indices).
    pub var: String,
    /// Trip count (symbolic).
    pub extent: Dim,
    /// Tunables.
    pub annot: LoopAnnot,
    /// The body.
    pub body: Vec<Stmt>,
}

/// A statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// A loop.
    Loop(Loop),
    /// An immutable scalar. An `i64` let may be used as a symbol in later indices.
    Let {
        /// Name.
        var: String,
        /// Type (the value's dtype).
        dtype: DType,
        /// Value.
        value: Expr,
    },
    /// A mutable scalar (an accumulator), initialized.
    Declare {
        /// Name.
        var: String,
        /// Type.
        dtype: DType,
        /// Initial value.
        init: Expr,
    },
    /// Overwrites a declared scalar (the value has its dtype).
    Assign {
        /// Name.
        var: String,
        /// New value.
        value: Expr,
    },
    /// `buffer[index] = value` (the value has the buffer's dtype).
    Store {
        /// Target buffer.
        buffer: BufferId,
        /// Flat element index.
        index: Dim,
        /// Value.
        value: Expr,
    },
    /// Runs `then` when the bool `cond` is true.
    If {
        /// Condition.
        cond: Expr,
        /// Body.
        then: Vec<Stmt>,
    },
}

/// A typed scalar expression (see the module docs for rounding).
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A constant, already a value of `dtype`.
    Const {
        /// Value.
        value: Scalar,
        /// Type.
        dtype: DType,
    },
    /// The `i64` value of an index expression.
    Index(Dim),
    /// A `Let`, `Declare` or `Bind` scalar.
    Var {
        /// Name.
        name: String,
        /// Type.
        dtype: DType,
    },
    /// `buffer[index]` of a plain-dtype buffer.
    Load {
        /// Buffer.
        buffer: BufferId,
        /// Its dtype.
        dtype: DType,
        /// Flat element index.
        index: Dim,
    },
    /// Element `index` of a block-quantized buffer, dequantized: an f32 value.
    LoadDequant {
        /// Buffer.
        buffer: BufferId,
        /// Block format.
        qtype: QuantType,
        /// Flat element index (block `index / block_size`, slot `index % block_size`).
        index: Dim,
    },
    /// A unary op computed in `dtype` (a rounding point).
    Unary {
        /// Op.
        op: UnaryOp,
        /// Operand and result type.
        dtype: DType,
        /// Operand.
        x: Box<Expr>,
    },
    /// A binary op on operands of `dtype` (a rounding point; comparisons give bool).
    Binary {
        /// Op.
        op: BinaryOp,
        /// Operand type.
        dtype: DType,
        /// Left operand.
        a: Box<Expr>,
        /// Right operand.
        b: Box<Expr>,
    },
    /// `cond ? a : b`, lazy: only the chosen side is evaluated.
    Select {
        /// Bool condition.
        cond: Box<Expr>,
        /// Value when true.
        a: Box<Expr>,
        /// Value when false.
        b: Box<Expr>,
    },
    /// Conversion with the interpreter's cast rules.
    Cast {
        /// Target type.
        to: DType,
        /// Operand.
        x: Box<Expr>,
    },
    /// `let var: i64 = value in body`: binds an index symbol for `body` (data-dependent
    /// indexing inside an expression, safe under a lazy [`Expr::Select`]).
    Bind {
        /// Name (usable in `body`'s indices).
        var: String,
        /// An `i64` value.
        value: Box<Expr>,
        /// The result.
        body: Box<Expr>,
    },
}

impl Expr {
    /// The direct sub-expressions, in operand order.
    pub fn children(&self) -> Vec<&Expr> {
        match self {
            Expr::Const { .. }
            | Expr::Index(_)
            | Expr::Var { .. }
            | Expr::Load { .. }
            | Expr::LoadDequant { .. } => Vec::new(),
            Expr::Unary { x, .. } | Expr::Cast { x, .. } => vec![x],
            Expr::Binary { a, b, .. } => vec![a, b],
            Expr::Select { cond, a, b } => vec![cond, a, b],
            Expr::Bind { value, body, .. } => vec![value, body],
        }
    }

    /// Adds every variable name and index symbol `self` mentions to `out`.
    pub fn refs(&self, out: &mut std::collections::HashSet<String>) {
        match self {
            Expr::Var { name, .. } => {
                out.insert(name.clone());
            }
            Expr::Index(d) | Expr::Load { index: d, .. } | Expr::LoadDequant { index: d, .. } => {
                out.extend(d.symbols())
            }
            _ => {}
        }
        for c in self.children() {
            c.refs(out);
        }
    }

    /// `self` rebuilt top-down: where `f` returns a replacement for a node, it is used
    /// as is; elsewhere the node is kept with its children rewritten.
    pub fn rewrite(&self, f: &mut dyn FnMut(&Expr) -> Option<Expr>) -> Expr {
        if let Some(e) = f(self) {
            return e;
        }
        let mut r = |x: &Expr| Box::new(x.rewrite(f));
        match self {
            Expr::Const { .. }
            | Expr::Index(_)
            | Expr::Var { .. }
            | Expr::Load { .. }
            | Expr::LoadDequant { .. } => self.clone(),
            Expr::Unary { op, dtype, x } => Expr::Unary {
                op: *op,
                dtype: *dtype,
                x: r(x),
            },
            Expr::Binary { op, dtype, a, b } => Expr::Binary {
                op: *op,
                dtype: *dtype,
                a: r(a),
                b: r(b),
            },
            Expr::Select { cond, a, b } => Expr::Select {
                cond: r(cond),
                a: r(a),
                b: r(b),
            },
            Expr::Cast { to, x } => Expr::Cast { to: *to, x: r(x) },
            Expr::Bind { var, value, body } => Expr::Bind {
                var: var.clone(),
                value: r(value),
                body: r(body),
            },
        }
    }

    /// `self` with the symbols of `m` substituted in every index (loads and `Index`), or
    /// `None` when `self` is not an index-bearing leaf: the node-level step of
    /// [`Expr::substitute`], for callers that combine it with other rewrites.
    pub fn substitute_leaf(&self, m: &std::collections::BTreeMap<String, Dim>) -> Option<Expr> {
        Some(match self {
            Expr::Index(d) => Expr::Index(d.substitute(m)),
            Expr::Load {
                buffer,
                dtype,
                index,
            } => Expr::Load {
                buffer: *buffer,
                dtype: *dtype,
                index: index.substitute(m),
            },
            Expr::LoadDequant {
                buffer,
                qtype,
                index,
            } => Expr::LoadDequant {
                buffer: *buffer,
                qtype: *qtype,
                index: index.substitute(m),
            },
            _ => return None,
        })
    }

    /// `self` with the symbols of `m` substituted in every index.
    pub fn substitute(&self, m: &std::collections::BTreeMap<String, Dim>) -> Expr {
        self.rewrite(&mut |e| e.substitute_leaf(m))
    }

    /// Whether the value may depend on memory: it loads, or reads a scalar variable (which
    /// may hold loaded data). An integer `Let` of such a value is a *data-dependent* index
    /// symbol, which backends check against the buffer it indexes (an embedding row, a
    /// gather or scatter position).
    pub fn may_read_memory(&self) -> bool {
        match self {
            Expr::Load { .. } | Expr::LoadDequant { .. } | Expr::Var { .. } => true,
            Expr::Const { .. } | Expr::Index(_) => false,
            _ => self.children().into_iter().any(Expr::may_read_memory),
        }
    }

    /// The value's dtype.
    pub fn dtype(&self) -> DType {
        match self {
            Expr::Const { dtype, .. } | Expr::Var { dtype, .. } | Expr::Load { dtype, .. } => {
                *dtype
            }
            Expr::Index(_) => DType::I64,
            Expr::LoadDequant { .. } => DType::F32,
            Expr::Unary { dtype, .. } => *dtype,
            Expr::Binary { op, dtype, .. } => {
                if op.is_comparison() {
                    DType::Bool
                } else {
                    *dtype
                }
            }
            Expr::Select { a, .. } => a.dtype(),
            Expr::Cast { to, .. } => *to,
            Expr::Bind { body, .. } => body.dtype(),
        }
    }

    /// A constant of `dtype`.
    pub fn constant(value: Scalar, dtype: DType) -> Expr {
        Expr::Const { value, dtype }
    }

    /// A scalar variable.
    pub fn var(name: &str, dtype: DType) -> Expr {
        Expr::Var {
            name: name.to_string(),
            dtype,
        }
    }

    /// A unary op in `dtype`.
    pub fn unary(op: UnaryOp, dtype: DType, x: Expr) -> Expr {
        Expr::Unary {
            op,
            dtype,
            x: Box::new(x),
        }
    }

    /// A binary op on operands of `dtype`.
    pub fn binary(op: BinaryOp, dtype: DType, a: Expr, b: Expr) -> Expr {
        Expr::Binary {
            op,
            dtype,
            a: Box::new(a),
            b: Box::new(b),
        }
    }

    /// A cast; a no-op cast is elided.
    pub fn cast(to: DType, x: Expr) -> Expr {
        if x.dtype() == to {
            x
        } else {
            Expr::Cast { to, x: Box::new(x) }
        }
    }

    /// A lazy select.
    pub fn select(cond: Expr, a: Expr, b: Expr) -> Expr {
        Expr::Select {
            cond: Box::new(cond),
            a: Box::new(a),
            b: Box::new(b),
        }
    }
}

/// What kind of work a kernel does (a hint for backends and heuristics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelKind {
    /// One independent store per element.
    Elementwise,
    /// Row loops with reduction phases (norms, softmax, sums).
    Reduction,
    /// A matrix product with fused prologue and epilogue.
    MatMul,
    /// Serial data-dependent writes (scatter).
    Scatter,
}

/// Kernel-level tunables.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelConfig {
    /// GPU workgroup size (threads per workgroup along x, y, z).
    pub workgroup: [u32; 3],
}

/// A kernel: a function over buffers and symbols.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// Name (unique within a schedule).
    pub name: String,
    /// The kind of work.
    pub kind: KernelKind,
    /// Buffer parameters, by id.
    pub params: Vec<BufferParam>,
    /// Symbol parameters (symbolic dims passed at launch), sorted.
    pub symbols: Vec<String>,
    /// Kernel-level tunables.
    pub config: KernelConfig,
    /// The body.
    pub body: Vec<Stmt>,
}

impl Kernel {
    /// The parameter for `id`, if any.
    pub fn param(&self, id: BufferId) -> Option<&BufferParam> {
        self.params.iter().find(|p| p.id == id)
    }

    /// Visits every loop, outermost first.
    pub fn visit_loops(&self, f: &mut impl FnMut(&Loop, usize)) {
        fn go(body: &[Stmt], depth: usize, f: &mut impl FnMut(&Loop, usize)) {
            for s in body {
                match s {
                    Stmt::Loop(l) => {
                        f(l, depth);
                        go(&l.body, depth + 1, f);
                    }
                    Stmt::If { then, .. } => go(then, depth, f),
                    _ => {}
                }
            }
        }
        go(&self.body, 0, f);
    }

    /// The kernel's outermost parallel loops that can be collapsed into one flat index: its
    /// body's only statement when that is a `Parallel` loop, then each loop that is again the
    /// only statement of its parent, is `Parallel` and whose extent does not depend on an
    /// outer loop of the nest. With `keep_innermost` false the nest stops before an innermost
    /// loop (the CPU backend keeps that one whole for vector code; GPUs collapse it too).
    pub fn collapsible_nest(&self, keep_innermost: bool) -> Vec<&Loop> {
        let mut nest: Vec<&Loop> = Vec::new();
        let mut body = self.body.as_slice();
        while let [Stmt::Loop(l)] = body {
            let outer = l
                .extent
                .symbols()
                .iter()
                .any(|s| nest.iter().any(|o| &o.var == s));
            let innermost = !l.body.iter().any(|s| matches!(s, Stmt::Loop(_)));
            let stop = !nest.is_empty() && innermost && !keep_innermost;
            if l.annot.kind != LoopKind::Parallel || outer || stop {
                break;
            }
            nest.push(l);
            body = &l.body;
        }
        nest
    }

    /// Every symbol used by the kernel's dims that is not bound inside it (loop variables,
    /// `i64` lets and binds), sorted: what [`Kernel::symbols`] should hold.
    pub fn free_symbols(&self) -> Vec<String> {
        let mut used = Vec::new();
        let mut local = Vec::new();
        for p in &self.params {
            used.extend(p.len.symbols());
        }
        walk_stmts(&self.body, &mut used, &mut local);
        used.sort();
        used.dedup();
        used.retain(|s| !local.contains(s));
        used
    }
}

fn walk_stmts(body: &[Stmt], used: &mut Vec<String>, local: &mut Vec<String>) {
    for s in body {
        match s {
            Stmt::Loop(l) => {
                local.push(l.var.clone());
                used.extend(l.extent.symbols());
                walk_stmts(&l.body, used, local);
            }
            Stmt::Let { var, value, .. } => {
                local.push(var.clone());
                walk_expr(value, used, local);
            }
            Stmt::Declare { var, init, .. } => {
                local.push(var.clone());
                walk_expr(init, used, local);
            }
            Stmt::Assign { value, .. } => walk_expr(value, used, local),
            Stmt::Store { index, value, .. } => {
                used.extend(index.symbols());
                walk_expr(value, used, local);
            }
            Stmt::If { cond, then } => {
                walk_expr(cond, used, local);
                walk_stmts(then, used, local);
            }
        }
    }
}

fn walk_expr(e: &Expr, used: &mut Vec<String>, local: &mut Vec<String>) {
    match e {
        Expr::Const { .. } | Expr::Var { .. } => {}
        Expr::Index(d) | Expr::Load { index: d, .. } | Expr::LoadDequant { index: d, .. } => {
            used.extend(d.symbols())
        }
        Expr::Unary { x, .. } | Expr::Cast { x, .. } => walk_expr(x, used, local),
        Expr::Binary { a, b, .. } => {
            walk_expr(a, used, local);
            walk_expr(b, used, local);
        }
        Expr::Select { cond, a, b } => {
            walk_expr(cond, used, local);
            walk_expr(a, used, local);
            walk_expr(b, used, local);
        }
        Expr::Bind { var, value, body } => {
            local.push(var.clone());
            walk_expr(value, used, local);
            walk_expr(body, used, local);
        }
    }
}
