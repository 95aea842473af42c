#!/usr/bin/env python3
"""Fits the polynomial of Kiln's f32 `exp` (`kiln_ir::numerics::exp_f32`).

exp(r) ~ 1 + r + r^2 q(r) on |r| <= ln2/2, q of degree 4. The fit minimizes the largest
relative error of exp(r) (Lawson's iteratively reweighted least squares on Chebyshev nodes,
which converges to the minimax fit), then rounds the coefficients to f32 and prints them as
bit patterns for `EXP_F32_POLY`.

The error of the whole function (reduction, f32 evaluation, scaling) is checked in Rust
against the correctly rounded exp: `cargo test --release -p kiln-ir -- --ignored
exp_f32_exhaustive` tries every f32 input in [-104, 89].

Usage: python3 scripts/expf_fit.py  (needs numpy and mpmath)
"""
import mpmath
import numpy as np

DEGREE = 4
NODES = 4000
# A hair wider than ln2/2: the f32 reduction's |r| can exceed it by rounding.
HALF = float(np.log(2) / 2) * 1.0005

r = np.cos(np.pi * (np.arange(NODES) + 0.5) / NODES) * HALF
# q's target, (exp(r) - 1 - r) / r^2, in high precision (cancellation near 0).
target = np.array([float((mpmath.exp(x) - 1 - x) / mpmath.mpf(x) ** 2) for x in r])
# An error e in q is an error r^2 e in exp(r), relative: r^2 e / exp(r).
weight = r**2 / np.exp(r)
basis = np.vstack([r**k for k in range(DEGREE + 1)]).T

lawson = np.full(NODES, 1.0 / NODES)
for _ in range(60):
    w = weight * np.sqrt(lawson)
    coef = np.linalg.lstsq(basis * w[:, None], target * w, rcond=None)[0]
    err = np.abs((basis @ coef - target) * weight)
    lawson = lawson * err / err.max() + 1e-12
    lawson /= lawson.sum()

print(f"largest relative error of exp(r) before rounding: {err.max():.3e}")
c32 = coef.astype(np.float32)
print("coefficients:", [float(c) for c in c32])
print("EXP_F32_POLY:", [f"0x{int(np.float32(c).view(np.uint32)):08x}" for c in c32])
