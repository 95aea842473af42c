//! The printer: one loop-IR kernel to one WGSL module (see the module docs of
//! [`super`] for the mapping).

use super::{dequant, prelude, Binding, Layout, MetaSlot, Target, WgslError, WgslKernel};
use crate::loop_ir::{BufferId, Expr, Kernel, KernelKind, Loop, LoopKind, Stmt};
use kiln_ir::{BinaryOp, DType, Dim, DimAtom, QuantType, Scalar, UnaryOp};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write;

/// Threads per workgroup of a cooperative kernel (a power of two: the tree combine halves it).
pub const COOP_THREADS: u32 = 64;

type R<T> = Result<T, String>;

/// How a kernel's iterations map to threads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Flat,
    Coop,
    Single,
}

/// A reduction the threads of a workgroup can split: its (perfect) loop nest and its
/// accumulator, updated as `acc = op(acc, x)` once per iteration.
struct Split<'a> {
    loops: Vec<&'a Loop>,
    acc: String,
    op: BinaryOp,
    dtype: DType,
}

struct Param {
    binding: usize,
    atomic: bool,
    slot: usize,
    dtype: DType,
}

struct Emitter {
    out: String,
    depth: usize,
    tmp: usize,
    helpers: BTreeSet<&'static str>,
    f16: bool,
    dequant: BTreeSet<(usize, QuantType)>,
    params: HashMap<BufferId, (usize, Param)>,
    symbols: HashSet<String>,
    renames: HashMap<String, String>,
    /// Stores are done by thread 0 only (cooperative mode, outside a split loop).
    guard_stores: bool,
    red_types: BTreeSet<&'static str>,
    target: Target,
    /// Data-dependent index symbols (integer lets and binds): indices that mention one are
    /// checked against their buffer's length.
    data_syms: HashSet<String>,
    /// Each buffer's length in elements (as the kernel declares it).
    lens: HashMap<BufferId, Dim>,
    /// Whether the kernel reports through the status binding.
    status: bool,
    /// Whether a subgroup op was emitted (`main` then takes the subgroup builtins; naga 30
    /// accepts subgroup ops without `enable subgroups;`, which it does not parse yet).
    used_subgroups: bool,
}

/// Emits `kernel` (not yet validated).
pub(super) fn emit(
    kernel: &Kernel,
    layout: &Layout,
    target: Target,
) -> Result<WgslKernel, WgslError> {
    emit_inner(kernel, layout, target).map_err(|message| WgslError::Unsupported {
        kernel: kernel.name.clone(),
        message,
    })
}

fn emit_inner(kernel: &Kernel, layout: &Layout, target: Target) -> R<WgslKernel> {
    // Bindings: the layout's groups first (those with a parameter here), then one each.
    let mut bindings: Vec<Binding> = Vec::new();
    let mut binding_of: HashMap<BufferId, usize> = HashMap::new();
    for group in &layout.shared {
        let here: Vec<BufferId> = group
            .iter()
            .copied()
            .filter(|b| kernel.param(*b).is_some())
            .collect();
        if here.is_empty() {
            continue;
        }
        for b in &here {
            binding_of.insert(*b, bindings.len());
        }
        bindings.push(Binding {
            buffers: here,
            writable: false,
        });
    }
    for p in &kernel.params {
        if let std::collections::hash_map::Entry::Vacant(e) = binding_of.entry(p.id) {
            e.insert(bindings.len());
            bindings.push(Binding {
                buffers: vec![p.id],
                writable: false,
            });
        }
    }
    let mut stored: Vec<BufferId> = Vec::new();
    stores_of(&kernel.body, &mut stored);
    let mut atomic = vec![false; bindings.len()];
    for b in &stored {
        let Some(&i) = binding_of.get(b) else {
            return Err(format!("stores to {b}, which is not a parameter"));
        };
        bindings[i].writable = true;
        let dtype = kernel.param(*b).map(|p| p.dtype).unwrap_or(DType::F32);
        if sub_word(dtype) {
            atomic[i] = true;
        }
    }
    let mut meta: Vec<MetaSlot> = kernel
        .symbols
        .iter()
        .map(|s| MetaSlot::Symbol(s.clone()))
        .collect();
    let mut params = HashMap::new();
    for (i, p) in kernel.params.iter().enumerate() {
        let binding = binding_of[&p.id];
        params.insert(
            p.id,
            (
                i,
                Param {
                    binding,
                    atomic: atomic[binding],
                    slot: meta.len(),
                    dtype: p.dtype,
                },
            ),
        );
        meta.push(MetaSlot::Offset(p.id));
    }

    let status_slot = meta.len();
    meta.push(MetaSlot::StatusWord);
    // The GPU nest (see the module docs of [`super`]).
    let nest = kernel.collapsible_nest(true);
    let body: &[Stmt] = nest
        .last()
        .map(|l| l.body.as_slice())
        .unwrap_or(&kernel.body);
    // Matmuls stay flat (one thread per output element, the contraction in order): a
    // workgroup per output element pays its barriers and tree for every element.
    let splittable = kernel.kind != KernelKind::MatMul
        && body
            .iter()
            .any(|s| matches!(s, Stmt::Loop(l) if split_of(l).is_some()));
    let mode = if splittable {
        Mode::Coop
    } else if nest.is_empty() {
        Mode::Single
    } else {
        Mode::Flat
    };
    let wg: u32 = match mode {
        Mode::Coop => COOP_THREADS,
        // Top-level parallel loops are split across the workgroup (long single-thread loops
        // also trip drivers: lavapipe drops work past some tens of thousands of iterations).
        Mode::Single => COOP_THREADS,
        Mode::Flat => {
            let w: u32 = kernel.config.workgroup.iter().product();
            w.clamp(1, 256)
        }
    };
    let total = nest
        .iter()
        .fold(Dim::from(1), |acc, l| acc * l.extent.clone());
    let workgroups = match mode {
        Mode::Coop => total.clone(),
        Mode::Single => Dim::from(1),
        Mode::Flat => (total.clone() + Dim::from(wg as i64 - 1)).floor_div(&Dim::from(wg as i64)),
    };

    let mut e = Emitter {
        out: String::new(),
        depth: 1,
        tmp: 0,
        helpers: BTreeSet::new(),
        f16: false,
        dequant: BTreeSet::new(),
        params,
        symbols: kernel.symbols.iter().cloned().collect(),
        renames: HashMap::new(),
        guard_stores: mode != Mode::Flat,
        red_types: BTreeSet::new(),
        target,
        data_syms: HashSet::new(),
        lens: kernel
            .params
            .iter()
            .map(|p| (p.id, p.len.clone()))
            .collect(),
        status: false,
        used_subgroups: false,
    };
    for (j, s) in kernel.symbols.iter().enumerate() {
        e.line(&format!("let s_{s} = {};", meta_ref(j)));
    }
    for p in &kernel.params {
        let slot = e.params[&p.id].1.slot;
        e.line(&format!("let o_{} = {};", p.id.0, meta_ref(slot)));
    }
    e.line(&format!("let kiln_sw = u32({});", meta_ref(status_slot)));
    e.line("let kiln_g = i32(wid.x + wid.y * nwg.x);");
    if !nest.is_empty() {
        let n = e.dim(&total)?;
        e.line(&format!("let kiln_n = {n};"));
        let flat = if mode == Mode::Flat {
            e.line(&format!("let kiln_i = kiln_g * {wg}i + i32(lid);"));
            "kiln_i"
        } else {
            "kiln_g"
        };
        e.line(&format!("if ({flat} >= kiln_n) {{ return; }}"));
        // Recover the nest's loop variables, innermost fastest.
        let mut stride = "1i".to_string();
        let mut lets = Vec::new();
        for (j, l) in nest.iter().enumerate().rev() {
            let ext = e.dim(&l.extent)?;
            // At least 1, so that no division by a constant zero reaches naga.
            e.line(&format!("let kiln_e{j} = max({ext}, 1i);"));
            let v = e.name(&l.var);
            let q = if stride == "1i" {
                flat.to_string()
            } else {
                format!("({flat} / ({stride}))")
            };
            lets.push(if j == 0 {
                format!("let {v} = {q};")
            } else {
                format!("let {v} = {q} % kiln_e{j};")
            });
            stride = if stride == "1i" {
                format!("kiln_e{j}")
            } else {
                format!("{stride} * kiln_e{j}")
            };
        }
        for l in lets.into_iter().rev() {
            e.line(&l);
        }
    }
    match mode {
        Mode::Flat => e.stmts(body)?,
        _ => e.coop_body(body)?,
    }

    // Assemble the module.
    let mut src = String::new();
    writeln!(src, "// kernel {}", kernel.name).unwrap();
    let vecs = meta.len().div_ceil(4).max(1);
    writeln!(src, "struct KilnMeta {{ v: array<vec4<i32>, {vecs}> }}").unwrap();
    writeln!(
        src,
        "@group(0) @binding(0) var<uniform> kiln_meta: KilnMeta;"
    )
    .unwrap();
    for (i, b) in bindings.iter().enumerate() {
        let (access, elem) = match (b.writable, atomic[i]) {
            (_, true) => ("read_write", "atomic<u32>"),
            (true, false) => ("read_write", "u32"),
            (false, false) => ("read", "u32"),
        };
        let names: Vec<String> = b.buffers.iter().map(|x| x.to_string()).collect();
        writeln!(
            src,
            "@group(0) @binding({}) var<storage, {access}> kiln_b{}: array<{elem}>; // {}",
            i + 1,
            i + 1,
            names.join(", ")
        )
        .unwrap();
    }
    if e.status {
        writeln!(
            src,
            "@group(0) @binding({}) var<storage, read_write> kiln_status: array<atomic<u32>>;",
            bindings.len() + 1
        )
        .unwrap();
    }
    for t in &e.red_types {
        writeln!(
            src,
            "var<workgroup> kiln_red_{t}: array<{t}, {COOP_THREADS}>;"
        )
        .unwrap();
    }
    src.push('\n');
    src.push_str(&prelude::helpers_source(&e.helpers));
    if e.f16 || !e.dequant.is_empty() {
        src.push_str(&dequant::f16_helper());
        src.push_str("\n\n");
    }
    for (pi, q) in &e.dequant {
        let p = &kernel.params[*pi];
        let (_, param) = &e.params[&p.id];
        let word = word_ref(
            param.binding,
            param.atomic,
            &format!("{} + (b >> 2u)", meta_ref(param.slot)),
        );
        writeln!(
            src,
            "fn kiln_byte_{id}(b: i32) -> u32 {{ return ({word} >> (u32(b & 3i) * 8u)) & 0xffu; }}\n",
            id = p.id.0
        )
        .unwrap();
        src.push_str(&dequant::dequant_function(
            *q,
            &format!("kiln_dq_{}", p.id.0),
            &format!("kiln_byte_{}", p.id.0),
        ));
        src.push_str("\n\n");
    }
    writeln!(src, "@compute @workgroup_size({wg})").unwrap();
    let sg_args = if e.used_subgroups {
        ", @builtin(subgroup_invocation_id) sgl: u32, @builtin(subgroup_id) sgid: u32, @builtin(num_subgroups) nsg: u32"
    } else {
        ""
    };
    writeln!(src, "fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32{sg_args}) {{").unwrap();
    src.push_str(&e.out);
    src.push_str("}\n");
    Ok(WgslKernel {
        name: kernel.name.clone(),
        source: src,
        workgroup_size: wg,
        workgroups,
        bindings,
        meta,
        status: e.status,
    })
}

/// `kiln_meta.v[i / 4].xyzw`.
fn meta_ref(i: usize) -> String {
    format!("kiln_meta.v[{}].{}", i / 4, ["x", "y", "z", "w"][i % 4])
}

/// Reading word `idx` of binding `b`.
fn word_ref(b: usize, atomic: bool, idx: &str) -> String {
    if atomic {
        format!("atomicLoad(&kiln_b{}[{idx}])", b + 1)
    } else {
        format!("kiln_b{}[{idx}]", b + 1)
    }
}

/// Whether elements of `d` are smaller than a word.
fn sub_word(d: DType) -> bool {
    matches!(
        d,
        DType::F16 | DType::BF16 | DType::I16 | DType::I8 | DType::U8 | DType::Bool
    )
}

fn stores_of(body: &[Stmt], out: &mut Vec<BufferId>) {
    for s in body {
        match s {
            Stmt::Store { buffer, .. } => out.push(*buffer),
            Stmt::Loop(l) => stores_of(&l.body, out),
            Stmt::If { then, .. } => stores_of(then, out),
            _ => {}
        }
    }
}

fn has_store(body: &[Stmt]) -> bool {
    let mut v = Vec::new();
    stores_of(body, &mut v);
    !v.is_empty()
}

fn expr_loads(e: &Expr) -> bool {
    matches!(e, Expr::Load { .. } | Expr::LoadDequant { .. })
        || e.children().into_iter().any(expr_loads)
}

fn stmt_loads(s: &Stmt) -> bool {
    match s {
        Stmt::Loop(l) => l.body.iter().any(stmt_loads),
        Stmt::Let { value, .. } | Stmt::Assign { value, .. } => expr_loads(value),
        Stmt::Declare { init, .. } => expr_loads(init),
        Stmt::Store { value, .. } => expr_loads(value),
        Stmt::If { cond, then } => expr_loads(cond) || then.iter().any(stmt_loads),
    }
}

fn assigned(body: &[Stmt], out: &mut BTreeSet<String>) {
    for s in body {
        match s {
            Stmt::Assign { var, .. } => {
                out.insert(var.clone());
            }
            Stmt::Loop(l) => assigned(&l.body, out),
            Stmt::If { then, .. } => assigned(then, out),
            _ => {}
        }
    }
}

fn stmt_refs(s: &Stmt, out: &mut HashSet<String>) {
    match s {
        Stmt::Loop(l) => {
            out.extend(l.extent.symbols());
            l.body.iter().for_each(|s| stmt_refs(s, out));
        }
        Stmt::Let { value, .. } | Stmt::Assign { value, .. } => value.refs(out),
        Stmt::Declare { init, .. } => init.refs(out),
        Stmt::Store { index, value, .. } => {
            out.extend(index.symbols());
            value.refs(out);
        }
        Stmt::If { cond, then } => {
            cond.refs(out);
            then.iter().for_each(|s| stmt_refs(s, out));
        }
    }
}

/// The split form of a reduction loop, if it has one (see [`Split`]).
fn split_of(l: &Loop) -> Option<Split<'_>> {
    if l.annot.kind != LoopKind::Reduction {
        return None;
    }
    let mut loops = vec![l];
    loop {
        let last = loops[loops.len() - 1];
        let [Stmt::Loop(inner)] = last.body.as_slice() else {
            break;
        };
        let outer = inner
            .extent
            .symbols()
            .iter()
            .any(|s| loops.iter().any(|o| &o.var == s));
        if inner.annot.kind != LoopKind::Reduction || outer {
            break;
        }
        loops.push(inner);
    }
    let body = &loops[loops.len() - 1].body;
    // Threads run different iterations: a store there would be done by thread 0's only.
    if has_store(body) {
        return None;
    }
    let mut vars = BTreeSet::new();
    assigned(body, &mut vars);
    if vars.len() != 1 {
        return None;
    }
    let acc = vars.into_iter().next()?;
    let mut found = None;
    for s in body {
        match s {
            Stmt::Assign { var, value } if *var == acc => {
                let Expr::Binary { op, dtype, a, b } = value else {
                    return None;
                };
                let ok_op = matches!(
                    op,
                    BinaryOp::Add | BinaryOp::Mul | BinaryOp::Max | BinaryOp::Min
                );
                let ok_a = matches!(a.as_ref(), Expr::Var { name, .. } if *name == acc);
                let mut r = HashSet::new();
                b.refs(&mut r);
                if !ok_op || !ok_a || r.contains(&acc) || found.is_some() || *dtype == DType::Bool {
                    return None;
                }
                found = Some((*op, *dtype));
            }
            other => {
                let mut r = HashSet::new();
                stmt_refs(other, &mut r);
                if r.contains(&acc) {
                    return None;
                }
            }
        }
    }
    let (op, dtype) = found?;
    Some(Split {
        loops,
        acc,
        op,
        dtype,
    })
}

fn wgsl_ty(d: DType) -> R<&'static str> {
    Ok(match d {
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 => "f32",
        DType::Bool => "bool",
        DType::I8 | DType::I16 | DType::I32 | DType::I64 | DType::U8 | DType::U32 => "i32",
        DType::Quant(q) => return Err(format!("a value of block-quantized type {q:?}")),
    })
}

/// An i32 literal (values beyond i32 saturate: i64 values are 32-bit here).
fn int_lit(v: i64) -> String {
    let v = v.clamp(i32::MIN as i64, i32::MAX as i64);
    if v == i32::MIN as i64 {
        "(-2147483647i - 1i)".into()
    } else if v < 0 {
        format!("({v}i)")
    } else {
        format!("{v}i")
    }
}

fn f32_lit(v: f32) -> String {
    if !v.is_finite() || (v != 0.0 && !v.is_normal()) {
        format!("bitcast<f32>({:#010x}u)", v.to_bits())
    } else {
        let s = format!("{v:?}");
        if v.is_sign_negative() {
            format!("({s}f)")
        } else {
            format!("{s}f")
        }
    }
}

impl Emitter {
    fn line(&mut self, s: &str) {
        for _ in 0..self.depth {
            self.out.push_str("    ");
        }
        self.out.push_str(s);
        self.out.push('\n');
    }

    fn fresh(&mut self) -> String {
        self.tmp += 1;
        format!("t{}", self.tmp)
    }

    /// Binds `value` (of WGSL type `ty`) to a fresh `let`.
    fn bind(&mut self, ty: &str, value: String) -> String {
        let t = self.fresh();
        self.line(&format!("let {t}: {ty} = {value};"));
        t
    }

    /// The WGSL name of a loop-IR name.
    fn name(&self, n: &str) -> String {
        if let Some(r) = self.renames.get(n) {
            return r.clone();
        }
        if self.symbols.contains(n) {
            format!("s_{n}")
        } else {
            format!("v_{n}")
        }
    }

    fn helper(&mut self, name: &'static str) -> &'static str {
        debug_assert!(prelude::is_helper(name));
        self.helpers.insert(name);
        name
    }

    // ---- indices ----

    fn dim(&mut self, d: &Dim) -> R<String> {
        let mut parts = Vec::new();
        for term in d.terms() {
            if term.factors.is_empty() {
                parts.push(int_lit(term.coefficient));
                continue;
            }
            let mut fs = Vec::new();
            for (atom, pow) in &term.factors {
                let a = self.atom(atom)?;
                for _ in 0..*pow {
                    fs.push(a.clone());
                }
            }
            if term.coefficient != 1 {
                if i32::try_from(term.coefficient).is_err() {
                    return Err(format!("index coefficient {} beyond i32", term.coefficient));
                }
                fs.insert(0, int_lit(term.coefficient));
            }
            parts.push(fs.join(" * "));
        }
        Ok(match parts.len() {
            0 => "0i".into(),
            1 => format!("({})", parts[0]),
            _ => format!("({})", parts.join(" + ")),
        })
    }

    fn atom(&mut self, a: &DimAtom<'_>) -> R<String> {
        Ok(match a {
            DimAtom::Symbol(s) => self.name(s),
            DimAtom::FloorDiv(x, y) => {
                let (x, y) = (self.dim(x)?, self.dim(y)?);
                format!("{}({x}, {y})", self.helper("kiln_idiv"))
            }
            DimAtom::Mod(x, y) => {
                let (x, y) = (self.dim(x)?, self.dim(y)?);
                format!("{}({x}, {y})", self.helper("kiln_imod"))
            }
            DimAtom::Min(x, y) => format!("min({}, {})", self.dim(x)?, self.dim(y)?),
            DimAtom::Max(x, y) => format!("max({}, {})", self.dim(x)?, self.dim(y)?),
        })
    }

    // ---- statements ----

    fn stmts(&mut self, body: &[Stmt]) -> R<()> {
        for s in body {
            self.stmt(s)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> R<()> {
        match s {
            Stmt::Loop(l) => {
                let ext = self.dim(&l.extent)?;
                let n = self.bind("i32", ext);
                let v = self.name(&l.var);
                self.line(&format!(
                    "for (var {v}: i32 = 0i; {v} < {n}; {v} = {v} + 1i) {{"
                ));
                self.block(|e| e.stmts(&l.body))?;
                self.line("}");
            }
            Stmt::Let { var, dtype, value }
            | Stmt::Declare {
                var,
                dtype,
                init: value,
            } => {
                let kw = if matches!(s, Stmt::Let { .. }) {
                    "let"
                } else {
                    "var"
                };
                let v = self.expr(value)?;
                let ty = wgsl_ty(*dtype)?;
                let name = self.name(var);
                self.line(&format!("{kw} {name}: {ty} = {v};"));
                if dtype.is_int() && value.may_read_memory() {
                    self.data_syms.insert(var.clone());
                }
            }
            Stmt::Assign { var, value } => {
                let v = self.expr(value)?;
                let name = self.name(var);
                self.line(&format!("{name} = {v};"));
            }
            Stmt::Store {
                buffer,
                index,
                value,
            } => {
                let v = self.expr(value)?;
                let i = self.index(*buffer, index)?;
                if self.guard_stores {
                    self.line("if (lid == 0u) {");
                    self.block(|e| e.store(*buffer, &i, &v))?;
                    self.line("}");
                } else {
                    self.store(*buffer, &i, &v)?;
                }
            }
            Stmt::If { cond, then } => {
                let c = self.expr(cond)?;
                self.line(&format!("if ({c}) {{"));
                self.block(|e| e.stmts(then))?;
                self.line("}");
            }
        }
        Ok(())
    }

    fn block(&mut self, f: impl FnOnce(&mut Self) -> R<()>) -> R<()> {
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    /// The top level of a cooperative kernel's body (see the module docs of [`super`]).
    fn coop_body(&mut self, body: &[Stmt]) -> R<()> {
        let w = COOP_THREADS;
        let mut dirty = false;
        for s in body {
            if dirty && stmt_loads(s) {
                self.line("storageBarrier();");
                dirty = false;
            }
            if let Some(sp) = match s {
                Stmt::Loop(l) => split_of(l),
                _ => None,
            } {
                // A reduction stores nothing: no barrier owed after it.
                self.split_reduction(&sp)?;
                continue;
            }
            match s {
                Stmt::Loop(l) if l.annot.kind == LoopKind::Parallel => {
                    let ext = self.dim(&l.extent)?;
                    let n = self.bind("i32", ext);
                    let v = self.name(&l.var);
                    self.line(&format!(
                        "for (var {v}: i32 = i32(lid); {v} < {n}; {v} = {v} + {w}i) {{"
                    ));
                    self.guard_stores = false;
                    let r = self.block(|e| e.stmts(&l.body));
                    self.guard_stores = true;
                    r?;
                    self.line("}");
                    dirty |= has_store(&l.body);
                }
                other => {
                    self.stmt(other)?;
                    dirty |= has_store(std::slice::from_ref(other));
                }
            }
        }
        Ok(())
    }

    fn split_reduction(&mut self, sp: &Split<'_>) -> R<()> {
        let w = COOP_THREADS;
        let ty = wgsl_ty(sp.dtype)?;
        let float = ty == "f32";
        let identity = match (sp.op, float) {
            (BinaryOp::Add, true) => "0.0f".to_string(),
            (BinaryOp::Add, false) => "0i".to_string(),
            (BinaryOp::Mul, true) => "1.0f".to_string(),
            (BinaryOp::Mul, false) => "1i".to_string(),
            (BinaryOp::Max, true) => f32_lit(f32::NEG_INFINITY),
            (BinaryOp::Max, false) => int_lit(int_range(sp.dtype).0),
            (BinaryOp::Min, true) => f32_lit(f32::INFINITY),
            (BinaryOp::Min, false) => int_lit(int_range(sp.dtype).1),
            _ => unreachable!("split ops are checked"),
        };
        let acc = self.name(&sp.acc);
        self.line(&format!("if (lid != 0u) {{ {acc} = {identity}; }}"));
        // One flat, strided loop over the whole (perfect) reduction nest.
        let mut exts = Vec::new();
        for l in &sp.loops {
            let e = self.dim(&l.extent)?;
            exts.push(self.bind("i32", e));
        }
        let total = exts.join(" * ");
        let f = self.fresh();
        self.line(&format!(
            "for (var {f}: i32 = i32(lid); {f} < {total}; {f} = {f} + {w}i) {{"
        ));
        let inner = sp.loops[sp.loops.len() - 1];
        self.block(|e| {
            let mut stride = String::new();
            let mut lets = Vec::new();
            for (j, l) in sp.loops.iter().enumerate().rev() {
                let v = e.name(&l.var);
                let q = if stride.is_empty() {
                    f.clone()
                } else {
                    format!("({f} / ({stride}))")
                };
                lets.push(if j == 0 {
                    format!("let {v} = {q};")
                } else {
                    format!("let {v} = {q} % max({}, 1i);", exts[j])
                });
                // Dividing by at least 1 (an empty nest never gets here).
                stride = if stride.is_empty() {
                    format!("max({}, 1i)", exts[j])
                } else {
                    format!("{stride} * max({}, 1i)", exts[j])
                };
            }
            for l in lets.into_iter().rev() {
                e.line(&l);
            }
            e.stmts(&inner.body)
        })?;
        self.line("}");
        let red = if float { "f32" } else { "i32" };
        self.red_types.insert(red);
        let arr = format!("kiln_red_{red}");
        let sg_op = match sp.op {
            BinaryOp::Add => Some("subgroupAdd"),
            BinaryOp::Mul => Some("subgroupMul"),
            BinaryOp::Max if !float => Some("subgroupMax"),
            BinaryOp::Min if !float => Some("subgroupMin"),
            _ => None,
        };
        let exact_steps = !matches!(sp.dtype, DType::F16 | DType::BF16);
        if let Some(op) = sg_op.filter(|_| self.target.subgroups && exact_steps) {
            // One op per subgroup, its result in the subgroup's slot, then thread 0 folds
            // the subgroups' results in order.
            self.used_subgroups = true;
            let combined = self.binary_str(sp.op, sp.dtype, "a", &format!("{arr}[i]"))?;
            self.line(&format!("let kiln_sg{f} = {op}({acc});"));
            self.line(&format!("if (sgl == 0u) {{ {arr}[sgid] = kiln_sg{f}; }}"));
            self.line("workgroupBarrier();");
            self.line("if (lid == 0u) {");
            self.line(&format!("    var a = {arr}[0];"));
            self.line(&format!(
                "    for (var i: u32 = 1u; i < nsg; i = i + 1u) {{ a = {combined}; }}"
            ));
            self.line(&format!("    {arr}[0] = a;"));
            self.line("}");
            self.line("workgroupBarrier();");
            self.line(&format!("{acc} = {arr}[0];"));
            self.line("workgroupBarrier();");
            return Ok(());
        }
        self.line(&format!("{arr}[lid] = {acc};"));
        self.line("workgroupBarrier();");
        let combined = self.binary_str(
            sp.op,
            sp.dtype,
            &format!("{arr}[lid]"),
            &format!("{arr}[lid + s]"),
        )?;
        self.line(&format!(
            "for (var s: u32 = {}u; s > 0u; s = s >> 1u) {{",
            w / 2
        ));
        self.line(&format!("    if (lid < s) {{ {arr}[lid] = {combined}; }}"));
        self.line("    workgroupBarrier();");
        self.line("}");
        self.line(&format!("{acc} = {arr}[0];"));
        self.line("workgroupBarrier();");
        Ok(())
    }

    // ---- memory ----

    fn param(&self, b: BufferId) -> R<&Param> {
        self.params
            .get(&b)
            .map(|(_, p)| p)
            .ok_or_else(|| format!("{b} is not a parameter"))
    }

    /// `index` of buffer `b` as a bound i32; a data-dependent one is checked against the
    /// buffer's length (status bit 1 when outside) and clamped into it.
    fn index(&mut self, b: BufferId, index: &Dim) -> R<String> {
        let i = self.dim(index)?;
        let i = self.bind("i32", i);
        if !index.symbols().iter().any(|s| self.data_syms.contains(s)) {
            return Ok(i);
        }
        let len = self
            .lens
            .get(&b)
            .cloned()
            .ok_or_else(|| format!("{b} is not a parameter"))?;
        let n = self.dim(&len)?;
        let n = self.bind("i32", n);
        self.status = true;
        self.line(&format!(
            "if (({i} < 0i) || ({i} >= {n})) {{ atomicOr(&kiln_status[kiln_sw], 1u); }}"
        ));
        Ok(self.bind("i32", format!("clamp({i}, 0i, max({n} - 1i, 0i))")))
    }

    fn load(&mut self, b: BufferId, dtype: DType, index: &Dim) -> R<String> {
        let i = self.index(b, index)?;
        let p = self.param(b)?;
        let (binding, atomic, pdtype) = (p.binding, p.atomic, p.dtype);
        let word = |idx: &str| word_ref(binding, atomic, idx);
        let o = format!("o_{}", b.0);
        let sub = |shift: &str, lanes: u32| {
            (
                word(&format!("{o} + ({i} >> {shift})")),
                format!("(u32({i} & {}i) * {}u)", lanes - 1, 32 / lanes),
            )
        };
        let v = match dtype {
            DType::F32 => format!("bitcast<f32>({})", word(&format!("{o} + {i}"))),
            DType::I32 | DType::U32 => {
                format!("bitcast<i32>({})", word(&format!("{o} + {i}")))
            }
            DType::I64 => {
                // The high word must be the low word's sign: values are 32-bit here (status
                // bit 2 otherwise).
                let lo = word(&format!("{o} + 2i * {i}"));
                let hi = word(&format!("{o} + 2i * {i} + 1i"));
                let lo = self.bind("u32", lo);
                self.status = true;
                self.line(&format!(
                    "if ({hi} != select(0u, 0xffffffffu, ({lo} >> 31u) != 0u)) {{ atomicOr(&kiln_status[kiln_sw], 2u); }}"
                ));
                format!("bitcast<i32>({lo})")
            }
            DType::F64 => {
                let lo = word(&format!("{o} + 2i * {i}"));
                let hi = word(&format!("{o} + 2i * {i} + 1i"));
                format!("{}({lo}, {hi})", self.helper("kiln_f64_to_f32"))
            }
            DType::F16 => {
                let (w, sh) = sub("1u", 2);
                self.f16 = true;
                format!("kiln_f16_to_f32(({w} >> {sh}) & 0xffffu)")
            }
            DType::BF16 => {
                let (w, sh) = sub("1u", 2);
                format!("bitcast<f32>((({w} >> {sh}) & 0xffffu) << 16u)")
            }
            DType::I16 => {
                let (w, sh) = sub("1u", 2);
                format!("(bitcast<i32>(({w} >> {sh}) << 16u) >> 16u)")
            }
            DType::I8 => {
                let (w, sh) = sub("2u", 4);
                format!("(bitcast<i32>(({w} >> {sh}) << 24u) >> 24u)")
            }
            DType::U8 => {
                let (w, sh) = sub("2u", 4);
                format!("i32(({w} >> {sh}) & 0xffu)")
            }
            DType::Bool => {
                let (w, sh) = sub("2u", 4);
                format!("((({w} >> {sh}) & 0xffu) != 0u)")
            }
            DType::Quant(q) => return Err(format!("plain load of {q:?} buffer {b}")),
        };
        if pdtype != dtype {
            return Err(format!("{b} holds {pdtype}, loaded as {dtype}"));
        }
        Ok(self.bind(wgsl_ty(dtype)?, v))
    }

    fn store(&mut self, b: BufferId, i: &str, v: &str) -> R<()> {
        let p = self.param(b)?;
        let (binding, atomic, dtype) = (p.binding + 1, p.atomic, p.dtype);
        let o = format!("o_{}", b.0);
        let put = |idx: String, val: String| -> String {
            if atomic {
                format!("atomicStore(&kiln_b{binding}[{idx}], {val});")
            } else {
                format!("kiln_b{binding}[{idx}] = {val};")
            }
        };
        let (lanes, bits) = match dtype {
            DType::F32 | DType::I32 | DType::U32 => {
                self.line(&put(format!("{o} + {i}"), format!("bitcast<u32>({v})")));
                return Ok(());
            }
            DType::I64 => {
                self.line(&put(
                    format!("{o} + 2i * {i}"),
                    format!("bitcast<u32>({v})"),
                ));
                self.line(&put(
                    format!("{o} + 2i * {i} + 1i"),
                    format!("select(0u, 0xffffffffu, {v} < 0i)"),
                ));
                return Ok(());
            }
            DType::F64 => {
                let h = self.helper("kiln_f32_to_f64");
                let w = self.bind("vec2<u32>", format!("{h}({v})"));
                self.line(&put(format!("{o} + 2i * {i}"), format!("{w}.x")));
                self.line(&put(format!("{o} + 2i * {i} + 1i"), format!("{w}.y")));
                return Ok(());
            }
            DType::F16 => (2, format!("{}({v})", self.helper("kiln_f16_bits"))),
            DType::BF16 => (2, format!("(bitcast<u32>({v}) >> 16u)")),
            DType::I16 => (2, format!("(bitcast<u32>({v}) & 0xffffu)")),
            DType::I8 | DType::U8 => (4, format!("(bitcast<u32>({v}) & 0xffu)")),
            DType::Bool => (4, format!("select(0u, 1u, {v})")),
            DType::Quant(q) => return Err(format!("store into a {q:?} buffer")),
        };
        let shift = if lanes == 2 { "1u" } else { "2u" };
        let sh = self.bind(
            "u32",
            format!("u32({i} & {}i) * {}u", lanes - 1, 32 / lanes),
        );
        let mask = if lanes == 2 { "0xffffu" } else { "0xffu" };
        let w = format!("{o} + ({i} >> {shift})");
        self.line(&format!(
            "atomicAnd(&kiln_b{binding}[{w}], ~({mask} << {sh}));"
        ));
        self.line(&format!("atomicOr(&kiln_b{binding}[{w}], {bits} << {sh});"));
        Ok(())
    }

    // ---- values ----

    fn expr(&mut self, e: &Expr) -> R<String> {
        Ok(match e {
            Expr::Const { value, dtype } => match (value, dtype) {
                (Scalar::Float(v), d) if d.is_float() => f32_lit(*v as f32),
                (Scalar::Int(v), d) if d.is_float() => f32_lit(*v as f32),
                (Scalar::Int(v), d) if d.is_int() => int_lit(*v),
                (Scalar::Float(v), d) if d.is_int() => int_lit(*v as i64),
                (Scalar::Bool(b), DType::Bool) => b.to_string(),
                (v, d) => return Err(format!("constant {v} of dtype {d}")),
            },
            Expr::Index(d) => self.dim(d)?,
            Expr::Var { name, .. } => self.name(name),
            Expr::Load {
                buffer,
                dtype,
                index,
            } => self.load(*buffer, *dtype, index)?,
            Expr::LoadDequant {
                buffer,
                qtype,
                index,
            } => {
                let i = self.index(*buffer, index)?;
                let (pi, p) = self
                    .params
                    .get(buffer)
                    .ok_or_else(|| format!("{buffer} is not a parameter"))?;
                if p.dtype != DType::Quant(*qtype) {
                    return Err(format!("{buffer} holds {}, read as {qtype:?}", p.dtype));
                }
                self.dequant.insert((*pi, *qtype));
                self.bind("f32", format!("kiln_dq_{}({i})", buffer.0))
            }
            Expr::Unary { op, dtype, x } => {
                let x = self.expr(x)?;
                let v = self.unary(*op, *dtype, &x)?;
                self.bind(wgsl_ty(*dtype)?, v)
            }
            Expr::Binary { op, dtype, a, b } => {
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                let v = self.binary_str(*op, *dtype, &a, &b)?;
                let ty = if op.is_comparison() {
                    "bool"
                } else {
                    wgsl_ty(*dtype)?
                };
                self.bind(ty, v)
            }
            Expr::Select { cond, a, b } => {
                let c = self.expr(cond)?;
                let (x, y) = (self.expr(a)?, self.expr(b)?);
                self.bind(wgsl_ty(e.dtype())?, format!("select({y}, {x}, {c})"))
            }
            Expr::Cast { to, x } => {
                let from = x.dtype();
                let x = self.expr(x)?;
                let v = self.cast(from, *to, &x)?;
                self.bind(wgsl_ty(*to)?, v)
            }
            Expr::Bind { var, value, body } => {
                let v = self.expr(value)?;
                let t = self.fresh();
                self.line(&format!("let {t}: i32 = {v};"));
                let old = self.renames.insert(var.clone(), t);
                let was_data = !self.data_syms.insert(var.clone());
                let r = self.expr(body);
                match old {
                    Some(o) => self.renames.insert(var.clone(), o),
                    None => self.renames.remove(var),
                };
                if !was_data {
                    self.data_syms.remove(var);
                }
                r?
            }
        })
    }

    /// `x` (an f32 holding a value computed in f32) rounded to float dtype `d`.
    fn round(&mut self, d: DType, x: String) -> String {
        match d {
            DType::F16 => format!("{}({x})", self.helper("kiln_f16")),
            DType::BF16 => format!("{}({x})", self.helper("kiln_bf16")),
            _ => x,
        }
    }

    /// `x` (an i32) wrapped to integer dtype `d`.
    fn wrap(d: DType, x: String) -> String {
        match d {
            DType::I8 => format!("(({x} << 24u) >> 24u)"),
            DType::I16 => format!("(({x} << 16u) >> 16u)"),
            DType::U8 => format!("({x} & 255i)"),
            _ => x,
        }
    }

    fn unary(&mut self, op: UnaryOp, d: DType, x: &str) -> R<String> {
        if d == DType::Bool {
            return match op {
                UnaryOp::Not => Ok(format!("!{x}")),
                _ => Err(format!("{op:?} of bool")),
            };
        }
        if d.is_int() {
            let v = match op {
                UnaryOp::Neg => format!("(-{x})"),
                UnaryOp::Abs => format!("abs({x})"),
                UnaryOp::Not => format!("(~{x})"),
                UnaryOp::Sign => format!("sign({x})"),
                _ => return Err(format!("{op:?} of {d}")),
            };
            return Ok(Self::wrap(d, v));
        }
        let v = match op {
            UnaryOp::Neg => format!("(-{x})"),
            UnaryOp::Abs => format!("abs({x})"),
            UnaryOp::Exp => format!("exp({x})"),
            UnaryOp::Log => format!("log({x})"),
            UnaryOp::Sqrt => format!("sqrt({x})"),
            UnaryOp::Rsqrt => format!("(1.0f / sqrt({x}))"),
            UnaryOp::Recip => format!("(1.0f / {x})"),
            UnaryOp::Sin => format!("{}({x})", self.helper("kiln_sin")),
            UnaryOp::Cos => format!("{}({x})", self.helper("kiln_cos")),
            UnaryOp::Tanh => format!("{}({x})", self.helper("kiln_tanh")),
            UnaryOp::Erf => format!("{}({x})", self.helper("kiln_erf")),
            UnaryOp::Floor => format!("floor({x})"),
            UnaryOp::Ceil => format!("ceil({x})"),
            UnaryOp::Round => format!("round({x})"),
            UnaryOp::Sign => format!("{}({x})", self.helper("kiln_fsign")),
            UnaryOp::Not => return Err(format!("not of {d}")),
        };
        Ok(self.round(d, v))
    }

    fn binary_str(&mut self, op: BinaryOp, d: DType, a: &str, b: &str) -> R<String> {
        use BinaryOp::*;
        if op.is_comparison() {
            let sym = match op {
                Eq => "==",
                Ne => "!=",
                Lt => "<",
                Le => "<=",
                Gt => ">",
                _ => ">=",
            };
            if d == DType::Bool && !matches!(op, Eq | Ne) {
                return Ok(format!("(select(0i, 1i, {a}) {sym} select(0i, 1i, {b}))"));
            }
            if op == Ne && d.is_float() {
                // `!=` of floats is an ordered comparison in SPIR-V: false for NaN.
                return Ok(format!("!({a} == {b})"));
            }
            return Ok(format!("({a} {sym} {b})"));
        }
        if d == DType::Bool {
            return Ok(match op {
                And | Min | Mul => format!("({a} & {b})"),
                Or | Max | Add => format!("({a} | {b})"),
                Xor | Sub => format!("({a} != {b})"),
                _ => return Err(format!("{op:?} of bools")),
            });
        }
        if d.is_int() {
            let v = match op {
                Add => format!("({a} + {b})"),
                Sub => format!("({a} - {b})"),
                Mul => format!("({a} * {b})"),
                Div => format!("{}({a}, {b})", self.helper("kiln_idiv")),
                Mod => format!("{}({a}, {b})", self.helper("kiln_imod")),
                Max => format!("max({a}, {b})"),
                Min => format!("min({a}, {b})"),
                And => format!("({a} & {b})"),
                Or => format!("({a} | {b})"),
                Xor => format!("({a} ^ {b})"),
                _ => return Err(format!("{op:?} of {d}")),
            };
            return Ok(Self::wrap(d, v));
        }
        let v = match op {
            Add => format!("({a} + {b})"),
            Sub => format!("({a} - {b})"),
            Mul => format!("({a} * {b})"),
            Div => format!("({a} / {b})"),
            Pow => format!("{}({a}, {b})", self.helper("kiln_pow")),
            Max => format!("{}({a}, {b})", self.helper("kiln_fmax")),
            Min => format!("{}({a}, {b})", self.helper("kiln_fmin")),
            Mod => format!("{}({a}, {b})", self.helper("kiln_fmod")),
            _ => return Err(format!("{op:?} of {d}")),
        };
        Ok(self.round(d, v))
    }

    fn cast(&mut self, from: DType, to: DType, x: &str) -> R<String> {
        if from == to {
            return Ok(x.to_string());
        }
        Ok(match (from, to) {
            (f, t) if f.is_float() && t.is_float() => self.round(t, x.to_string()),
            (f, DType::Bool) if f.is_float() => format!("({x} != 0.0f)"),
            (f, t) if f.is_float() && t.is_int() => {
                let i = format!("{}({x})", self.helper("kiln_f2i"));
                let (lo, hi) = int_range(t);
                if (lo, hi) == (i32::MIN as i64, i32::MAX as i64) {
                    i
                } else {
                    format!("clamp({i}, {}, {})", int_lit(lo), int_lit(hi))
                }
            }
            (f, t) if f.is_int() && t.is_float() => self.round(t, format!("f32({x})")),
            (f, t) if f.is_int() && t.is_int() => Self::wrap(t, x.to_string()),
            (f, DType::Bool) if f.is_int() => format!("({x} != 0i)"),
            (DType::Bool, t) if t.is_float() => format!("select(0.0f, 1.0f, {x})"),
            (DType::Bool, t) if t.is_int() => format!("select(0i, 1i, {x})"),
            (f, t) => return Err(format!("cast from {f} to {t}")),
        })
    }
}

/// The range of an integer dtype as held here (i64, i32 and u32 values are 32-bit).
fn int_range(d: DType) -> (i64, i64) {
    match d.int_range() {
        Some((lo, hi)) => (lo.max(i32::MIN as i64), hi.min(i32::MAX as i64)),
        None => (i32::MIN as i64, i32::MAX as i64),
    }
}
