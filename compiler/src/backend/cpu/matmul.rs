//! Matrix products on the CPU: a matmul kernel of the scheduler is split into generated code
//! around precompiled micro-kernels.
//!
//! The scheduler lowers a matmul (with its fused prologue and epilogue) as a perfect nest of
//! parallel loops — batch loops, a row loop, a column loop — whose column body holds one or
//! more *contraction phases* (`declare acc = 0; for k { acc += cast.f64(X) * cast.f64(Y) }`)
//! followed by the epilogue that reads `cast(acc)`. [`plan_matmul`] recognizes that shape and
//! derives, as ordinary loop-IR kernels compiled by the same code generator:
//!
//! - per phase, an **A-pack kernel**: `X` (the left operand with its prologue: views,
//!   dequantization, RoPE, ...) evaluated for a block of rows into a dense f32 panel
//!   `[rows, k]`;
//! - per phase, a **B operand**: read in place when `Y` is a plain f32 or block-quantized
//!   load that is contiguous along `k` (a weight `[n, k]`: the common `x @ W^T`), otherwise a
//!   **B-pack kernel** evaluating `Y` for a block of columns into `[cols, k]` (when `Y` is a
//!   plain f32 load contiguous along the columns instead, a row-major `[k, n]` operand such as
//!   attention's `V`, [`Phase::b_rows`] also says where it lies, so that a product of few rows
//!   can read it in place rather than transpose it);
//! - one **epilogue kernel**: the column body with every contraction replaced by a read of
//!   that phase's result tile `[rows, cols]`.
//!
//! The runtime runs each (batch, row block, column block) task as: pack A, pack or point at B,
//! multiply with a micro-kernel (f32 GEMM, or quantized-activation integer dots for quantized
//! weights), run the epilogue on the tiles. Derived kernels take the original kernel's
//! buffers and symbols plus the block symbols [`BLOCK_SYMBOLS`] and one symbol per batch loop
//! (`__b0`, `__b1`, ...), and the pack/tile buffers ([`pack_a_id`], [`pack_b_id`],
//! [`tile_id`]). The micro-kernels accumulate in f32 where the loop IR says f64: results
//! agree with the interpreter within f32 accumulation error, not bit for bit.

use super::live_columns::{live_columns, LiveColumns};
use crate::loop_ir::{
    BufferId, BufferParam, BufferRole, Expr, Kernel, KernelKind, Loop, LoopAnnot, LoopKind, Stmt,
};
use kiln_ir::{BinaryOp, DType, Dim, QuantType, Scalar};
use std::collections::BTreeMap;

/// Symbols of a block, in this order after the batch symbols: first row, row count, first
/// column, column count.
pub const BLOCK_SYMBOLS: [&str; 4] = ["__r0", "__rn", "__c0", "__cn"];

/// The packed A panel of phase `p` (f32 `[__rn, k]`).
pub fn pack_a_id(p: usize) -> BufferId {
    BufferId(u32::MAX - 3 * p as u32)
}

/// The packed B panel of phase `p` (f32 `[__cn, k]`).
pub fn pack_b_id(p: usize) -> BufferId {
    BufferId(u32::MAX - 3 * p as u32 - 1)
}

/// The result tile of phase `p` (f32 `[__rn, __cn]`).
pub fn tile_id(p: usize) -> BufferId {
    BufferId(u32::MAX - 3 * p as u32 - 2)
}

/// How the right operand of a phase reaches the micro-kernel.
#[derive(Clone, Debug, PartialEq)]
pub enum BOperand {
    /// Packed by this kernel (symbols: see the module docs) into `pack_b_id(p)`.
    Packed(Kernel),
    /// Read in place: column `c`'s `k` elements start at element `base + ld * c` of
    /// `buffer` (`base` may mention the batch loop variables [`MatmulPlan::batch_vars`]).
    Direct {
        /// The buffer.
        buffer: BufferId,
        /// Its dtype: f32 or block-quantized.
        dtype: DType,
        /// Element offset of column 0.
        base: Dim,
        /// Elements between columns.
        ld: Dim,
    },
}

/// One contraction phase.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    /// Contraction length.
    pub k: Dim,
    /// Packs rows of the left operand into `pack_a_id(p)`.
    pub pack_a: Kernel,
    /// The left operand read in place instead, when it is a plain f32 load contiguous
    /// along `k`: row `r`'s elements start at `base + ld * r` of `buffer` (`base` may
    /// mention the batch loop variables).
    pub a_direct: Option<(BufferId, Dim, Dim)>,
    /// The right operand.
    pub b: BOperand,
    /// A packed right operand that is also a plain f32 load contiguous along the columns
    /// (row-major `[k, n]`: attention's `probs @ V`): column `c`'s element `kk` is element
    /// `base + ld * kk + c` of `buffer` (`base` may mention the batch loop variables). A
    /// runtime may read it in place for products of few rows, which would not amortize
    /// transposing it into the packed panel.
    pub b_rows: Option<(BufferId, Dim, Dim)>,
}

/// A matmul kernel split into generated kernels around micro-kernels.
#[derive(Clone, Debug, PartialEq)]
pub struct MatmulPlan {
    /// The original kernel's loop variables of the batch loops, outermost first.
    pub batch_vars: Vec<String>,
    /// Their extents.
    pub batch: Vec<Dim>,
    /// Row count (1 without a row loop).
    pub rows: Dim,
    /// Column count.
    pub cols: Dim,
    /// The contractions, in order.
    pub phases: Vec<Phase>,
    /// Stores the results from the tiles.
    pub epilogue: Kernel,
    /// Symbols every derived kernel takes, in order: the original kernel's, `__b{i}` per
    /// batch loop, then [`BLOCK_SYMBOLS`].
    pub symbols: Vec<String>,
    /// A causal bound ([`super::live_columns`]): the last column of each row whose stored
    /// value reads the contractions. A runtime may leave the later columns of a row block's
    /// tile uncomputed.
    pub live_columns: Option<LiveColumns>,
}

/// Splits a matmul kernel (see the module docs); `None` when it does not have the expected
/// shape (it then runs as ordinary generated code).
pub fn plan_matmul(kernel: &Kernel) -> Option<MatmulPlan> {
    if kernel.kind != KernelKind::MatMul {
        return None;
    }
    // The perfect nest of parallel loops.
    let mut nest: Vec<&Loop> = Vec::new();
    let mut body = &kernel.body;
    while let [Stmt::Loop(l)] = body.as_slice() {
        if l.annot.kind != LoopKind::Parallel
            || l.extent
                .symbols()
                .iter()
                .any(|s| nest.iter().any(|o| &o.var == s))
        {
            return None;
        }
        nest.push(l);
        body = &l.body;
    }
    let col = *nest.last()?;
    let row = (nest.len() >= 2).then(|| nest[nest.len() - 2]);
    let batch_loops = &nest[..nest.len().saturating_sub(2)];
    let batch_vars: Vec<String> = batch_loops.iter().map(|l| l.var.clone()).collect();

    let mut symbols = kernel.symbols.clone();
    let batch_syms: Vec<String> = (0..batch_loops.len()).map(|i| format!("__b{i}")).collect();
    symbols.extend(batch_syms.iter().cloned());
    symbols.extend(BLOCK_SYMBOLS.iter().map(|s| s.to_string()));

    let sym = |s: &str| Dim::symbol(s);
    let mut map: BTreeMap<String, Dim> = BTreeMap::new();
    for (v, s) in batch_vars.iter().zip(&batch_syms) {
        map.insert(v.clone(), sym(s));
    }
    if let Some(r) = row {
        map.insert(r.var.clone(), sym("__rr") + sym("__r0"));
    }
    map.insert(col.var.clone(), sym("__cc") + sym("__c0"));

    let mut phases = Vec::new();
    let mut epi_body = Vec::new();
    let mut i = 0;
    while i < col.body.len() {
        if let Some((acc, k, x, y)) = contraction(&col.body[i..]) {
            let p = phases.len();
            // X must not depend on the column, Y not on the row.
            if !operand_ok(
                x,
                &kernel.symbols,
                &batch_vars,
                row.map(|r| r.var.as_str()),
                &k.var,
            ) || !operand_ok(y, &kernel.symbols, &batch_vars, Some(&col.var), &k.var)
                || x.dtype() == DType::F64
                || y.dtype() == DType::F64
            {
                return None;
            }
            let mut kmap = map.clone();
            kmap.insert(k.var.clone(), sym("__kk"));
            let pack_a = pack_kernel(
                kernel,
                &format!("{}_pack_a{p}", kernel.name),
                pack_a_id(p),
                "__rr",
                "__rn",
                &k.extent,
                x.substitute(&kmap),
                &symbols,
            );
            let a_direct = row.and_then(|r| match direct_operand(x, &r.var, &k.var, &k.extent) {
                Some(BOperand::Direct {
                    buffer,
                    dtype: DType::F32,
                    base,
                    ld,
                }) => Some((buffer, base, ld)),
                _ => None,
            });
            let b = match direct_operand(y, &col.var, &k.var, &k.extent) {
                Some(d) => d,
                None => BOperand::Packed(pack_kernel(
                    kernel,
                    &format!("{}_pack_b{p}", kernel.name),
                    pack_b_id(p),
                    "__cc",
                    "__cn",
                    &k.extent,
                    y.substitute(&kmap),
                    &symbols,
                )),
            };
            let b_rows = match &b {
                BOperand::Packed(_) => rows_operand(y, &col.var, &k.var),
                BOperand::Direct { .. } => None,
            };
            phases.push(Phase {
                k: k.extent.clone(),
                pack_a,
                a_direct,
                b,
                b_rows,
            });
            // The accumulator starts at the tile's value; the reduction loop is gone.
            let tile = Expr::Load {
                buffer: tile_id(p),
                dtype: DType::F32,
                index: sym("__rr") * sym("__cn") + sym("__cc"),
            };
            epi_body.push(Stmt::Declare {
                var: acc.to_string(),
                dtype: DType::F64,
                init: Expr::cast(DType::F64, tile),
            });
            i += 2;
        } else {
            epi_body.push(subst_stmt(&col.body[i], &map));
            i += 1;
        }
    }
    if phases.is_empty() {
        return None;
    }
    let mut params = kernel.params.clone();
    for p in 0..phases.len() {
        params.push(BufferParam {
            id: tile_id(p),
            dtype: DType::F32,
            len: sym("__rn") * sym("__cn"),
            role: BufferRole::Input,
        });
    }
    let inner = Loop {
        var: "__cc".into(),
        extent: sym("__cn"),
        annot: LoopAnnot::new(LoopKind::Parallel),
        body: epi_body,
    };
    let outer = Loop {
        var: "__rr".into(),
        extent: sym("__rn"),
        annot: LoopAnnot::new(LoopKind::Parallel),
        body: vec![Stmt::Loop(inner)],
    };
    let epilogue = Kernel {
        name: format!("{}_epilogue", kernel.name),
        kind: KernelKind::Elementwise,
        params,
        symbols: symbols.clone(),
        config: kernel.config.clone(),
        body: vec![Stmt::Loop(outer)],
    };
    let live_columns = row.and_then(|r| live_columns(&col.body, &r.var, &col.var, &kernel.symbols));
    Some(MatmulPlan {
        live_columns,
        batch_vars,
        batch: batch_loops.iter().map(|l| l.extent.clone()).collect(),
        rows: row.map_or(Dim::from(1), |r| r.extent.clone()),
        cols: col.extent.clone(),
        phases,
        epilogue,
        symbols,
    })
}

/// `declare acc: f64 = 0; for k @reduction { acc = add.f64(acc, mul.f64(cast.f64(X),
/// cast.f64(Y))) }` at the start of `body`: (acc, the loop, X, Y).
fn contraction(body: &[Stmt]) -> Option<(&str, &Loop, &Expr, &Expr)> {
    let [Stmt::Declare {
        var,
        dtype: DType::F64,
        init,
    }, Stmt::Loop(k), ..] = body
    else {
        return None;
    };
    if !matches!(init, Expr::Const { value: Scalar::Float(z), .. } if *z == 0.0)
        || k.annot.kind != LoopKind::Reduction
    {
        return None;
    }
    let [Stmt::Assign { var: v2, value }] = k.body.as_slice() else {
        return None;
    };
    let Expr::Binary {
        op: BinaryOp::Add,
        dtype: DType::F64,
        a,
        b,
    } = value
    else {
        return None;
    };
    if v2 != var || !matches!(a.as_ref(), Expr::Var { name, .. } if name == var) {
        return None;
    }
    let Expr::Binary {
        op: BinaryOp::Mul,
        dtype: DType::F64,
        a: xa,
        b: yb,
    } = b.as_ref()
    else {
        return None;
    };
    let (
        Expr::Cast { to: DType::F64, x },
        Expr::Cast {
            to: DType::F64,
            x: y,
        },
    ) = (xa.as_ref(), yb.as_ref())
    else {
        return None;
    };
    Some((var, k, x, y))
}

/// True when every symbol `e` uses is a kernel symbol, a batch variable, `free` (the row or
/// column variable the operand may use), `k`, or bound inside `e`; and `e` reads no scalar
/// declared outside it.
fn operand_ok(e: &Expr, symbols: &[String], batch: &[String], free: Option<&str>, k: &str) -> bool {
    let mut used = Vec::new();
    let mut bound = Vec::new();
    let mut vars_ok = true;
    collect(e, &mut used, &mut bound, &mut vars_ok);
    vars_ok
        && used.iter().all(|s| {
            symbols.contains(s)
                || batch.contains(s)
                || Some(s.as_str()) == free
                || s == k
                || bound.contains(s)
        })
}

fn collect(e: &Expr, used: &mut Vec<String>, bound: &mut Vec<String>, vars_ok: &mut bool) {
    match e {
        Expr::Const { .. } => {}
        Expr::Var { name, .. } => {
            if !bound.contains(name) {
                *vars_ok = false;
            }
        }
        Expr::Index(d) | Expr::Load { index: d, .. } | Expr::LoadDequant { index: d, .. } => {
            used.extend(d.symbols())
        }
        Expr::Unary { x, .. } | Expr::Cast { x, .. } => collect(x, used, bound, vars_ok),
        Expr::Binary { a, b, .. } => {
            collect(a, used, bound, vars_ok);
            collect(b, used, bound, vars_ok);
        }
        Expr::Select { cond, a, b } => {
            collect(cond, used, bound, vars_ok);
            collect(a, used, bound, vars_ok);
            collect(b, used, bound, vars_ok);
        }
        Expr::Bind { var, value, body } => {
            collect(value, used, bound, vars_ok);
            bound.push(var.clone());
            collect(body, used, bound, vars_ok);
        }
    }
}

/// An operand as a contiguous-along-`k` read of an f32 or block-quantized buffer, `col`
/// being its row or column variable.
fn direct_operand(y: &Expr, col: &str, k: &str, kext: &Dim) -> Option<BOperand> {
    let (buffer, dtype, index) = match y {
        Expr::Load {
            buffer,
            dtype: DType::F32,
            index,
        } => (*buffer, DType::F32, index),
        Expr::LoadDequant {
            buffer,
            qtype,
            index,
        } => (*buffer, DType::Quant(*qtype), index),
        _ => return None,
    };
    let at = |c: i64, kk: i64| {
        let mut m = BTreeMap::new();
        m.insert(col.to_string(), Dim::from(c));
        m.insert(k.to_string(), Dim::from(kk));
        index.substitute(&m)
    };
    let base = at(0, 0);
    let ld = at(1, 0) - base.clone();
    if *index != base.clone() + ld.clone() * Dim::symbol(col) + Dim::symbol(k) {
        return None;
    }
    if let DType::Quant(q) = dtype {
        if !block_aligned(q, &[&base, &ld, kext]) {
            return None;
        }
    }
    Some(BOperand::Direct {
        buffer,
        dtype,
        base,
        ld,
    })
}

/// An operand as an f32 load contiguous along `col` (row-major `[k, n]`): the buffer,
/// `base` and the stride `ld` between consecutive `k`.
fn rows_operand(y: &Expr, col: &str, k: &str) -> Option<(BufferId, Dim, Dim)> {
    let Expr::Load {
        buffer,
        dtype: DType::F32,
        index,
    } = y
    else {
        return None;
    };
    let at = |c: i64, kk: i64| {
        let mut m = BTreeMap::new();
        m.insert(col.to_string(), Dim::from(c));
        m.insert(k.to_string(), Dim::from(kk));
        index.substitute(&m)
    };
    let base = at(0, 0);
    let ld = at(0, 1) - base.clone();
    (*index == base.clone() + ld.clone() * Dim::symbol(k) + Dim::symbol(col))
        .then_some((*buffer, base, ld))
}

/// True when every dim is provably a multiple of the block size (constant multiples, or
/// polynomials whose every coefficient is a multiple).
fn block_aligned(q: QuantType, dims: &[&Dim]) -> bool {
    let bs = q.block_size() as i64;
    dims.iter().all(|d| {
        d.terms()
            .iter()
            .all(|t| t.coefficient % bs == 0 && is_poly(t))
    })
}

fn is_poly(t: &kiln_ir::DimTerm<'_>) -> bool {
    t.factors
        .iter()
        .all(|(a, _)| matches!(a, kiln_ir::DimAtom::Symbol(_)))
}

/// `for var in 0..count { for __kk in 0..k { store pack[var * k + __kk] = cast.f32(value) } }`.
#[allow(clippy::too_many_arguments)]
fn pack_kernel(
    kernel: &Kernel,
    name: &str,
    pack: BufferId,
    var: &str,
    count: &str,
    k: &Dim,
    value: Expr,
    symbols: &[String],
) -> Kernel {
    let mut params = kernel.params.clone();
    for p in &mut params {
        if p.role == BufferRole::Output {
            p.role = BufferRole::Input;
        }
    }
    params.push(BufferParam {
        id: pack,
        dtype: DType::F32,
        len: Dim::symbol(count) * k.clone(),
        role: BufferRole::Output,
    });
    let store = Stmt::Store {
        buffer: pack,
        index: Dim::symbol(var) * k.clone() + Dim::symbol("__kk"),
        value: Expr::cast(DType::F32, value),
    };
    let inner = Loop {
        var: "__kk".into(),
        extent: k.clone(),
        annot: LoopAnnot::new(LoopKind::Parallel),
        body: vec![store],
    };
    let outer = Loop {
        var: var.into(),
        extent: Dim::symbol(count),
        annot: LoopAnnot::new(LoopKind::Parallel),
        body: vec![Stmt::Loop(inner)],
    };
    Kernel {
        name: name.into(),
        kind: KernelKind::Elementwise,
        params,
        symbols: symbols.to_vec(),
        config: kernel.config.clone(),
        body: vec![Stmt::Loop(outer)],
    }
}

/// Substitutes symbols in every dim of a statement.
fn subst_stmt(s: &Stmt, m: &BTreeMap<String, Dim>) -> Stmt {
    match s {
        Stmt::Loop(l) => Stmt::Loop(Loop {
            var: l.var.clone(),
            extent: l.extent.substitute(m),
            annot: l.annot.clone(),
            body: l.body.iter().map(|s| subst_stmt(s, m)).collect(),
        }),
        Stmt::Let { var, dtype, value } => Stmt::Let {
            var: var.clone(),
            dtype: *dtype,
            value: value.substitute(m),
        },
        Stmt::Declare { var, dtype, init } => Stmt::Declare {
            var: var.clone(),
            dtype: *dtype,
            init: init.substitute(m),
        },
        Stmt::Assign { var, value } => Stmt::Assign {
            var: var.clone(),
            value: value.substitute(m),
        },
        Stmt::Store {
            buffer,
            index,
            value,
        } => Stmt::Store {
            buffer: *buffer,
            index: index.substitute(m),
            value: value.substitute(m),
        },
        Stmt::If { cond, then } => Stmt::If {
            cond: cond.substitute(m),
            then: then.iter().map(|s| subst_stmt(s, m)).collect(),
        },
    }
}
