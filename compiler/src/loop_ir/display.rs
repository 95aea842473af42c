//! Text form of kernels (readable, stable: used by `insta` snapshots).
//!
//! ```text
//! kernel k2_reduction(b0: f32[seq*8] in, b1: f32[seq*8] out) symbols(seq) workgroup(64, 1, 1) {
//!   for r0 in 0..seq @parallel gpu=grid.0 {
//!     declare acc0: f64 = 0.0
//!     for k0 in 0..8 @reduction unroll=4 gpu=thread.0 {
//!       acc0 = add.f64(acc0, cast.f64(load b0[8*r0 + k0]))
//!     }
//!     ...
//! ```

use super::{BufferId, BufferRole, Expr, GpuAxis, Kernel, LoopAnnot, LoopKind, Stmt};
use std::fmt::{self, Write};

impl fmt::Display for BufferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}", self.0)
    }
}

impl fmt::Display for BufferRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BufferRole::Input => "in",
            BufferRole::Output => "out",
            BufferRole::State => "state",
            BufferRole::Scratch => "scratch",
        })
    }
}

impl fmt::Display for LoopAnnot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            LoopKind::Parallel => "@parallel",
            LoopKind::Serial => "@serial",
            LoopKind::Reduction => "@reduction",
        })?;
        if self.vector > 1 {
            write!(f, " vector={}", self.vector)?;
        }
        if self.unroll > 1 {
            write!(f, " unroll={}", self.unroll)?;
        }
        if let Some(t) = self.tile {
            write!(f, " tile={t}")?;
        }
        match self.gpu {
            GpuAxis::None => {}
            GpuAxis::Grid(a) => write!(f, " gpu=grid.{a}")?,
            GpuAxis::Thread(a) => write!(f, " gpu=thread.{a}")?,
        }
        if self.stage_shared {
            f.write_str(" shared")?;
        }
        Ok(())
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Const { value, dtype } => write!(f, "{value}:{dtype}"),
            Expr::Index(d) => write!(f, "idx({d})"),
            Expr::Var { name, .. } => f.write_str(name),
            Expr::Load { buffer, index, .. } => write!(f, "load {buffer}[{index}]"),
            Expr::LoadDequant {
                buffer,
                qtype,
                index,
            } => write!(f, "dequant.{} {buffer}[{index}]", qtype.name()),
            Expr::Unary { op, dtype, x } => write!(f, "{}.{dtype}({x})", op.name()),
            Expr::Binary { op, dtype, a, b } => write!(f, "{}.{dtype}({a}, {b})", op.name()),
            Expr::Select { cond, a, b } => write!(f, "select({cond}, {a}, {b})"),
            Expr::Cast { to, x } => write!(f, "cast.{to}({x})"),
            Expr::Bind { var, value, body } => write!(f, "(let {var} = {value} in {body})"),
        }
    }
}

fn write_body(out: &mut String, body: &[Stmt], depth: usize) -> fmt::Result {
    let pad = "  ".repeat(depth);
    for s in body {
        match s {
            Stmt::Loop(l) => {
                writeln!(out, "{pad}for {} in 0..{} {} {{", l.var, l.extent, l.annot)?;
                write_body(out, &l.body, depth + 1)?;
                writeln!(out, "{pad}}}")?;
            }
            Stmt::Let { var, dtype, value } => writeln!(out, "{pad}let {var}: {dtype} = {value}")?,
            Stmt::Declare { var, dtype, init } => {
                writeln!(out, "{pad}declare {var}: {dtype} = {init}")?
            }
            Stmt::Assign { var, value } => writeln!(out, "{pad}{var} = {value}")?,
            Stmt::Store {
                buffer,
                index,
                value,
            } => writeln!(out, "{pad}store {buffer}[{index}] = {value}")?,
            Stmt::If { cond, then } => {
                writeln!(out, "{pad}if {cond} {{")?;
                write_body(out, then, depth + 1)?;
                writeln!(out, "{pad}}}")?;
            }
        }
    }
    Ok(())
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|p| format!("{}: {}[{}] {}", p.id, p.dtype, p.len, p.role))
            .collect();
        let [x, y, z] = self.config.workgroup;
        write!(f, "kernel {}({})", self.name, params.join(", "))?;
        if !self.symbols.is_empty() {
            write!(f, " symbols({})", self.symbols.join(", "))?;
        }
        writeln!(f, " workgroup({x}, {y}, {z}) {{")?;
        let mut body = String::new();
        write_body(&mut body, &self.body, 1)?;
        f.write_str(&body)?;
        f.write_str("}\n")
    }
}
