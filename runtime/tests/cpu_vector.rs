//! The CPU backend's vector code (`backend::cpu::vector`): every vectorized pattern at sizes
//! around the 4-lane vectors and 8-lane trips (1, 3, 4, 5, 7, 8, 17, 31, 4097), with
//! constant and symbolic dims, against
//!
//! - the scalar code of the same kernels (`vector::scalar_only`): bit for bit, reductions
//!   excepted (their sums add in another order);
//! - the interpreter: bit for bit where the ops are IEEE-exact and for `exp` (whose f32
//!   definition, `kiln_ir::numerics::exp_f32`, the backend repeats), within 1 ulp for `tanh`,
//!   and within a scale-aware tolerance for sums.
//!
//! Each test also checks that the vector path was taken (`vector::vectorized_loops`), and
//! two snapshots pin the Cranelift IR of a small elementwise and a small reduction kernel.

use kiln_compiler::backend::cpu::matmul::plan_matmul;
use kiln_compiler::backend::cpu::vector;
use kiln_compiler::{compile, Compiled};
use kiln_ir::interp::{run, Env};
use kiln_ir::{DType, Dim, Graph, NodeId, Scalar, Shape, Tensor};
use kiln_runtime::{CpuExecutable, CpuOptions};

const SIZES: [usize; 9] = [1, 3, 4, 5, 7, 8, 17, 31, 4097];

/// Values in [-4, 4] with special values sprinkled in (NaN, infinities, signed zeros, tiny,
/// large, exp's overflow and underflow edges) when `special`.
fn values(n: usize, seed: u64, special: bool) -> Vec<f32> {
    const SPECIAL: [f32; 12] = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        88.8,
        -104.5,
        9.99e-4,
        f32::MAX,
        -0.0,
    ];
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            if special && s.is_multiple_of(11) {
                SPECIAL[(s >> 20) as usize % SPECIAL.len()]
            } else {
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0
            }
        })
        .collect()
}

fn ints(n: usize, seed: u64) -> Vec<i32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            match s % 7 {
                0 => i32::MAX - (s >> 60) as i32,
                1 => i32::MIN + (s >> 60) as i32,
                _ => ((s >> 33) as i32 % 2001) - 1000,
            }
        })
        .collect()
}

/// Kernels the executable runs: the schedule's, with matmul kernels replaced by their
/// derived pack and epilogue kernels.
fn run_kernels(c: &Compiled) -> Vec<kiln_compiler::loop_ir::Kernel> {
    let mut out = Vec::new();
    for k in &c.schedule.kernels {
        match plan_matmul(k) {
            Some(p) => {
                for ph in &p.phases {
                    out.push(ph.pack_a.clone());
                }
                out.push(p.epilogue.clone());
            }
            None => out.push(k.clone()),
        }
    }
    out
}

fn vectorized(c: &Compiled) -> usize {
    run_kernels(c).iter().map(vector::vectorized_loops).sum()
}

#[derive(Clone, Copy, Debug)]
enum Cmp {
    /// Bit for bit (NaN matches any NaN).
    Exact,
    /// At most this many f32 ulps apart (NaN, infinities and zeros exact).
    Ulps(i64),
    /// `|a - b| <= tol * scale` with `scale` the largest `|value|` of the row (of length
    /// `row`); non-finite values exact.
    Scaled { tol: f64, row: usize },
}

fn compare(what: &str, want: &Tensor, got: &Tensor, cmp: Cmp) {
    assert_eq!(want.shape(), got.shape(), "{what}: shape");
    let (a, b) = (want.to_f64_vec().unwrap(), got.to_f64_vec().unwrap());
    let f32s = want.dtype() == DType::F32;
    for i in 0..a.len() {
        let (p, q) = (a[i], b[i]);
        if p.is_nan() || q.is_nan() {
            assert!(p.is_nan() && q.is_nan(), "{what}[{i}]: {p} vs {q}");
            continue;
        }
        let same_bits = if f32s {
            (p as f32).to_bits() == (q as f32).to_bits()
        } else {
            p.to_bits() == q.to_bits()
        };
        if same_bits {
            continue;
        }
        match cmp {
            Cmp::Exact => panic!("{what}[{i}]: {p:e} vs {q:e} (not bit-exact)"),
            Cmp::Ulps(n) => {
                let (x, y) = ((p as f32).to_bits() as i64, (q as f32).to_bits() as i64);
                assert!(
                    p.is_finite() && q.is_finite() && p != 0.0 && (x - y).abs() <= n,
                    "{what}[{i}]: {p:e} vs {q:e}"
                );
            }
            Cmp::Scaled { tol, row } => {
                let r = i / row * row;
                let scale = a[r..r + row]
                    .iter()
                    .filter(|v| v.is_finite())
                    .fold(0f64, |m, v| m.max(v.abs()));
                assert!(
                    p.is_finite() && q.is_finite() && (p - q).abs() <= tol * scale.max(1e-30),
                    "{what}[{i}]: {p:e} vs {q:e} (scale {scale:e})"
                );
            }
        }
    }
}

struct Case<'a> {
    g: &'a Graph,
    inputs: Vec<(&'a str, Tensor)>,
    params: Vec<(&'a str, Tensor)>,
}

impl Case<'_> {
    fn env(&self) -> Env {
        let mut env = Env::new();
        for (n, t) in &self.inputs {
            env.set_input(n, t.clone());
        }
        for (n, t) in &self.params {
            env.set_param(n, t.clone());
        }
        env
    }

    fn exe(&self, c: &Compiled, threads: usize) -> CpuExecutable {
        let mut exe = CpuExecutable::new(c, &CpuOptions { threads }).unwrap();
        for (n, t) in &self.params {
            exe.set_param(n, t).unwrap();
        }
        exe
    }

    fn run_exe(&self, exe: &mut CpuExecutable) -> Vec<(String, Tensor)> {
        let inputs: Vec<(&str, &Tensor)> = self.inputs.iter().map(|(n, t)| (*n, t)).collect();
        exe.run(&inputs, &kiln_ir::Bindings::new()).unwrap()
    }

    /// Runs the graph on the interpreter, the vector code and the scalar code; compares
    /// each output (`cmp[i]` against the interpreter, `exact_vs_scalar[i]`: bit for bit
    /// against the scalar code). Returns the number of vectorized loops.
    fn check(&self, label: &str, cmp: &[Cmp], exact_vs_scalar: &[bool]) -> usize {
        let want = run(self.g, &self.env()).unwrap().outputs;
        let c = compile(self.g, None).unwrap();
        let n = vectorized(&c);
        let scalar = vector::scalar_only(|| {
            assert_eq!(vectorized(&c), 0);
            let mut exe = self.exe(&c, 1);
            self.run_exe(&mut exe)
        });
        for threads in [1, 2] {
            let mut exe = self.exe(&c, threads);
            let got = self.run_exe(&mut exe);
            for (i, ((name, w), (_, g))) in want.iter().zip(&got).enumerate() {
                let what = format!("{label} {name} (threads {threads})");
                compare(&what, w, g, cmp[i]);
                if exact_vs_scalar[i] {
                    compare(&format!("{what} vs scalar"), &scalar[i].1, g, Cmp::Exact);
                }
            }
        }
        n
    }
}

fn input(g: &mut Graph, name: &str, dtype: DType, dims: &[Dim]) -> NodeId {
    g.input(name, dtype, Shape::new(dims.to_vec())).unwrap()
}

fn f32_const(g: &mut Graph, v: f64) -> NodeId {
    g.scalar(Scalar::Float(v), DType::F32).unwrap()
}

/// Rows by `w` columns, `w` constant or the symbol "w".
fn dims(rows: &str, w: Option<usize>) -> [Dim; 2] {
    [
        Dim::from(rows),
        w.map_or_else(|| Dim::from("w"), |w| Dim::from(w as i64)),
    ]
}

/// IEEE-exact ops, row and column broadcasts, selects, casts: bit for bit.
#[test]
fn elementwise_exact_ops_with_broadcasts() {
    for symbolic in [false, true] {
        for &w in &SIZES {
            let mut g = Graph::new();
            let d = dims("n", (!symbolic).then_some(w));
            let x = input(&mut g, "x", DType::F32, &d);
            let a = input(&mut g, "a", DType::F32, &d[1..]); // a row, broadcast down
            let c = input(&mut g, "c", DType::F32, &[d[0].clone(), Dim::from(1)]); // a column
                                                                                   // ((x * a + c) / (|a| + 1)) where x > a, else max(x, c) - min(x, -0.0)
            let t = g.mul(x, a).unwrap();
            let t = g.add(t, c).unwrap();
            let aa = g.abs(a).unwrap();
            let one = f32_const(&mut g, 1.0);
            let den = g.add(aa, one).unwrap();
            let t = g.div(t, den).unwrap();
            let mx = g.maximum(x, c).unwrap();
            let nz = f32_const(&mut g, -0.0);
            let mn = g.minimum(x, nz).unwrap();
            let e = g.sub(mx, mn).unwrap();
            let gt = g.gt(x, a).unwrap();
            let y = g.where_(gt, t, e).unwrap();
            g.set_output("y", y).unwrap();
            // Unary ops, a cast round trip through f64 and f64 arithmetic.
            let s = g.sqrt(x).unwrap();
            let f = g.floor(x).unwrap();
            let ce = g.ceil(s).unwrap();
            let r = g.round(x).unwrap();
            let z = g.add(f, ce).unwrap();
            let z = g.sub(z, r).unwrap();
            let ng = g.neg(z).unwrap();
            let sg = g.sign(x).unwrap();
            let z = g.mul(ng, sg).unwrap();
            let rc = g.recip(x).unwrap();
            let rs = g.rsqrt(x).unwrap();
            let z = g.add(z, rc).unwrap();
            let z = g.add(z, rs).unwrap();
            let wide = g.cast(z, DType::F64).unwrap();
            let xw = g.cast(x, DType::F64).unwrap();
            let p = g.mul(wide, xw).unwrap();
            let p = g.minimum(p, wide).unwrap();
            let back = g.cast(p, DType::F32).unwrap();
            g.set_output("z", back).unwrap();
            // Comparisons of mixed kinds, logical ops, bool -> float.
            let le = g.le(x, c).unwrap();
            let eq = Graph::eq(&mut g, x, a).unwrap();
            let ne = Graph::ne(&mut g, s, s).unwrap(); // NaN test
            let o = g.or(le, eq).unwrap();
            let o = g.xor(o, ne).unwrap();
            let of = g.cast(o, DType::F32).unwrap();
            g.set_output("m", of).unwrap();
            for rows in [1usize, 3] {
                let case = Case {
                    g: &g,
                    inputs: vec![
                        (
                            "x",
                            Tensor::from_vec(vec![rows, w], values(rows * w, w as u64, true))
                                .unwrap(),
                        ),
                        ("a", Tensor::from_vec(vec![w], values(w, 7, true)).unwrap()),
                        (
                            "c",
                            Tensor::from_vec(vec![rows, 1], values(rows, 9, true)).unwrap(),
                        ),
                    ],
                    params: vec![],
                };
                let label = format!("w={w} rows={rows} symbolic={symbolic}");
                let n = case.check(&label, &[Cmp::Exact; 3], &[true; 3]);
                if w >= 4 || symbolic {
                    assert!(n >= 3, "{label}: {n} loops vectorized");
                }
            }
        }
    }
}

/// exp, tanh and the activations built on them: bit for bit with the interpreter for exp and
/// the exp-only sigmoid and SiLU, within 1 ulp for tanh; bit for bit with the scalar code for
/// all.
#[test]
fn transcendental_epilogues() {
    for symbolic in [false, true] {
        for &w in &SIZES {
            let mut g = Graph::new();
            let d = dims("n", (!symbolic).then_some(w));
            let x = input(&mut g, "x", DType::F32, &d);
            let e = g.exp(x).unwrap();
            g.set_output("exp", e).unwrap();
            let t = g.tanh(x).unwrap();
            g.set_output("tanh", t).unwrap();
            // sigmoid = 1 / (1 + exp(-x)); silu = x * sigmoid(x)
            let nx = g.neg(x).unwrap();
            let en = g.exp(nx).unwrap();
            let one = f32_const(&mut g, 1.0);
            let den = g.add(en, one).unwrap();
            let sig = g.recip(den).unwrap();
            g.set_output("sigmoid", sig).unwrap();
            let silu = g.mul(x, sig).unwrap();
            g.set_output("silu", silu).unwrap();
            // gelu_tanh = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            let x3 = g.mul(x, x).unwrap();
            let x3 = g.mul(x3, x).unwrap();
            let k = f32_const(&mut g, 0.044715);
            let x3 = g.mul(x3, k).unwrap();
            let inner = g.add(x, x3).unwrap();
            let s2p = f32_const(&mut g, (2.0 / std::f64::consts::PI).sqrt());
            let inner = g.mul(inner, s2p).unwrap();
            let th = g.tanh(inner).unwrap();
            let one2 = f32_const(&mut g, 1.0);
            let th = g.add(th, one2).unwrap();
            let half = f32_const(&mut g, 0.5);
            let hx = g.mul(x, half).unwrap();
            let gelu = g.mul(hx, th).unwrap();
            g.set_output("gelu", gelu).unwrap();
            for rows in [1usize, 2] {
                let case = Case {
                    g: &g,
                    inputs: vec![(
                        "x",
                        Tensor::from_vec(vec![rows, w], values(rows * w, 3 + w as u64, true))
                            .unwrap(),
                    )],
                    params: vec![],
                };
                let label = format!("w={w} rows={rows} symbolic={symbolic}");
                // GELU amplifies tanh's ulp near cancellation: compared with the interpreter
                // at a scale of the row, and bit for bit with the scalar code.
                let loose = Cmp::Scaled { tol: 1e-6, row: w };
                let n = case.check(
                    &label,
                    &[Cmp::Exact, Cmp::Ulps(1), Cmp::Exact, Cmp::Exact, loose],
                    &[true; 5],
                );
                if w >= 4 || symbolic {
                    assert!(n >= 1, "{label}: {n} loops vectorized");
                }
            }
        }
    }
}

/// `exp` around its underflow: vectors whose four lanes all lie below the clamp (-110) skip
/// the polynomial and give +0, mixed vectors take the full path; both must equal the scalar
/// code and the interpreter bit for bit (subnormal results near -103 included).
#[test]
fn exp_underflow_fast_path() {
    let pattern = [
        f32::NEG_INFINITY,
        -200.0,
        -110.5,
        -1e30,
        -109.9,
        -104.0,
        -103.5,
        -100.0,
        f32::NEG_INFINITY,
        f32::NEG_INFINITY,
        -111.0,
        0.5,
        -110.0,
        -110.0,
        -110.0,
        -110.0,
        f32::NAN,
        -300.0,
        -300.0,
        -300.0,
    ];
    for symbolic in [false, true] {
        for &w in &SIZES {
            let mut g = Graph::new();
            let d = dims("n", (!symbolic).then_some(w));
            let x = input(&mut g, "x", DType::F32, &d);
            let e = g.exp(x).unwrap();
            g.set_output("exp", e).unwrap();
            let xs: Vec<f32> = (0..w).map(|i| pattern[i % pattern.len()]).collect();
            let case = Case {
                g: &g,
                inputs: vec![("x", Tensor::from_vec(vec![1, w], xs).unwrap())],
                params: vec![],
            };
            let label = format!("exp underflow w={w} symbolic={symbolic}");
            let n = case.check(&label, &[Cmp::Exact], &[true]);
            if w >= 4 || symbolic {
                assert!(n >= 1, "{label}: {n} loops vectorized");
            }
        }
    }
}

fn row_inputs(rows: usize, w: usize, seed: u64, special: bool) -> Tensor {
    Tensor::from_vec(vec![rows, w], values(rows * w, seed, special)).unwrap()
}

/// Softmax: the row max (exact), the row sum of exps (reordered), the quotient.
#[test]
fn softmax_rows() {
    for symbolic in [false, true] {
        for &w in &SIZES {
            let mut g = Graph::new();
            let d = dims("n", (!symbolic).then_some(w));
            let x = input(&mut g, "x", DType::F32, &d);
            let mx = g.max(x, &[1], true).unwrap();
            let dd = g.sub(x, mx).unwrap();
            let e = g.exp(dd).unwrap();
            let z = g.sum(e, &[1], true).unwrap();
            let y = g.div(e, z).unwrap();
            g.set_output("y", y).unwrap();
            let case = Case {
                g: &g,
                inputs: vec![("x", row_inputs(5, w, 11 + w as u64, false))],
                params: vec![],
            };
            let label = format!("softmax w={w} symbolic={symbolic}");
            let n = case.check(&label, &[Cmp::Scaled { tol: 1e-6, row: w }], &[false]);
            if w >= 4 || symbolic {
                assert!(n >= 3, "{label}: {n} loops vectorized");
            }
        }
    }
}

/// Attention's masked softmax: `where(mask, -inf, x * 0.125)` with a bool mask read as
/// contiguous bytes in all three row loops (vector bool loads), rows partly or fully masked.
#[test]
fn masked_softmax_rows() {
    for symbolic in [false, true] {
        for &w in &SIZES {
            let rows = 6;
            let mut g = Graph::new();
            let d = dims("n", (!symbolic).then_some(w));
            let x = input(&mut g, "x", DType::F32, &d);
            let m = input(&mut g, "m", DType::Bool, &d);
            let scale = f32_const(&mut g, 0.125);
            let xs = g.mul(x, scale).unwrap();
            let ninf = f32_const(&mut g, f64::NEG_INFINITY);
            let s = g.where_(m, ninf, xs).unwrap();
            let mx = g.max(s, &[1], true).unwrap();
            let dd = g.sub(s, mx).unwrap();
            let e = g.exp(dd).unwrap();
            let z = g.sum(e, &[1], true).unwrap();
            let y = g.div(e, z).unwrap();
            g.set_output("y", y).unwrap();
            // Row r masks columns above r (causal), except row 0, which masks every other
            // column; the last row masks nothing.
            let mask: Vec<bool> = (0..rows * w)
                .map(|i| {
                    let (r, c) = (i / w, i % w);
                    if r == 0 {
                        c % 2 == 1
                    } else {
                        r < rows - 1 && c > r
                    }
                })
                .collect();
            let case = Case {
                g: &g,
                inputs: vec![
                    ("x", row_inputs(rows, w, 41 + w as u64, false)),
                    ("m", Tensor::from_vec(vec![rows, w], mask).unwrap()),
                ],
                params: vec![],
            };
            let label = format!("masked softmax w={w} symbolic={symbolic}");
            let n = case.check(&label, &[Cmp::Scaled { tol: 1e-6, row: w }], &[false]);
            if w >= 4 || symbolic {
                assert!(n >= 3, "{label}: {n} loops vectorized");
            }
        }
    }
}

/// The reductions themselves as outputs: f32 max (bit for bit, signed zeros and NaN
/// included) and f64 sums of f32 terms (within 1e-5 of the sum of |terms|).
#[test]
fn row_max_and_sum() {
    for symbolic in [false, true] {
        for &w in &SIZES {
            let mut g = Graph::new();
            let d = dims("n", (!symbolic).then_some(w));
            let x = input(&mut g, "x", DType::F32, &d);
            let mx = g.max(x, &[1], false).unwrap();
            g.set_output("max", mx).unwrap();
            let sq = g.mul(x, x).unwrap();
            let s = g.sum(sq, &[1], false).unwrap();
            g.set_output("sumsq", s).unwrap();
            let s1 = g.sum(x, &[1], false).unwrap();
            g.set_output("sum", s1).unwrap();
            let rows = 6;
            let mut v = values(rows * w, 21 + w as u64, false);
            // Row 1: negatives and zeros, the first zero -0.0 (in lane 1) and +0.0 in lane 0
            // later: the sequential max is -0.0, folding the lanes in order would give +0.0.
            // Row 2: the same with the signs of the zeros swapped. Row 3: a NaN. Row 4:
            // +inf and -inf. Row 5: large cancelling values.
            for j in 0..w {
                let later_zero = j % 4 == 0 && j > 0;
                v[w + j] = if later_zero { 0.0 } else { -1.0 };
                v[2 * w + j] = if later_zero { -0.0 } else { -1.0 };
            }
            if w > 1 {
                v[w + 1] = -0.0;
                v[2 * w + 1] = 0.0;
            }
            v[3 * w + w / 2] = f32::NAN;
            v[4 * w + w / 3] = f32::INFINITY;
            v[4 * w + w - 1] = f32::NEG_INFINITY;
            for j in 0..w {
                v[5 * w + j] = if j % 2 == 0 { 3e7 } else { -3e7 + 1.0 };
            }
            let xt = Tensor::from_vec(vec![rows, w], v.clone()).unwrap();
            let want = run(&g, &Env::new().input("x", xt.clone())).unwrap().outputs;
            let c = compile(&g, None).unwrap();
            let n = vectorized(&c);
            if w >= 4 || symbolic {
                assert!(n >= 3, "w={w}: {n} loops vectorized");
            }
            let mut exe = CpuExecutable::new(&c, &CpuOptions { threads: 1 }).unwrap();
            let got = exe.run(&[("x", &xt)], &kiln_ir::Bindings::new()).unwrap();
            let label = format!("w={w} symbolic={symbolic}");
            compare(&format!("{label} max"), &want[0].1, &got[0].1, Cmp::Exact);
            for (o, square) in [(1, true), (2, false)] {
                let (a, b) = (
                    want[o].1.to_f64_vec().unwrap(),
                    got[o].1.to_f64_vec().unwrap(),
                );
                for r in 0..rows {
                    let terms: f64 = v[r * w..(r + 1) * w]
                        .iter()
                        .map(|&t| if square { (t * t).abs() } else { t.abs() } as f64)
                        .sum();
                    let (p, q) = (a[r], b[r]);
                    if !p.is_finite() || !terms.is_finite() {
                        assert!(
                            p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()),
                            "{label} sum {o} row {r}: {p} vs {q}"
                        );
                        continue;
                    }
                    assert!(
                        (p - q).abs() <= 1e-5 * terms,
                        "{label} sum {o} row {r}: {p} vs {q} (sum |terms| {terms})"
                    );
                }
            }
        }
    }
}

/// RMSNorm `x * rsqrt(mean(x^2) + eps) * w` and LayerNorm `(x - mean) * rsqrt(var + eps)
/// * g + b`.
#[test]
fn rms_norm_and_layer_norm() {
    for symbolic in [false, true] {
        for &w in &SIZES {
            let mut g = Graph::new();
            let d = dims("n", (!symbolic).then_some(w));
            let x = input(&mut g, "x", DType::F32, &d);
            let gamma = g
                .param("g", DType::F32, Shape::new([d[1].clone()]))
                .unwrap();
            let beta = g
                .param("b", DType::F32, Shape::new([d[1].clone()]))
                .unwrap();
            let wn = g.dim_value(d[1].clone(), DType::F32).unwrap();
            let eps = f32_const(&mut g, 1e-5);
            // RMSNorm
            let sq = g.mul(x, x).unwrap();
            let s = g.sum(sq, &[1], true).unwrap();
            let ms = g.div(s, wn).unwrap();
            let ms = g.add(ms, eps).unwrap();
            let r = g.rsqrt(ms).unwrap();
            let y = g.mul(x, r).unwrap();
            let y = g.mul(y, gamma).unwrap();
            g.set_output("rms", y).unwrap();
            // LayerNorm
            let s = g.sum(x, &[1], true).unwrap();
            let mean = g.div(s, wn).unwrap();
            let c = g.sub(x, mean).unwrap();
            let c2 = g.mul(c, c).unwrap();
            let v = g.sum(c2, &[1], true).unwrap();
            let v = g.div(v, wn).unwrap();
            let v = g.add(v, eps).unwrap();
            let r = g.rsqrt(v).unwrap();
            let y = g.mul(c, r).unwrap();
            let y = g.mul(y, gamma).unwrap();
            let y = g.add(y, beta).unwrap();
            g.set_output("ln", y).unwrap();
            let case = Case {
                g: &g,
                inputs: vec![("x", row_inputs(4, w, 31 + w as u64, false))],
                params: vec![
                    ("g", Tensor::from_vec(vec![w], values(w, 5, false)).unwrap()),
                    ("b", Tensor::from_vec(vec![w], values(w, 6, false)).unwrap()),
                ],
            };
            let label = format!("norms w={w} symbolic={symbolic}");
            let tol = Cmp::Scaled { tol: 1e-5, row: w };
            let n = case.check(&label, &[tol, tol], &[false, false]);
            if w >= 4 || symbolic {
                assert!(n >= 5, "{label}: {n} loops vectorized");
            }
        }
    }
}

/// `silu(x @ W^T + b)`: the matmul's epilogue kernel (and its A-pack kernel) are
/// vectorized; the product itself is the f32 micro-kernel's (not bit-exact with the
/// interpreter's f64 accumulation).
#[test]
fn matmul_with_fused_epilogue() {
    for &n in &[1usize, 3, 5, 17, 31, 64] {
        for &m in &[1usize, 7, 33] {
            let k = 37;
            let mut g = Graph::new();
            let x = input(
                &mut g,
                "x",
                DType::F32,
                &[Dim::from("m"), Dim::from(k as i64)],
            );
            let wt = g
                .param("w", DType::F32, Shape::new([n as i64, k as i64]))
                .unwrap();
            let b = g.param("b", DType::F32, Shape::new([n as i64])).unwrap();
            let y = g.matmul_t(x, wt, false, true).unwrap();
            let y = g.add(y, b).unwrap();
            let ny = g.neg(y).unwrap();
            let e = g.exp(ny).unwrap();
            let one = f32_const(&mut g, 1.0);
            let d = g.add(e, one).unwrap();
            let s = g.recip(d).unwrap();
            let y = g.mul(y, s).unwrap();
            g.set_output("y", y).unwrap();
            let case = Case {
                g: &g,
                inputs: vec![(
                    "x",
                    Tensor::from_vec(vec![m, k], values(m * k, 41, false)).unwrap(),
                )],
                params: vec![
                    (
                        "w",
                        Tensor::from_vec(vec![n, k], values(n * k, 42, false)).unwrap(),
                    ),
                    (
                        "b",
                        Tensor::from_vec(vec![n], values(n, 43, false)).unwrap(),
                    ),
                ],
            };
            let c = compile(&g, None).unwrap();
            let plan = plan_matmul(&c.schedule.kernels[0]).expect("a split matmul");
            if n >= 4 {
                assert_eq!(vector::vectorized_loops(&plan.epilogue), 1, "n={n}");
            }
            assert_eq!(vector::vectorized_loops(&plan.phases[0].pack_a), 1);
            // The vector epilogue equals the scalar epilogue bit for bit.
            let label = format!("matmul m={m} n={n}");
            case.check(&label, &[Cmp::Scaled { tol: 1e-5, row: n }], &[true]);
        }
    }
}

/// Pad and concat: selects guarding out-of-range loads (checked loads, lane by lane at the
/// edges), bit for bit.
#[test]
fn pad_and_concat_guarded_loads() {
    for symbolic in [false, true] {
        for &w in &SIZES {
            let mut g = Graph::new();
            let d = dims("n", (!symbolic).then_some(w));
            let x = input(&mut g, "x", DType::F32, &d);
            let p = g
                .pad(
                    x,
                    vec![(Dim::from(0), Dim::from(0)), (Dim::from(3), Dim::from(6))],
                    Scalar::Float(0.5),
                )
                .unwrap();
            let p = g.exp(p).unwrap();
            g.set_output("pad", p).unwrap();
            let y = input(&mut g, "y", DType::F32, &[d[0].clone(), Dim::from(5)]);
            let cc = g.concat(&[x, y, x], 1).unwrap();
            g.set_output("concat", cc).unwrap();
            for rows in [1usize, 2] {
                let case = Case {
                    g: &g,
                    inputs: vec![
                        ("x", row_inputs(rows, w, 51 + w as u64, true)),
                        ("y", row_inputs(rows, 5, 52, true)),
                    ],
                    params: vec![],
                };
                let label = format!("pad/concat w={w} rows={rows} symbolic={symbolic}");
                let n = case.check(&label, &[Cmp::Exact, Cmp::Exact], &[true, true]);
                assert!(n >= 2, "{label}: {n} loops vectorized");
            }
        }
    }
}

/// i32 elementwise: wrapping add/sub/mul, min/max, bitwise ops, compares and selects,
/// i32 <-> f32 casts, bit for bit.
#[test]
fn int32_elementwise() {
    for symbolic in [false, true] {
        for &w in &SIZES {
            let mut g = Graph::new();
            let d = dims("n", (!symbolic).then_some(w));
            let a = input(&mut g, "a", DType::I32, &d);
            let b = input(&mut g, "b", DType::I32, &d[1..]);
            let s = g.add(a, b).unwrap();
            let p = g.mul(s, a).unwrap();
            let q = g.sub(p, b).unwrap();
            let mx = g.maximum(q, a).unwrap();
            let mn = g.minimum(mx, b).unwrap();
            let x = g.xor(mn, a).unwrap();
            let o = g.or(x, b).unwrap();
            let an = g.and(o, s).unwrap();
            let lt = g.lt(a, b).unwrap();
            let ng = g.neg(an).unwrap();
            let ab = g.abs(q).unwrap();
            let r = g.where_(lt, ng, ab).unwrap();
            g.set_output("r", r).unwrap();
            let f = g.cast(a, DType::F32).unwrap();
            let h = f32_const(&mut g, 0.75);
            let f = g.mul(f, h).unwrap();
            let back = g.cast(f, DType::I32).unwrap();
            g.set_output("back", back).unwrap();
            let case = Case {
                g: &g,
                inputs: vec![
                    (
                        "a",
                        Tensor::from_vec(vec![3, w], ints(3 * w, 61 + w as u64)).unwrap(),
                    ),
                    ("b", Tensor::from_vec(vec![w], ints(w, 62)).unwrap()),
                ],
                params: vec![],
            };
            let label = format!("i32 w={w} symbolic={symbolic}");
            let n = case.check(&label, &[Cmp::Exact, Cmp::Exact], &[true, true]);
            if w >= 4 || symbolic {
                assert!(n >= 2, "{label}: {n} loops vectorized");
            }
        }
    }
}

/// One long flat elementwise loop over `lo..hi` split across two threads (uneven ranges,
/// each with its own remainder), with a symbolic length bound to several values.
#[test]
fn flat_loop_split_across_threads() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", DType::F32, &[Dim::from("n")]);
    let t = g.tanh(x).unwrap();
    let y = g.mul(t, x).unwrap();
    g.set_output("y", y).unwrap();
    for n in [0usize, 1, 6, 9, 1023, 4097, 100_003] {
        let case = Case {
            g: &g,
            inputs: vec![(
                "x",
                Tensor::from_vec(vec![n], values(n, 71 + n as u64, true)).unwrap(),
            )],
            params: vec![],
        };
        let nv = case.check(
            &format!("flat n={n}"),
            &[Cmp::Scaled { tol: 1e-6, row: 1 }],
            &[true],
        );
        assert_eq!(nv, 1);
    }
}

/// A small elementwise kernel and a small reduction kernel, as Cranelift IR.
#[test]
fn clif_snapshots() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", DType::F32, &[Dim::from("n")]);
    let b = input(&mut g, "b", DType::F32, &[Dim::from(1)]);
    let y = g.mul(x, b).unwrap();
    let one = f32_const(&mut g, 1.0);
    let y = g.add(y, one).unwrap();
    g.set_output("y", y).unwrap();
    let c = compile(&g, None).unwrap();
    let k = &c.schedule.kernels[0];
    assert_eq!(vector::vectorized_loops(k), 1);
    insta::assert_snapshot!("elementwise_clif", vector::clif_text(k).unwrap());

    let mut g = Graph::new();
    let x = input(&mut g, "x", DType::F32, &[Dim::from("n")]);
    let s = g.sum(x, &[0], false).unwrap();
    g.set_output("s", s).unwrap();
    let c = compile(&g, None).unwrap();
    let k = &c.schedule.kernels[0];
    assert_eq!(vector::vectorized_loops(k), 1);
    insta::assert_snapshot!("reduction_clif", vector::clif_text(k).unwrap());
}

/// An embedding lookup: rows read at a data-dependent offset (checked loads whose slow path
/// clamps and flags, as the scalar code), in range and out of range.
#[test]
fn embedding_rows() {
    for &d in &SIZES {
        let vocab = 11usize;
        let mut g = Graph::new();
        let table = g
            .param("t", DType::F32, Shape::new([vocab as i64, d as i64]))
            .unwrap();
        let ids = input(&mut g, "ids", DType::I32, &[Dim::from("n")]);
        let e = g.index_select(table, 0, ids).unwrap();
        let two = f32_const(&mut g, 2.0);
        let e = g.mul(e, two).unwrap();
        g.set_output("e", e).unwrap();
        let ids_ok = vec![0, 10, 3, 3, 7, 1];
        let case = Case {
            g: &g,
            inputs: vec![("ids", Tensor::from_vec(vec![ids_ok.len()], ids_ok).unwrap())],
            params: vec![(
                "t",
                Tensor::from_vec(vec![vocab, d], values(vocab * d, 81, true)).unwrap(),
            )],
        };
        let n = case.check(&format!("embedding d={d}"), &[Cmp::Exact], &[true]);
        if d >= 4 {
            assert_eq!(n, 1, "d={d}");
        }
        // An id out of range: the scalar and the vector code both report it.
        let c = compile(&g, None).unwrap();
        let bad = Tensor::from_vec(vec![3], vec![2, 11, -1]).unwrap();
        let err = |exe: &mut CpuExecutable| {
            exe.set_param("t", &case.params[0].1).unwrap();
            exe.run(&[("ids", &bad)], &kiln_ir::Bindings::new())
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        let mut exe = CpuExecutable::new(&c, &CpuOptions { threads: 1 }).unwrap();
        let v = err(&mut exe);
        let s = vector::scalar_only(|| {
            let mut exe = CpuExecutable::new(&c, &CpuOptions { threads: 1 }).unwrap();
            err(&mut exe)
        });
        assert_eq!(v, s);
    }
}

/// A causal mask from index arithmetic (i64 lanes compared, the mask narrowed to select f32
/// lanes) before a softmax; an iota cast to i32 and f32.
#[test]
fn causal_mask_softmax_and_iota() {
    for symbolic in [false, true] {
        for &w in &SIZES {
            let mut g = Graph::new();
            let d = dims("n", (!symbolic).then_some(w));
            let x = input(&mut g, "x", DType::F32, &d);
            let shape = Shape::new(d.to_vec());
            let row = g.iota(0, DType::I64, shape.clone()).unwrap();
            let col = g.iota(1, DType::I64, shape.clone()).unwrap();
            let past = g.scalar(Scalar::Int(2), DType::I64).unwrap();
            let lim = g.add(row, past).unwrap();
            let keep = g.le(col, lim).unwrap();
            let ninf = f32_const(&mut g, f64::NEG_INFINITY);
            let xm = g.where_(keep, x, ninf).unwrap();
            let mx = g.max(xm, &[1], true).unwrap();
            let dd = g.sub(xm, mx).unwrap();
            let e = g.exp(dd).unwrap();
            let z = g.sum(e, &[1], true).unwrap();
            let y = g.div(e, z).unwrap();
            g.set_output("y", y).unwrap();
            // i64 -> f32 stays scalar (no exact vector conversion); through i32 it is not.
            let ci = g.cast(col, DType::I32).unwrap();
            let ci = g.cast(ci, DType::F32).unwrap();
            let s = g.mul(ci, x).unwrap();
            g.set_output("iota", s).unwrap();
            let case = Case {
                g: &g,
                inputs: vec![("x", row_inputs(6, w, 91 + w as u64, false))],
                params: vec![],
            };
            let label = format!("causal w={w} symbolic={symbolic}");
            let n = case.check(
                &label,
                &[Cmp::Scaled { tol: 1e-6, row: w }, Cmp::Exact],
                &[false, true],
            );
            if w >= 4 || symbolic {
                assert!(n >= 4, "{label}: {n} loops vectorized");
            }
        }
    }
}

/// Integer reductions (exact in any order): row sums and maxima of i32.
#[test]
fn int32_row_reductions() {
    for symbolic in [false, true] {
        for &w in &SIZES {
            let mut g = Graph::new();
            let d = dims("n", (!symbolic).then_some(w));
            let a = input(&mut g, "a", DType::I32, &d);
            let s = g.sum(a, &[1], false).unwrap();
            g.set_output("sum", s).unwrap();
            let m = g.max(a, &[1], false).unwrap();
            g.set_output("max", m).unwrap();
            let case = Case {
                g: &g,
                inputs: vec![(
                    "a",
                    Tensor::from_vec(vec![4, w], ints(4 * w, 101 + w as u64)).unwrap(),
                )],
                params: vec![],
            };
            let label = format!("i32 rows w={w} symbolic={symbolic}");
            let n = case.check(&label, &[Cmp::Exact, Cmp::Exact], &[true, true]);
            if w >= 4 || symbolic {
                assert!(n >= 2, "{label}: {n} loops vectorized");
            }
        }
    }
}
