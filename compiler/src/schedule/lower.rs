//! Lowering one root node (and everything inlined into it) to a loop-IR kernel.

use super::{BufferInfo, BufferKind, Role, ScheduleError};
use crate::loop_ir::{
    heuristic, BufferId, BufferParam, BufferRole, Expr, Kernel, KernelConfig, KernelKind, Loop,
    LoopAnnot, LoopKind, Stmt,
};
use kiln_ir::{
    BinaryOp, DType, Dim, Graph, NodeId, Op, ReduceOp, Scalar, ScatterReduce, Shape, Storage,
};
use std::collections::HashMap;

/// The node must become a root (then the partition is redone).
#[derive(Debug)]
pub(crate) struct Need(pub NodeId);

enum Fail {
    Need(NodeId),
    Unsupported(ScheduleError),
}

type R<T> = Result<T, Fail>;

pub(crate) struct Lowering<'a> {
    g: &'a Graph,
    roles: &'a [Role],
    bufs: &'a HashMap<NodeId, BufferId>,
    buffers: &'a mut Vec<BufferInfo>,
    root: NodeId,
    counter: usize,
    params: Vec<BufferParam>,
    row: Vec<Dim>,
    row_shape: Vec<Dim>,
    done: HashMap<NodeId, Expr>,
    uses: Vec<usize>,
    prelude: Vec<Stmt>,
    memo: HashMap<(NodeId, Vec<Dim>), Expr>,
    lazy: usize,
    /// Results of sliced matmuls (see [`Lowering::sliced`]): the column each was computed
    /// at and its row scalar.
    cols: HashMap<NodeId, Vec<(Dim, Expr)>>,
}

fn dims(s: &Shape) -> Vec<Dim> {
    s.dims().to_vec()
}

/// Row-major flat offset of `idx` in `shape`.
fn lin(idx: &[Dim], shape: &[Dim]) -> Dim {
    let mut off = Dim::constant(0);
    for (i, s) in idx.iter().zip(shape) {
        off = off * s.clone() + i.clone();
    }
    off
}

/// The input index of a reshape from `input` to `output` at output index `idx`: identical
/// leading and trailing dims map straight through, the middle goes through a flat offset.
fn reshape_index(idx: &[Dim], output: &[Dim], input: &[Dim]) -> Vec<Dim> {
    let mut pre = 0;
    while pre < output.len() && pre < input.len() && output[pre] == input[pre] {
        pre += 1;
    }
    let mut suf = 0;
    while suf < output.len() - pre
        && suf < input.len() - pre
        && output[output.len() - 1 - suf] == input[input.len() - 1 - suf]
    {
        suf += 1;
    }
    let (o_mid, i_mid) = (
        &output[pre..output.len() - suf],
        &input[pre..input.len() - suf],
    );
    let flat = lin(&idx[pre..idx.len() - suf], o_mid);
    let mut out: Vec<Dim> = idx[..pre].to_vec();
    let mut stride = Dim::constant(1);
    let mut mid = Vec::new();
    for (k, d) in i_mid.iter().enumerate().rev() {
        let q = flat.floor_div(&stride);
        mid.push(if k == 0 { q } else { q.modulo(d) });
        stride = stride * d.clone();
    }
    mid.reverse();
    out.extend(mid);
    out.extend_from_slice(&idx[idx.len() - suf..]);
    out
}

fn nest(vars: &[String], extents: &[Dim], kind: LoopKind, body: Vec<Stmt>) -> Vec<Stmt> {
    let mut body = body;
    for (v, e) in vars.iter().zip(extents).rev() {
        body = vec![Stmt::Loop(Loop {
            var: v.clone(),
            extent: e.clone(),
            annot: LoopAnnot::new(kind),
            body,
        })];
    }
    body
}

fn syms(vars: &[String]) -> Vec<Dim> {
    vars.iter().map(|v| Dim::symbol(v)).collect()
}

fn i64c(v: i64) -> Expr {
    Expr::constant(Scalar::Int(v), DType::I64)
}

fn idx_cmp(op: BinaryOp, a: Dim, b: Dim) -> Expr {
    Expr::binary(op, DType::I64, Expr::Index(a), Expr::Index(b))
}

fn and(a: Expr, b: Expr) -> Expr {
    Expr::binary(BinaryOp::And, DType::Bool, a, b)
}

fn or(a: Expr, b: Expr) -> Expr {
    Expr::binary(BinaryOp::Or, DType::Bool, a, b)
}

impl<'a> Lowering<'a> {
    pub(crate) fn new(
        g: &'a Graph,
        roles: &'a [Role],
        bufs: &'a HashMap<NodeId, BufferId>,
        buffers: &'a mut Vec<BufferInfo>,
    ) -> Lowering<'a> {
        let mut uses = vec![0; g.nodes().len()];
        for (i, n) in g.nodes().iter().enumerate() {
            if roles[i] != Role::Dead {
                for p in &n.inputs {
                    uses[p.index()] += 1;
                }
            }
        }
        Lowering {
            g,
            roles,
            bufs,
            buffers,
            root: NodeId(0),
            counter: 0,
            params: Vec::new(),
            row: Vec::new(),
            row_shape: Vec::new(),
            done: HashMap::new(),
            uses,
            prelude: Vec::new(),
            memo: HashMap::new(),
            lazy: 0,
            cols: HashMap::new(),
        }
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}", self.counter - 1)
    }

    fn shape(&self, n: NodeId) -> Vec<Dim> {
        dims(&self.g.ty(n).shape)
    }

    fn use_buffer(&mut self, id: BufferId, role: BufferRole) {
        if let Some(p) = self.params.iter_mut().find(|p| p.id == id) {
            if role == BufferRole::Output {
                p.role = role;
            }
            return;
        }
        let info = &self.buffers[id.0 as usize];
        let role = match (&info.kind, role) {
            (BufferKind::State(_), BufferRole::Input) => BufferRole::State,
            (_, r) => r,
        };
        self.params.push(BufferParam {
            id,
            dtype: info.dtype,
            len: info.size.clone(),
            role,
        });
    }

    fn unsupported(&self, n: NodeId, reason: &str) -> Fail {
        Fail::Unsupported(ScheduleError::Unsupported {
            node: n,
            op: self.g.node(n).op.name(),
            reason: reason.into(),
        })
    }

    /// Runs `f` as a fresh statement scope: its CSE lets come first.
    fn scoped(&mut self, f: impl FnOnce(&mut Self) -> R<Vec<Stmt>>) -> R<Vec<Stmt>> {
        let prelude = std::mem::take(&mut self.prelude);
        let memo = std::mem::take(&mut self.memo);
        let r = f(self);
        let mut out = std::mem::replace(&mut self.prelude, prelude);
        self.memo = memo;
        out.extend(r?);
        Ok(out)
    }

    /// Lowers the kernel computing `node` into `dest`.
    pub(crate) fn kernel(
        &mut self,
        node: NodeId,
        dest: BufferId,
        index: usize,
    ) -> Result<Result<Kernel, super::lower::Need>, ScheduleError> {
        self.root = node;
        match self.kernel_inner(node, dest) {
            Ok((kind, body)) => {
                self.use_buffer(dest, BufferRole::Output);
                let mut params = std::mem::take(&mut self.params);
                params.sort_by_key(|p| p.id);
                let name = format!("k{index}_{}", self.g.node(node).op.name().replace('.', "_"));
                let mut k = Kernel {
                    name,
                    kind,
                    params,
                    symbols: Vec::new(),
                    config: KernelConfig {
                        workgroup: [1, 1, 1],
                    },
                    body,
                };
                k.symbols = k.free_symbols();
                heuristic::annotate(&mut k);
                Ok(Ok(k))
            }
            Err(Fail::Need(n)) => Ok(Err(Need(n))),
            Err(Fail::Unsupported(e)) => Err(e),
        }
    }

    fn reductions_in_cone(&self, node: NodeId) -> Vec<NodeId> {
        let mut seen = vec![false; self.g.nodes().len()];
        let mut stack = vec![node];
        let mut out = Vec::new();
        while let Some(n) = stack.pop() {
            if std::mem::replace(&mut seen[n.index()], true) {
                continue;
            }
            let role = self.roles[n.index()];
            if n != node && role != Role::Inline {
                continue;
            }
            if role == Role::Source {
                continue;
            }
            let nd = self.g.node(n);
            if matches!(nd.op, Op::Reduce { .. } | Op::MatMul { .. }) {
                out.push(n);
            }
            stack.extend(nd.inputs.iter().copied());
        }
        out.sort();
        out
    }

    /// A matmul inline in this kernel whose every consumer is a step-1 slice of its last axis,
    /// all of one width: that width and the distinct slice starts. Such a product (a merged
    /// projection sliced apart again) is computed over a row with that width, one contraction
    /// phase per start reading the columns `start + j`, like sibling matmuls.
    fn sliced(&self, m: NodeId) -> Option<(Dim, Vec<Dim>)> {
        if m == self.root
            || self.roles[m.index()] != Role::Inline
            || !matches!(self.g.node(m).op, Op::MatMul { .. })
        {
            return None;
        }
        let last = self.shape(m).len() - 1;
        let mut width: Option<Dim> = None;
        let mut starts: Vec<Dim> = Vec::new();
        for (i, nd) in self.g.nodes().iter().enumerate() {
            if self.roles[i] == Role::Dead || !nd.inputs.contains(&m) {
                continue;
            }
            let Op::Slice {
                axis,
                start,
                step: 1,
                ..
            } = &nd.op
            else {
                return None;
            };
            let w = dims(&nd.ty.shape)[last].clone();
            if *axis != last || width.as_ref().is_some_and(|x| *x != w) {
                return None;
            }
            width = Some(w);
            if !starts.contains(start) {
                starts.push(start.clone());
            }
        }
        width.map(|w| (w, starts))
    }

    /// The row a reduction-like node is computed over.
    fn row_of(&self, r: NodeId) -> Vec<Dim> {
        let nd = self.g.node(r);
        if let Some((w, _)) = self.sliced(r) {
            let mut s = self.shape(r);
            *s.last_mut().expect("matmul rank >= 2") = w;
            return s;
        }
        match &nd.op {
            Op::Reduce { axes, .. } => self
                .shape(nd.inputs[0])
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !axes.contains(i))
                .map(|(_, d)| d)
                .collect(),
            _ => self.shape(r),
        }
    }

    fn kernel_inner(&mut self, node: NodeId, dest: BufferId) -> R<(KernelKind, Vec<Stmt>)> {
        let nd = self.g.node(node);
        if let Op::Scatter { axis, reduce } = nd.op {
            return self.scatter(node, dest, axis, reduce);
        }
        // What is stored: the node over its shape, or, for a slice update stored into its
        // own state's buffer (an in-place state update, see `super::in_place_updates`), only
        // its source, over the source's shape, at the offset along the axis.
        let (value, shape, dest_shape, offset) = match (&nd.op, &self.buffers[dest.0 as usize].kind)
        {
            (Op::SliceUpdate { axis, start }, BufferKind::State(_)) => (
                nd.inputs[1],
                self.shape(nd.inputs[1]),
                self.shape(node),
                Some((*axis, start.clone())),
            ),
            _ => (node, self.shape(node), self.shape(node), None),
        };
        let at = |idx: &[Dim]| match &offset {
            Some((axis, start)) => {
                let mut i = idx.to_vec();
                i[*axis] = i[*axis].clone() + start.clone();
                lin(&i, &dest_shape)
            }
            None => lin(idx, &dest_shape),
        };
        let reds = self.reductions_in_cone(node);
        if reds.is_empty() {
            let vars: Vec<String> = (0..shape.len()).map(|i| format!("i{i}")).collect();
            let idx = syms(&vars);
            let body = self.scoped(|cx| {
                let value = cx.expr(value, &idx)?;
                Ok(vec![Stmt::Store {
                    buffer: dest,
                    index: at(&idx),
                    value,
                }])
            })?;
            return Ok((
                KernelKind::Elementwise,
                nest(&vars, &shape, LoopKind::Parallel, body),
            ));
        }
        let top = *reds.last().expect("non-empty");
        let row_shape = self.row_of(top);
        for &r in &reds {
            if self.row_of(r) != row_shape {
                return Err(Fail::Need(r));
            }
        }
        let row_vars: Vec<String> = (0..row_shape.len()).map(|i| format!("r{i}")).collect();
        self.row = syms(&row_vars);
        self.row_shape = row_shape.clone();
        let mut body = Vec::new();
        for &r in &reds {
            let phase = self.phase(r)?;
            body.extend(phase);
        }
        // The epilogue: at the row index, or over the reduced axes of a reduction's input.
        let mut final_axes: Option<(Vec<usize>, bool)> = None;
        if shape != row_shape {
            for &r in &reds {
                let nd = self.g.node(r);
                if let Op::Reduce { axes, .. } = &nd.op {
                    let x = self.shape(nd.inputs[0]);
                    let kept: Vec<Dim> = x
                        .iter()
                        .enumerate()
                        .map(|(i, d)| {
                            if axes.contains(&i) {
                                Dim::constant(1)
                            } else {
                                d.clone()
                            }
                        })
                        .collect();
                    if x == shape {
                        final_axes = Some((axes.clone(), true));
                        break;
                    }
                    if kept == shape {
                        final_axes = Some((axes.clone(), false));
                        break;
                    }
                }
            }
            if final_axes.is_none() {
                return Err(Fail::Need(top));
            }
        }
        let store = match final_axes {
            None => {
                let idx = self.row.clone();
                self.scoped(|cx| {
                    let value = cx.expr(value, &idx)?;
                    Ok(vec![Stmt::Store {
                        buffer: dest,
                        index: at(&idx),
                        value,
                    }])
                })?
            }
            Some((axes, looped)) => {
                let mut idx = Vec::new();
                let mut vars = Vec::new();
                let mut extents = Vec::new();
                let mut rows = self.row.clone().into_iter();
                for (i, d) in shape.iter().enumerate() {
                    if axes.contains(&i) {
                        if looped {
                            let v = self.fresh("j");
                            idx.push(Dim::symbol(&v));
                            vars.push(v);
                            extents.push(d.clone());
                        } else {
                            idx.push(Dim::constant(0));
                        }
                    } else {
                        idx.push(rows.next().unwrap_or(Dim::constant(0)));
                    }
                }
                let inner = self.scoped(|cx| {
                    let value = cx.expr(value, &idx)?;
                    Ok(vec![Stmt::Store {
                        buffer: dest,
                        index: at(&idx),
                        value,
                    }])
                })?;
                nest(&vars, &extents, LoopKind::Parallel, inner)
            }
        };
        body.extend(store);
        let kind = if reds
            .iter()
            .any(|r| matches!(self.g.node(*r).op, Op::MatMul { .. }))
        {
            KernelKind::MatMul
        } else {
            KernelKind::Reduction
        };
        Ok((kind, nest(&row_vars, &row_shape, LoopKind::Parallel, body)))
    }

    /// One accumulation phase: declares, the reduction loops, and the row-scalar result.
    fn phase(&mut self, r: NodeId) -> R<Vec<Stmt>> {
        let nd = self.g.node(r);
        let out_dtype = nd.ty.dtype;
        let mut stmts = Vec::new();
        match nd.op.clone() {
            Op::Reduce { op, axes, .. } => {
                let x = nd.inputs[0];
                let xs = self.shape(x);
                let d = self.g.ty(x).dtype;
                let mut idx = Vec::new();
                let mut vars = Vec::new();
                let mut extents = Vec::new();
                let mut rows = self.row.clone().into_iter();
                for (i, ext) in xs.iter().enumerate() {
                    if axes.contains(&i) {
                        let v = self.fresh("k");
                        idx.push(Dim::symbol(&v));
                        vars.push(v);
                        extents.push(ext.clone());
                    } else {
                        idx.push(rows.next().unwrap_or(Dim::constant(0)));
                    }
                }
                let acc = self.fresh("acc");
                let result;
                let body = match op {
                    ReduceOp::Sum | ReduceOp::Prod => {
                        let ad = if d.is_float() { DType::F64 } else { DType::I64 };
                        let (bop, init) = if op == ReduceOp::Sum {
                            (BinaryOp::Add, 0)
                        } else {
                            (BinaryOp::Mul, 1)
                        };
                        let init = if ad == DType::F64 {
                            Expr::constant(Scalar::Float(init as f64), ad)
                        } else {
                            i64c(init)
                        };
                        stmts.push(Stmt::Declare {
                            var: acc.clone(),
                            dtype: ad,
                            init,
                        });
                        result = Expr::cast(out_dtype, Expr::var(&acc, ad));
                        self.scoped(|cx| {
                            let v = Expr::cast(ad, cx.expr(x, &idx)?);
                            Ok(vec![Stmt::Assign {
                                var: acc.clone(),
                                value: Expr::binary(bop, ad, Expr::var(&acc, ad), v),
                            }])
                        })?
                    }
                    ReduceOp::Max | ReduceOp::Min => {
                        let max = op == ReduceOp::Max;
                        let init = if d.is_float() {
                            Scalar::Float(if max {
                                f64::NEG_INFINITY
                            } else {
                                f64::INFINITY
                            })
                        } else {
                            let (lo, hi) = d.int_range().unwrap_or((i64::MIN, i64::MAX));
                            Scalar::Int(if max { lo } else { hi })
                        };
                        stmts.push(Stmt::Declare {
                            var: acc.clone(),
                            dtype: d,
                            init: Expr::constant(init, d),
                        });
                        result = Expr::var(&acc, d);
                        let bop = if max { BinaryOp::Max } else { BinaryOp::Min };
                        self.scoped(|cx| {
                            let v = cx.expr(x, &idx)?;
                            Ok(vec![Stmt::Assign {
                                var: acc.clone(),
                                value: Expr::binary(bop, d, Expr::var(&acc, d), v),
                            }])
                        })?
                    }
                    ReduceOp::ArgMax => {
                        let bi = self.fresh("arg");
                        let init = if d.is_float() {
                            Scalar::Float(0.0)
                        } else {
                            Scalar::Int(0)
                        };
                        stmts.push(Stmt::Declare {
                            var: acc.clone(),
                            dtype: d,
                            init: Expr::constant(init, d),
                        });
                        stmts.push(Stmt::Declare {
                            var: bi.clone(),
                            dtype: DType::I64,
                            init: i64c(-1),
                        });
                        result = Expr::var(&bi, DType::I64);
                        let along = idx[axes[0]].clone();
                        let (v, c) = (self.fresh("v"), self.fresh("c"));
                        self.scoped(|cx| {
                            let value = cx.expr(x, &idx)?;
                            let (bv, vv) = (Expr::var(&acc, d), Expr::var(&v, d));
                            let first = Expr::binary(
                                BinaryOp::Lt,
                                DType::I64,
                                Expr::var(&bi, DType::I64),
                                i64c(0),
                            );
                            let gt = Expr::binary(BinaryOp::Gt, d, vv.clone(), bv.clone());
                            let better = if d.is_float() {
                                let b_ok = Expr::binary(BinaryOp::Eq, d, bv.clone(), bv.clone());
                                let v_nan = Expr::binary(BinaryOp::Ne, d, vv.clone(), vv.clone());
                                or(first, and(b_ok, or(v_nan, gt)))
                            } else {
                                or(first, gt)
                            };
                            let cv = Expr::var(&c, DType::Bool);
                            Ok(vec![
                                Stmt::Let {
                                    var: v.clone(),
                                    dtype: d,
                                    value,
                                },
                                Stmt::Let {
                                    var: c.clone(),
                                    dtype: DType::Bool,
                                    value: better,
                                },
                                Stmt::Assign {
                                    var: acc.clone(),
                                    value: Expr::select(cv.clone(), vv, bv),
                                },
                                Stmt::Assign {
                                    var: bi.clone(),
                                    value: Expr::select(
                                        cv,
                                        Expr::Index(along.clone()),
                                        Expr::var(&bi, DType::I64),
                                    ),
                                },
                            ])
                        })?
                    }
                };
                stmts.extend(nest(&vars, &extents, LoopKind::Reduction, body));
                let res = self.fresh("red");
                stmts.push(Stmt::Let {
                    var: res.clone(),
                    dtype: result.dtype(),
                    value: result,
                });
                self.done.insert(r, Expr::var(&res, out_dtype));
            }
            Op::MatMul { trans_a, trans_b } => {
                let rl = self.row.len();
                let col = self.row[rl - 1].clone();
                match self.sliced(r) {
                    Some((_, starts)) => {
                        let mut done = Vec::new();
                        for start in starts {
                            // The column exactly as a slice of the product indexes it.
                            let c = start + col.clone() * 1;
                            let (ph, e) = self.matmul_phase(r, trans_a, trans_b, c.clone())?;
                            stmts.extend(ph);
                            done.push((c, e));
                        }
                        self.cols.insert(r, done);
                    }
                    None => {
                        let (ph, e) = self.matmul_phase(r, trans_a, trans_b, col)?;
                        stmts.extend(ph);
                        self.done.insert(r, e);
                    }
                }
            }
            _ => return Err(self.unsupported(r, "not a reduction")),
        }
        Ok(stmts)
    }

    /// One contraction phase of matmul `r` at the current row and output column `n`.
    fn matmul_phase(
        &mut self,
        r: NodeId,
        trans_a: bool,
        trans_b: bool,
        n: Dim,
    ) -> R<(Vec<Stmt>, Expr)> {
        let nd = self.g.node(r);
        let out_dtype = nd.ty.dtype;
        let mut stmts = Vec::new();
        let (a, b) = (nd.inputs[0], nd.inputs[1]);
        let ad = if out_dtype.is_float() {
            DType::F64
        } else {
            DType::I64
        };
        let l = self.fresh("k");
        let lv = Dim::symbol(&l);
        let rl = self.row.len();
        let m = self.row[rl - 2].clone();
        let operand = |cx: &Self, x: NodeId, last: [Dim; 2]| -> Vec<Dim> {
            let s = cx.shape(x);
            let rb = s.len() - 2;
            let mut idx: Vec<Dim> = (0..rb)
                .map(|j| {
                    if s[j] == 1 {
                        Dim::constant(0)
                    } else {
                        cx.row[rl - 2 - rb + j].clone()
                    }
                })
                .collect();
            idx.extend(last);
            idx
        };
        let ai = operand(
            self,
            a,
            if trans_a {
                [lv.clone(), m.clone()]
            } else {
                [m.clone(), lv.clone()]
            },
        );
        let bi = operand(
            self,
            b,
            if trans_b {
                [n.clone(), lv.clone()]
            } else {
                [lv.clone(), n.clone()]
            },
        );
        let sa = self.shape(a);
        let k_ext = if trans_a {
            sa[sa.len() - 2].clone()
        } else {
            sa[sa.len() - 1].clone()
        };
        let acc = self.fresh("acc");
        let init = if ad == DType::F64 {
            Expr::constant(Scalar::Float(0.0), ad)
        } else {
            i64c(0)
        };
        stmts.push(Stmt::Declare {
            var: acc.clone(),
            dtype: ad,
            init,
        });
        let body = self.scoped(|cx| {
            let x = Expr::cast(ad, cx.expr(a, &ai)?);
            let y = Expr::cast(ad, cx.expr(b, &bi)?);
            Ok(vec![Stmt::Assign {
                var: acc.clone(),
                value: Expr::binary(
                    BinaryOp::Add,
                    ad,
                    Expr::var(&acc, ad),
                    Expr::binary(BinaryOp::Mul, ad, x, y),
                ),
            }])
        })?;
        stmts.extend(nest(&[l], &[k_ext], LoopKind::Reduction, body));
        let res = self.fresh("mm");
        stmts.push(Stmt::Let {
            var: res.clone(),
            dtype: out_dtype,
            value: Expr::cast(out_dtype, Expr::var(&acc, ad)),
        });
        Ok((stmts, Expr::var(&res, out_dtype)))
    }

    fn scatter(
        &mut self,
        node: NodeId,
        dest: BufferId,
        axis: usize,
        reduce: ScatterReduce,
    ) -> R<(KernelKind, Vec<Stmt>)> {
        let nd = self.g.node(node);
        let (dst, idxn, src) = (nd.inputs[0], nd.inputs[1], nd.inputs[2]);
        let d = nd.ty.dtype;
        let shape = self.shape(node);
        let ishape = self.shape(idxn);
        let via_scratch = reduce == ScatterReduce::Add && d.is_float();
        let (target, td) = if via_scratch {
            let id = BufferId(self.buffers.len() as u32);
            self.buffers.push(BufferInfo {
                id,
                dtype: DType::F64,
                shape: nd.ty.shape.clone(),
                size: nd.ty.shape.numel(),
                kind: BufferKind::Scratch,
                node: None,
            });
            self.use_buffer(id, BufferRole::Scratch);
            (id, DType::F64)
        } else {
            (dest, d)
        };
        let vars: Vec<String> = (0..shape.len()).map(|i| format!("i{i}")).collect();
        let idx = syms(&vars);
        let copy = self.scoped(|cx| {
            let v = Expr::cast(td, cx.expr(dst, &idx)?);
            Ok(vec![Stmt::Store {
                buffer: target,
                index: lin(&idx, &shape),
                value: v,
            }])
        })?;
        let mut body = nest(&vars, &shape, LoopKind::Parallel, copy);
        let jvars: Vec<String> = (0..ishape.len()).map(|i| format!("j{i}")).collect();
        let jidx = syms(&jvars);
        let t = self.fresh("t");
        let write = self.scoped(|cx| {
            let tv = Expr::cast(DType::I64, cx.expr(idxn, &jidx)?);
            let mut at = jidx.clone();
            at[axis] = Dim::symbol(&t);
            let sv = Expr::cast(td, cx.expr(src, &jidx)?);
            let at = lin(&at, &shape);
            let value = if reduce == ScatterReduce::Add {
                Expr::binary(
                    BinaryOp::Add,
                    td,
                    Expr::Load {
                        buffer: target,
                        dtype: td,
                        index: at.clone(),
                    },
                    sv,
                )
            } else {
                sv
            };
            Ok(vec![
                Stmt::Let {
                    var: t.clone(),
                    dtype: DType::I64,
                    value: tv,
                },
                Stmt::Store {
                    buffer: target,
                    index: at,
                    value,
                },
            ])
        })?;
        body.extend(nest(&jvars, &ishape, LoopKind::Serial, write));
        if via_scratch {
            let flat = lin(&idx, &shape);
            let back = vec![Stmt::Store {
                buffer: dest,
                index: flat.clone(),
                value: Expr::cast(
                    d,
                    Expr::Load {
                        buffer: target,
                        dtype: DType::F64,
                        index: flat,
                    },
                ),
            }];
            body.extend(nest(&vars, &shape, LoopKind::Parallel, back));
        }
        Ok((KernelKind::Scatter, body))
    }

    fn load(&mut self, n: NodeId, idx: &[Dim]) -> R<Expr> {
        let Some(&b) = self.bufs.get(&n) else {
            return Err(self.unsupported(n, "no buffer"));
        };
        self.use_buffer(b, BufferRole::Input);
        let index = lin(idx, &self.shape(n));
        Ok(match self.g.ty(n).dtype {
            DType::Quant(q) => Expr::LoadDequant {
                buffer: b,
                qtype: q,
                index,
            },
            dtype => Expr::Load {
                buffer: b,
                dtype,
                index,
            },
        })
    }

    /// Whether `idx` is the current row index. An axis of extent 1 only has index 0, so any
    /// index there matches (a broadcast reads such an axis at the constant 0, the row loop
    /// at its variable).
    fn at_row(&self, idx: &[Dim]) -> bool {
        idx.len() == self.row.len()
            && idx
                .iter()
                .zip(&self.row)
                .zip(&self.row_shape)
                .all(|((i, r), e)| i == r || *e == 1)
    }

    /// The scalar value of node `n` at index `idx`.
    fn expr(&mut self, n: NodeId, idx: &[Dim]) -> R<Expr> {
        let role = self.roles[n.index()];
        if role == Role::Source || (role == Role::Root && n != self.root) {
            return self.load(n, idx);
        }
        let nd = self.g.node(n);
        let cse = self.uses[n.index()] > 1
            && self.lazy == 0
            && matches!(
                nd.op,
                Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast { .. }
            );
        if cse {
            if let Some(e) = self.memo.get(&(n, idx.to_vec())) {
                return Ok(e.clone());
            }
        }
        let e = self.expr_uncached(n, idx)?;
        if cse {
            let v = self.fresh("v");
            let dtype = e.dtype();
            self.prelude.push(Stmt::Let {
                var: v.clone(),
                dtype,
                value: e,
            });
            let var = Expr::var(&v, dtype);
            self.memo.insert((n, idx.to_vec()), var.clone());
            return Ok(var);
        }
        Ok(e)
    }

    fn lazy_expr(&mut self, n: NodeId, idx: &[Dim]) -> R<Expr> {
        self.lazy += 1;
        let r = self.expr(n, idx);
        self.lazy -= 1;
        r
    }

    fn expr_uncached(&mut self, n: NodeId, idx: &[Dim]) -> R<Expr> {
        let nd = self.g.node(n);
        let dtype = nd.ty.dtype;
        let ins = nd.inputs.clone();
        let in_shape = |cx: &Self, k: usize| cx.shape(ins[k]);
        Ok(match &nd.op {
            Op::Full { value, .. } => Expr::constant(*value, dtype),
            Op::Constant { value } => {
                let s = match value.storage() {
                    Storage::Bool(v) => Scalar::Bool(v[0]),
                    _ if dtype.is_float() => Scalar::Float(
                        value
                            .to_f64_vec()
                            .map_err(|_| self.unsupported(n, "constant"))?[0],
                    ),
                    _ => Scalar::Int(
                        value
                            .to_i64_vec()
                            .map_err(|_| self.unsupported(n, "constant"))?[0],
                    ),
                };
                Expr::constant(s, dtype)
            }
            Op::Iota { axis, .. } => Expr::cast(dtype, Expr::Index(idx[*axis].clone())),
            Op::DimValue { dim, .. } => Expr::cast(dtype, Expr::Index(dim.clone())),
            Op::Unary(u) => {
                let x = self.expr(ins[0], idx)?;
                Expr::unary(*u, dtype, x)
            }
            Op::Binary(b) => {
                let od = self.g.ty(ins[0]).dtype;
                let (b, x, y) = (*b, self.expr(ins[0], idx)?, self.expr(ins[1], idx)?);
                Expr::binary(b, od, x, y)
            }
            Op::Where => {
                let c = self.expr(ins[0], idx)?;
                let a = self.expr(ins[1], idx)?;
                let b = self.expr(ins[2], idx)?;
                Expr::select(c, a, b)
            }
            Op::Cast { to } => {
                let to = *to;
                Expr::cast(to, self.expr(ins[0], idx)?)
            }
            Op::Reduce { axes, keepdim, .. } => {
                let ri: Vec<Dim> = if *keepdim {
                    idx.iter()
                        .enumerate()
                        .filter(|(i, _)| !axes.contains(i))
                        .map(|(_, d)| d.clone())
                        .collect()
                } else {
                    idx.to_vec()
                };
                match self.done.get(&n) {
                    Some(e) if self.at_row(&ri) => e.clone(),
                    _ => return Err(Fail::Need(n)),
                }
            }
            Op::MatMul { .. } => {
                if let Some(cols) = self.cols.get(&n) {
                    let l = idx.len() - 1;
                    let hit = cols.iter().find(|(c, _)| {
                        idx.len() == self.row.len()
                            && self.at_row(&[&idx[..l], &self.row[l..]].concat())
                            && idx[l] == *c
                    });
                    match hit {
                        Some((_, e)) => e.clone(),
                        None => return Err(Fail::Need(n)),
                    }
                } else {
                    match self.done.get(&n) {
                        Some(e) if self.at_row(idx) => e.clone(),
                        _ => return Err(Fail::Need(n)),
                    }
                }
            }
            Op::Reshape { .. } => {
                let i = reshape_index(idx, &self.shape(n), &in_shape(self, 0));
                self.expr(ins[0], &i)?
            }
            Op::Permute { perm } => {
                let mut i = vec![Dim::constant(0); idx.len()];
                for (o, &p) in perm.iter().enumerate() {
                    i[p] = idx[o].clone();
                }
                self.expr(ins[0], &i)?
            }
            Op::Expand { .. } => {
                let s = in_shape(self, 0);
                let off = idx.len() - s.len();
                let i: Vec<Dim> = s
                    .iter()
                    .enumerate()
                    .map(|(j, d)| {
                        if *d == 1 {
                            Dim::constant(0)
                        } else {
                            idx[off + j].clone()
                        }
                    })
                    .collect();
                self.expr(ins[0], &i)?
            }
            Op::Slice {
                axis, start, step, ..
            } => {
                let mut i = idx.to_vec();
                i[*axis] = start.clone() + idx[*axis].clone() * *step;
                self.expr(ins[0], &i)?
            }
            Op::Flip { axes } => {
                let s = in_shape(self, 0);
                let mut i = idx.to_vec();
                for &a in axes {
                    i[a] = s[a].clone() - 1 - idx[a].clone();
                }
                self.expr(ins[0], &i)?
            }
            Op::Pad { pads, value } => {
                let s = in_shape(self, 0);
                let mut i = Vec::new();
                let mut cond: Option<Expr> = None;
                for (k, (lo, hi)) in pads.iter().enumerate() {
                    let j = idx[k].clone() - lo.clone();
                    if !(*lo == 0 && *hi == 0) {
                        let c = and(
                            idx_cmp(BinaryOp::Ge, j.clone(), Dim::constant(0)),
                            idx_cmp(BinaryOp::Lt, j.clone(), s[k].clone()),
                        );
                        cond = Some(match cond {
                            Some(p) => and(p, c),
                            None => c,
                        });
                    }
                    i.push(j);
                }
                let (value, inner) = (*value, self.lazy_expr(ins[0], &i)?);
                match cond {
                    Some(c) => Expr::select(c, inner, Expr::constant(value, dtype)),
                    None => inner,
                }
            }
            Op::Concat { axis } => {
                let axis = *axis;
                let mut offs = vec![Dim::constant(0)];
                for k in 0..ins.len() {
                    let s = in_shape(self, k);
                    let last = offs[k].clone();
                    offs.push(last + s[axis].clone());
                }
                let at = |k: usize| {
                    let mut i = idx.to_vec();
                    i[axis] = idx[axis].clone() - offs[k].clone();
                    i
                };
                let last = ins.len() - 1;
                let mut e = self.lazy_expr(ins[last], &at(last))?;
                for k in (0..last).rev() {
                    let c = idx_cmp(BinaryOp::Lt, idx[axis].clone(), offs[k + 1].clone());
                    let a = self.lazy_expr(ins[k], &at(k))?;
                    e = Expr::select(c, a, e);
                }
                e
            }
            Op::IndexSelect { axis } | Op::Gather { axis } => {
                let axis = *axis;
                let pos: Vec<Dim> = if matches!(nd.op, Op::IndexSelect { .. }) {
                    vec![idx[axis].clone()]
                } else {
                    idx.to_vec()
                };
                let t = self.fresh("t");
                let value = Expr::cast(DType::I64, self.expr(ins[1], &pos)?);
                let mut i = idx.to_vec();
                i[axis] = Dim::symbol(&t);
                let body = self.lazy_expr(ins[0], &i)?;
                Expr::Bind {
                    var: t,
                    value: Box::new(value),
                    body: Box::new(body),
                }
            }
            Op::SliceUpdate { axis, start } => {
                let axis = *axis;
                let len = in_shape(self, 1)[axis].clone();
                let i = idx[axis].clone();
                let c = and(
                    idx_cmp(BinaryOp::Ge, i.clone(), start.clone()),
                    idx_cmp(BinaryOp::Lt, i.clone(), start.clone() + len),
                );
                let mut si = idx.to_vec();
                si[axis] = i - start.clone();
                let a = self.lazy_expr(ins[1], &si)?;
                let b = self.lazy_expr(ins[0], idx)?;
                Expr::select(c, a, b)
            }
            Op::Scatter { .. } | Op::Input { .. } | Op::Param { .. } | Op::State { .. } => {
                return Err(self.unsupported(n, "must have a buffer"))
            }
        })
    }
}
