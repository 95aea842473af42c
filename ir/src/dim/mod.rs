//! Symbolic dimensions.
//!
//! A [`Dim`] is an integer expression over named symbols (`seq`, `past`, `batch`, ...) built with
//! `+`, `-`, `*`, floor division, floor modulo, `min` and `max`. Every `Dim` is kept in a
//! canonical form — a polynomial with integer coefficients over symbols and over irreducible
//! `//`, `%`, `min`, `max` terms — so equality is structural: `seq + past == past + seq`,
//! `2 * (seq + 1) == 2 + seq * 2`, `(4 * seq + 3) // 4 == seq`.
//!
//! Semantics are those of Python integers: `a // b` rounds toward negative infinity and
//! `a % b` has the sign of `b`, so `a == (a // b) * b + a % b`. Every simplification is exact
//! over all integers, which the property tests check against direct evaluation.

mod display;
mod parse;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub use parse::DimParseError;

/// A symbolic (or constant) dimension in canonical form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dim {
    /// Sorted by monomial, no zero coefficients; the constant term has the empty monomial.
    terms: Vec<(Monomial, i64)>,
}

/// A product of atoms with positive powers, sorted by atom.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
struct Monomial(Vec<(Atom, u32)>);

/// An irreducible factor.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Atom {
    Sym(Arc<str>),
    FloorDiv(Box<Dim>, Box<Dim>),
    Mod(Box<Dim>, Box<Dim>),
    /// Arguments sorted, so `min(a, b) == min(b, a)`.
    Min(Box<Dim>, Box<Dim>),
    /// Arguments sorted, so `max(a, b) == max(b, a)`.
    Max(Box<Dim>, Box<Dim>),
}

/// One term of a [`Dim`]'s canonical form (see [`Dim::terms`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DimTerm<'a> {
    /// The integer coefficient (never zero).
    pub coefficient: i64,
    /// Factors with their powers (empty for the constant term).
    pub factors: Vec<(DimAtom<'a>, u32)>,
}

/// An irreducible factor of a [`Dim`] term, borrowed: a symbol, or `//`, `%` (Python
/// semantics), `min` or `max` of two dims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DimAtom<'a> {
    /// A named symbol.
    Symbol(&'a str),
    /// Floor division.
    FloorDiv(&'a Dim, &'a Dim),
    /// Floor modulo (the sign of the divisor).
    Mod(&'a Dim, &'a Dim),
    /// Minimum.
    Min(&'a Dim, &'a Dim),
    /// Maximum.
    Max(&'a Dim, &'a Dim),
}

/// Values for symbols, used to evaluate a [`Dim`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bindings(BTreeMap<String, i64>);

/// Why a [`Dim`] could not be evaluated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DimError {
    /// A symbol in the expression has no value.
    #[error("symbol `{symbol}` has no value (in dimension `{dim}`)")]
    Unbound {
        /// The symbol without a value.
        symbol: String,
        /// The whole expression being evaluated.
        dim: String,
    },
    /// Floor division or modulo by zero.
    #[error("division by zero in dimension `{dim}`")]
    DivisionByZero {
        /// The expression being evaluated.
        dim: String,
    },
    /// The value does not fit in 64 bits.
    #[error("integer overflow evaluating dimension `{dim}`")]
    Overflow {
        /// The expression being evaluated.
        dim: String,
    },
}

impl Bindings {
    /// No bindings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a symbol's value (builder style).
    pub fn with(mut self, symbol: &str, value: i64) -> Self {
        self.set(symbol, value);
        self
    }

    /// Adds or replaces a symbol's value.
    pub fn set(&mut self, symbol: &str, value: i64) {
        self.0.insert(symbol.to_string(), value);
    }

    /// A symbol's value.
    pub fn get(&self, symbol: &str) -> Option<i64> {
        self.0.get(symbol).copied()
    }

    /// All bindings, sorted by symbol.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

/// Floor division with Python semantics; `None` on division by zero or overflow.
fn floor_div(a: i64, b: i64) -> Option<i64> {
    let q = a.checked_div(b)?;
    if (a % b != 0) && ((a < 0) != (b < 0)) {
        q.checked_sub(1)
    } else {
        Some(q)
    }
}

/// Floor modulo with Python semantics (sign of the divisor); `None` on division by zero.
fn floor_mod(a: i64, b: i64) -> Option<i64> {
    if b == 0 {
        return None;
    }
    let r = a.wrapping_rem(b);
    Some(if r != 0 && ((r < 0) != (b < 0)) {
        r + b
    } else {
        r
    })
}

impl Dim {
    /// A constant.
    pub fn constant(value: i64) -> Dim {
        let mut d = Dim { terms: Vec::new() };
        if value != 0 {
            d.terms.push((Monomial::default(), value));
        }
        d
    }

    /// A named symbol. The name should be an identifier (`[A-Za-z_][A-Za-z0-9_]*`) so the text
    /// format can read it back.
    pub fn symbol(name: &str) -> Dim {
        Dim::atom(Atom::Sym(Arc::from(name)))
    }

    fn atom(atom: Atom) -> Dim {
        Dim {
            terms: vec![(Monomial(vec![(atom, 1)]), 1)],
        }
    }

    /// The value if this dimension is a constant.
    pub fn as_const(&self) -> Option<i64> {
        match self.terms.as_slice() {
            [] => Some(0),
            [(m, c)] if m.0.is_empty() => Some(*c),
            _ => None,
        }
    }

    /// The symbol's name if this dimension is exactly one symbol.
    pub fn as_symbol(&self) -> Option<&str> {
        match self.terms.as_slice() {
            [(Monomial(atoms), 1)] => match atoms.as_slice() {
                [(Atom::Sym(s), 1)] => Some(s),
                _ => None,
            },
            _ => None,
        }
    }

    /// True if this dimension has no symbols.
    pub fn is_const(&self) -> bool {
        self.as_const().is_some()
    }

    /// Every symbol this dimension mentions, sorted and deduplicated.
    pub fn symbols(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_symbols(&mut out);
        out.sort();
        out.dedup();
        out
    }

    fn collect_symbols(&self, out: &mut Vec<String>) {
        for (m, _) in &self.terms {
            for (a, _) in &m.0 {
                match a {
                    Atom::Sym(s) => out.push(s.to_string()),
                    Atom::FloorDiv(x, y) | Atom::Mod(x, y) | Atom::Min(x, y) | Atom::Max(x, y) => {
                        x.collect_symbols(out);
                        y.collect_symbols(out);
                    }
                }
            }
        }
    }

    /// The canonical form, for code generators: a sum of `coefficient * product of factors`
    /// terms (each factor with a positive power); the constant term has no factors.
    pub fn terms(&self) -> Vec<DimTerm<'_>> {
        self.terms
            .iter()
            .map(|(m, c)| DimTerm {
                coefficient: *c,
                factors: m
                    .0
                    .iter()
                    .map(|(a, p)| {
                        let atom = match a {
                            Atom::Sym(s) => DimAtom::Symbol(s),
                            Atom::FloorDiv(x, y) => DimAtom::FloorDiv(x, y),
                            Atom::Mod(x, y) => DimAtom::Mod(x, y),
                            Atom::Min(x, y) => DimAtom::Min(x, y),
                            Atom::Max(x, y) => DimAtom::Max(x, y),
                        };
                        (atom, *p)
                    })
                    .collect(),
            })
            .collect()
    }

    fn from_terms(mut map: BTreeMap<Monomial, i64>) -> Dim {
        map.retain(|_, c| *c != 0);
        Dim {
            terms: map.into_iter().collect(),
        }
    }

    fn scale(&self, k: i64) -> Dim {
        Dim::from_terms(
            self.terms
                .iter()
                .map(|(m, c)| (m.clone(), c.saturating_mul(k)))
                .collect(),
        )
    }

    /// `self / rhs` when it is exact for every binding: `rhs` is one term (a coefficient
    /// times a product of symbols) that divides every term of `self`. `None` otherwise, e.g.
    /// to infer the `-1` of a reshape: `(64*batch*seq).exact_div(64*batch) == Some(seq)`.
    pub fn exact_div(&self, rhs: &Dim) -> Option<Dim> {
        let [(m, c)] = rhs.terms.as_slice() else {
            return None;
        };
        let mut out = BTreeMap::new();
        for (tm, tc) in &self.terms {
            if tc.checked_rem(*c)? != 0 {
                return None;
            }
            let mut powers: BTreeMap<Atom, u32> = tm.0.iter().cloned().collect();
            for (atom, p) in &m.0 {
                let have = powers.get_mut(atom)?;
                *have = have.checked_sub(*p)?;
                if *have == 0 {
                    powers.remove(atom);
                }
            }
            out.insert(Monomial(powers.into_iter().collect()), tc.checked_div(*c)?);
        }
        Some(Dim::from_terms(out))
    }

    /// Floor division (`a // b`, rounding toward negative infinity). `0 // b` folds to 0.
    pub fn floor_div(&self, rhs: &Dim) -> Dim {
        if self.terms.is_empty() {
            return Dim::constant(0);
        }
        if let Some(c) = rhs.as_const() {
            if c == 1 {
                return self.clone();
            }
            if c == -1 {
                return -self.clone();
            }
            if c > 0 {
                // Split every coefficient k = c*q + r with 0 <= r < c: (c*Q + R) // c == Q + R // c.
                let (q, r) = self.split_coefficients(c);
                if let Some(rc) = r.as_const() {
                    return q + Dim::constant(floor_div(rc, c).unwrap_or(0));
                }
                return q + Dim::atom(Atom::FloorDiv(Box::new(r), Box::new(rhs.clone())));
            }
        }
        if let (Some(a), Some(b)) = (self.as_const(), rhs.as_const()) {
            if let Some(v) = floor_div(a, b) {
                return Dim::constant(v);
            }
        }
        Dim::atom(Atom::FloorDiv(
            Box::new(self.clone()),
            Box::new(rhs.clone()),
        ))
    }

    /// Floor modulo (`a % b`, with the sign of `b`). `0 % b` folds to 0.
    pub fn modulo(&self, rhs: &Dim) -> Dim {
        if self.terms.is_empty() {
            return Dim::constant(0);
        }
        if let Some(c) = rhs.as_const() {
            if c == 1 || c == -1 {
                return Dim::constant(0);
            }
            if c > 0 {
                // (c*Q + R) % c == R % c, with R's coefficients in [0, c).
                let (_, r) = self.split_coefficients(c);
                if let Some(rc) = r.as_const() {
                    return Dim::constant(floor_mod(rc, c).unwrap_or(0));
                }
                return Dim::atom(Atom::Mod(Box::new(r), Box::new(rhs.clone())));
            }
        }
        if let (Some(a), Some(b)) = (self.as_const(), rhs.as_const()) {
            if let Some(v) = floor_mod(a, b) {
                return Dim::constant(v);
            }
        }
        Dim::atom(Atom::Mod(Box::new(self.clone()), Box::new(rhs.clone())))
    }

    /// Splits `self = c * q + r` where every coefficient of `r` lies in `[0, c)`.
    fn split_coefficients(&self, c: i64) -> (Dim, Dim) {
        let mut q = BTreeMap::new();
        let mut r = BTreeMap::new();
        for (m, k) in &self.terms {
            q.insert(m.clone(), k.div_euclid(c));
            r.insert(m.clone(), k.rem_euclid(c));
        }
        (Dim::from_terms(q), Dim::from_terms(r))
    }

    /// The smaller of two dimensions.
    pub fn minimum(&self, rhs: &Dim) -> Dim {
        self.extremum(rhs, true)
    }

    /// The larger of two dimensions.
    pub fn maximum(&self, rhs: &Dim) -> Dim {
        self.extremum(rhs, false)
    }

    fn extremum(&self, rhs: &Dim, is_min: bool) -> Dim {
        // If the two differ by a constant, the answer is known for every binding.
        let diff = self.clone() - rhs.clone();
        if let Some(d) = diff.as_const() {
            let self_smaller = d <= 0;
            return if self_smaller == is_min {
                self.clone()
            } else {
                rhs.clone()
            };
        }
        // Constants sort last, so `min(seq, 128)` reads naturally.
        let key = |d: &Dim| (d.is_const(), d.clone());
        let (a, b) = if key(self) <= key(rhs) {
            (self, rhs)
        } else {
            (rhs, self)
        };
        let (a, b) = (Box::new(a.clone()), Box::new(b.clone()));
        Dim::atom(if is_min {
            Atom::Min(a, b)
        } else {
            Atom::Max(a, b)
        })
    }

    /// Evaluates under `bindings`.
    pub fn eval(&self, bindings: &Bindings) -> Result<i64, DimError> {
        self.eval_inner(bindings).map_err(|e| e.into_error(self))
    }

    fn eval_inner(&self, b: &Bindings) -> Result<i64, EvalFail> {
        let mut total: i64 = 0;
        for (m, c) in &self.terms {
            let mut v = *c;
            for (atom, pow) in &m.0 {
                let a = atom.eval(b)?;
                for _ in 0..*pow {
                    v = v.checked_mul(a).ok_or(EvalFail::Overflow)?;
                }
            }
            total = total.checked_add(v).ok_or(EvalFail::Overflow)?;
        }
        Ok(total)
    }

    /// Replaces symbols by other dimensions (symbols without a replacement stay).
    pub fn substitute(&self, map: &BTreeMap<String, Dim>) -> Dim {
        let mut out = Dim::constant(0);
        for (m, c) in &self.terms {
            let mut t = Dim::constant(*c);
            for (atom, pow) in &m.0 {
                let a = atom.substitute(map);
                for _ in 0..*pow {
                    t = t * a.clone();
                }
            }
            out = out + t;
        }
        out
    }
}

enum EvalFail {
    Unbound(String),
    DivisionByZero,
    Overflow,
}

impl EvalFail {
    fn into_error(self, dim: &Dim) -> DimError {
        let dim = dim.to_string();
        match self {
            EvalFail::Unbound(symbol) => DimError::Unbound { symbol, dim },
            EvalFail::DivisionByZero => DimError::DivisionByZero { dim },
            EvalFail::Overflow => DimError::Overflow { dim },
        }
    }
}

impl Atom {
    fn eval(&self, b: &Bindings) -> Result<i64, EvalFail> {
        Ok(match self {
            Atom::Sym(s) => b.get(s).ok_or_else(|| EvalFail::Unbound(s.to_string()))?,
            Atom::FloorDiv(x, y) => {
                let (x, y) = (x.eval_inner(b)?, y.eval_inner(b)?);
                if y == 0 {
                    return Err(EvalFail::DivisionByZero);
                }
                floor_div(x, y).ok_or(EvalFail::Overflow)?
            }
            Atom::Mod(x, y) => {
                let (x, y) = (x.eval_inner(b)?, y.eval_inner(b)?);
                floor_mod(x, y).ok_or(EvalFail::DivisionByZero)?
            }
            Atom::Min(x, y) => x.eval_inner(b)?.min(y.eval_inner(b)?),
            Atom::Max(x, y) => x.eval_inner(b)?.max(y.eval_inner(b)?),
        })
    }

    fn substitute(&self, map: &BTreeMap<String, Dim>) -> Dim {
        match self {
            Atom::Sym(s) => map
                .get(s.as_ref())
                .cloned()
                .unwrap_or_else(|| Dim::atom(self.clone())),
            Atom::FloorDiv(x, y) => x.substitute(map).floor_div(&y.substitute(map)),
            Atom::Mod(x, y) => x.substitute(map).modulo(&y.substitute(map)),
            Atom::Min(x, y) => x.substitute(map).minimum(&y.substitute(map)),
            Atom::Max(x, y) => x.substitute(map).maximum(&y.substitute(map)),
        }
    }
}

impl Monomial {
    fn mul(&self, other: &Monomial) -> Monomial {
        let mut map: BTreeMap<Atom, u32> = self.0.iter().cloned().collect();
        for (a, p) in &other.0 {
            *map.entry(a.clone()).or_insert(0) += p;
        }
        Monomial(map.into_iter().collect())
    }
}

impl From<i64> for Dim {
    fn from(v: i64) -> Dim {
        Dim::constant(v)
    }
}

impl From<usize> for Dim {
    fn from(v: usize) -> Dim {
        Dim::constant(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<i32> for Dim {
    fn from(v: i32) -> Dim {
        Dim::constant(v.into())
    }
}

impl From<&str> for Dim {
    /// A symbol with this name.
    fn from(name: &str) -> Dim {
        Dim::symbol(name)
    }
}

impl From<&Dim> for Dim {
    fn from(d: &Dim) -> Dim {
        d.clone()
    }
}

impl std::ops::Add for Dim {
    type Output = Dim;
    fn add(self, rhs: Dim) -> Dim {
        let mut map: BTreeMap<Monomial, i64> = self.terms.into_iter().collect();
        for (m, c) in rhs.terms {
            let e = map.entry(m).or_insert(0);
            *e = e.saturating_add(c);
        }
        Dim::from_terms(map)
    }
}

impl std::ops::Neg for Dim {
    type Output = Dim;
    fn neg(self) -> Dim {
        self.scale(-1)
    }
}

impl std::ops::Sub for Dim {
    type Output = Dim;
    fn sub(self, rhs: Dim) -> Dim {
        self + (-rhs)
    }
}

impl std::ops::Mul for Dim {
    type Output = Dim;
    fn mul(self, rhs: Dim) -> Dim {
        let mut map: BTreeMap<Monomial, i64> = BTreeMap::new();
        for (ma, ca) in &self.terms {
            for (mb, cb) in &rhs.terms {
                let e = map.entry(ma.mul(mb)).or_insert(0);
                *e = e.saturating_add(ca.saturating_mul(*cb));
            }
        }
        Dim::from_terms(map)
    }
}

macro_rules! dim_ref_ops {
    ($($tr:ident $f:ident),*) => {$(
        impl std::ops::$tr<&Dim> for &Dim {
            type Output = Dim;
            fn $f(self, rhs: &Dim) -> Dim {
                std::ops::$tr::$f(self.clone(), rhs.clone())
            }
        }
        impl std::ops::$tr<i64> for Dim {
            type Output = Dim;
            fn $f(self, rhs: i64) -> Dim {
                std::ops::$tr::$f(self, Dim::constant(rhs))
            }
        }
    )*};
}
dim_ref_ops!(Add add, Sub sub, Mul mul);

impl fmt::Debug for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Dim {
    type Err = DimParseError;
    fn from_str(s: &str) -> Result<Dim, DimParseError> {
        Dim::parse(s)
    }
}

impl PartialEq<i64> for Dim {
    fn eq(&self, other: &i64) -> bool {
        self.as_const() == Some(*other)
    }
}
