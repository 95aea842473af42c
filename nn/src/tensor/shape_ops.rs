//! Shape and layout methods: view/reshape, flatten, (un)squeeze, permute/transpose, expand,
//! repeat, cat/stack, split/chunk, narrow/slice, pad, flip.

use super::Tensor;
use kiln_ir::{Dim, Scalar, Shape};
use std::panic::Location;

impl Tensor {
    /// `reshape` with PyTorch's conveniences: at most one `-1` dim, inferred from the element
    /// count (symbolically: `[batch*seq*64]` viewed as `[-1, 64]` gives `[batch*seq, 64]`).
    #[track_caller]
    pub fn reshape(&self, shape: Shape) -> Tensor {
        let loc = Location::caller();
        let minus_one = Dim::constant(-1);
        let holes = shape.dims().iter().filter(|d| **d == minus_one).count();
        let target = match holes {
            0 => shape,
            1 => {
                let known = shape
                    .dims()
                    .iter()
                    .filter(|d| **d != minus_one)
                    .fold(Dim::constant(1), |acc, d| acc * d.clone());
                let Some(inferred) = self.shape().numel().exact_div(&known) else {
                    return self.usage(
                        loc,
                        format!(
                            "cannot infer the -1 of view {shape} for {}: {} elements are not a multiple of {known}",
                            self.ty(),
                            self.shape().numel()
                        ),
                    );
                };
                Shape(
                    shape
                        .0
                        .iter()
                        .map(|d| {
                            if *d == minus_one {
                                inferred.clone()
                            } else {
                                d.clone()
                            }
                        })
                        .collect(),
                )
            }
            _ => return self.usage(loc, format!("view {shape} has more than one -1")),
        };
        if target == self.shape() {
            return self.clone();
        }
        self.build(loc, |g| g.reshape(self.id, target))
    }

    /// Same as [`Tensor::reshape`] (every IR view is free until the compiler decides).
    #[track_caller]
    pub fn view(&self, shape: Shape) -> Tensor {
        self.reshape(shape)
    }

    /// Merges axes `start..=end` into one.
    #[track_caller]
    pub fn flatten(&self, start: isize, end: isize) -> Tensor {
        let loc = Location::caller();
        let (Some(s), Some(e)) = (self.axis(start, loc), self.axis(end, loc)) else {
            return self.tracer.placeholder();
        };
        if s > e {
            return self.usage(loc, format!("flatten start {start} is after end {end}"));
        }
        let dims = self.shape().0;
        let merged = dims[s..=e]
            .iter()
            .fold(Dim::constant(1), |acc, d| acc * d.clone());
        let mut out: Vec<Dim> = dims[..s].to_vec();
        out.push(merged);
        out.extend_from_slice(&dims[e + 1..]);
        self.reshape(Shape(out))
    }

    /// Inserts a size-1 axis at `dim` (`-1` appends).
    #[track_caller]
    pub fn unsqueeze(&self, dim: isize) -> Tensor {
        let loc = Location::caller();
        let Some(at) = super::resolve_axis(dim, self.rank() + 1) else {
            return self.usage(
                loc,
                format!("unsqueeze dim {dim} is out of range for {}", self.ty()),
            );
        };
        let mut dims = self.shape().0;
        dims.insert(at, Dim::constant(1));
        self.build(loc, |g| g.reshape(self.id, Shape(dims)))
    }

    /// Removes axis `dim`, which must have size 1.
    #[track_caller]
    pub fn squeeze(&self, dim: isize) -> Tensor {
        let loc = Location::caller();
        let Some(a) = self.axis(dim, loc) else {
            return self.tracer.placeholder();
        };
        let mut dims = self.shape().0;
        if dims[a] != 1 {
            return self.usage(
                loc,
                format!(
                    "cannot squeeze dim {dim} of {}: its size is not 1",
                    self.ty()
                ),
            );
        }
        dims.remove(a);
        self.build(loc, |g| g.reshape(self.id, Shape(dims)))
    }

    /// Reorders axes: output axis `i` is input axis `dims[i]`.
    #[track_caller]
    pub fn permute(&self, dims: &[isize]) -> Tensor {
        let loc = Location::caller();
        let mut perm = Vec::with_capacity(dims.len());
        for &d in dims {
            match self.axis(d, loc) {
                Some(a) => perm.push(a),
                None => return self.tracer.placeholder(),
            }
        }
        self.build(loc, |g| g.permute(self.id, &perm))
    }

    /// Swaps two axes.
    #[track_caller]
    pub fn transpose(&self, dim0: isize, dim1: isize) -> Tensor {
        let loc = Location::caller();
        let (Some(a), Some(b)) = (self.axis(dim0, loc), self.axis(dim1, loc)) else {
            return self.tracer.placeholder();
        };
        if a == b {
            return self.clone();
        }
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.build(loc, |g| g.permute(self.id, &perm))
    }

    /// Broadcasts to `shape`; a `-1` keeps that axis's size.
    #[track_caller]
    pub fn expand(&self, shape: Shape) -> Tensor {
        let loc = Location::caller();
        let own = self.shape();
        let offset = shape.rank().saturating_sub(own.rank());
        let dims = shape
            .0
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if *d == -1 && i >= offset {
                    own[i - offset].clone()
                } else {
                    d.clone()
                }
            })
            .collect();
        let target = Shape(dims);
        if target == own {
            return self.clone();
        }
        self.build(loc, |g| g.broadcast_to(self.id, &target))
    }

    /// Tiles the tensor `repeats[i]` times along each axis (`torch.Tensor.repeat`).
    #[track_caller]
    pub fn repeat(&self, repeats: &[usize]) -> Tensor {
        let loc = Location::caller();
        if repeats.len() < self.rank() {
            return self.usage(
                loc,
                format!(
                    "repeat needs at least {} counts for {}",
                    self.rank(),
                    self.ty()
                ),
            );
        }
        // Align ranks, then expand a new axis before each one and merge the pairs.
        let lead = repeats.len() - self.rank();
        let mut dims: Vec<Dim> = vec![Dim::constant(1); lead];
        dims.extend(self.shape().0);
        let x = self.reshape(Shape(dims.clone()));
        let mut with_ones = Vec::new();
        let mut expanded = Vec::new();
        let mut merged = Vec::new();
        for (d, &r) in dims.iter().zip(repeats) {
            with_ones.extend([Dim::constant(1), d.clone()]);
            expanded.extend([Dim::from(r), d.clone()]);
            merged.push(Dim::from(r) * d.clone());
        }
        x.reshape(Shape(with_ones))
            .expand(Shape(expanded))
            .reshape(Shape(merged))
    }

    /// Joins tensors along `dim` (`torch.cat`).
    #[track_caller]
    pub fn cat(tensors: &[Tensor], dim: isize) -> Tensor {
        let loc = Location::caller();
        let Some(first) = tensors.first() else {
            let tracer = crate::trace::Tracer::current();
            return match tracer {
                Some(t) => {
                    t.record(
                        loc,
                        crate::trace::TraceErrorKind::Usage("cat of no tensors".into()),
                    );
                    t.placeholder()
                }
                None => panic!("Tensor::cat of no tensors outside a trace"),
            };
        };
        let Some(axis) = first.axis(dim, loc) else {
            return first.tracer.placeholder();
        };
        let mut ids = Vec::with_capacity(tensors.len());
        for t in tensors {
            match first.same_trace(t, loc) {
                Some(id) => ids.push(id),
                None => return first.tracer.placeholder(),
            }
        }
        if ids.len() == 1 {
            return first.clone();
        }
        first.build(loc, |g| g.concat(&ids, axis))
    }

    /// Stacks tensors along a new axis `dim` (`torch.stack`).
    #[track_caller]
    pub fn stack(tensors: &[Tensor], dim: isize) -> Tensor {
        let loc = Location::caller();
        let expanded: Vec<Tensor> = tensors
            .iter()
            .map(|t| {
                let Some(at) = super::resolve_axis(dim, t.rank() + 1) else {
                    return t.usage(
                        loc,
                        format!("stack dim {dim} is out of range for {}", t.ty()),
                    );
                };
                let mut dims = t.shape().0;
                dims.insert(at, Dim::constant(1));
                t.build(loc, |g| g.reshape(t.id, Shape(dims)))
            })
            .collect();
        let first_rank = tensors.first().map_or(0, |t| t.rank() + 1);
        let axis = super::resolve_axis(dim, first_rank).map_or(dim, |a| a as isize);
        Tensor::cat(&expanded, axis)
    }

    /// `x[.., start:end:step, ..]` along `dim`.
    #[track_caller]
    pub fn slice(
        &self,
        dim: isize,
        start: impl Into<Dim>,
        end: impl Into<Dim>,
        step: i64,
    ) -> Tensor {
        let loc = Location::caller();
        let Some(a) = self.axis(dim, loc) else {
            return self.tracer.placeholder();
        };
        let (start, end) = (start.into(), end.into());
        if start == 0 && end == self.shape()[a] && step == 1 {
            return self.clone();
        }
        self.build(loc, |g| g.slice(self.id, a, start, end, step))
    }

    /// `length` elements from `start` along `dim` (`torch.narrow`).
    #[track_caller]
    pub fn narrow(&self, dim: isize, start: impl Into<Dim>, length: impl Into<Dim>) -> Tensor {
        let start = start.into();
        let end = start.clone() + length.into();
        self.slice(dim, start, end, 1)
    }

    /// Splits into pieces of `size` along `dim`; the last may be smaller (`torch.split`).
    /// The axis must have a constant size.
    #[track_caller]
    pub fn split(&self, size: usize, dim: isize) -> Vec<Tensor> {
        let loc = Location::caller();
        let Some(a) = self.axis(dim, loc) else {
            return vec![self.tracer.placeholder()];
        };
        let Some(total) = self.shape()[a].as_const() else {
            return vec![self.usage(
                loc,
                format!(
                    "split needs a constant size on dim {dim}, {} has a symbolic one",
                    self.ty()
                ),
            )];
        };
        if size == 0 {
            return vec![self.usage(loc, "split size must be at least 1".into())];
        }
        let size = size as i64;
        (0..total)
            .step_by(size as usize)
            .map(|s| self.slice(a as isize, s, (s + size).min(total), 1))
            .collect()
    }

    /// Splits into pieces of the given sizes along `dim` (`torch.split` with a list).
    #[track_caller]
    pub fn split_sizes(&self, sizes: &[Dim], dim: isize) -> Vec<Tensor> {
        let loc = Location::caller();
        let Some(a) = self.axis(dim, loc) else {
            return vec![self.tracer.placeholder()];
        };
        let total = sizes
            .iter()
            .fold(Dim::constant(0), |acc, d| acc + d.clone());
        if total != self.shape()[a] {
            return vec![self.usage(
                loc,
                format!(
                    "split sizes add up to {total}, dim {dim} of {} has {}",
                    self.ty(),
                    self.shape()[a]
                ),
            )];
        }
        let mut start = Dim::constant(0);
        let mut out = Vec::with_capacity(sizes.len());
        for s in sizes {
            let end = start.clone() + s.clone();
            out.push(self.slice(a as isize, start.clone(), end.clone(), 1));
            start = end;
        }
        out
    }

    /// Splits into `chunks` pieces along `dim` (`torch.chunk`): each `ceil(size / chunks)`.
    #[track_caller]
    pub fn chunk(&self, chunks: usize, dim: isize) -> Vec<Tensor> {
        let loc = Location::caller();
        let Some(a) = self.axis(dim, loc) else {
            return vec![self.tracer.placeholder()];
        };
        if chunks == 0 {
            return vec![self.usage(loc, "chunk count must be at least 1".into())];
        }
        let size = &self.shape()[a];
        if let Some(total) = size.as_const() {
            let each = (total as usize).div_ceil(chunks).max(1);
            return self.split(each, a as isize);
        }
        // A symbolic size must divide evenly.
        match size.exact_div(&Dim::from(chunks)) {
            Some(each) => self.split_sizes(&vec![each; chunks], a as isize),
            None => vec![self.usage(
                loc,
                format!("cannot chunk symbolic dim {size} into {chunks} equal pieces"),
            )],
        }
    }

    /// Pads the last axes: `pads` lists `(before, after)` from the last axis backwards, as
    /// `torch.nn.functional.pad` does, filling with `value`.
    #[track_caller]
    pub fn pad(&self, pads: &[(Dim, Dim)], value: f64) -> Tensor {
        let loc = Location::caller();
        if pads.len() > self.rank() {
            return self.usage(
                loc,
                format!("{} padding pairs for {}", pads.len(), self.ty()),
            );
        }
        let mut all = vec![(Dim::constant(0), Dim::constant(0)); self.rank()];
        for (i, p) in pads.iter().enumerate() {
            all[self.rank() - 1 - i] = p.clone();
        }
        let v = super::axes::Scalarish::to_scalar(value, self.dtype());
        self.build(loc, |g| g.pad(self.id, all, v))
    }

    /// Reverses the order along `dims`.
    #[track_caller]
    pub fn flip(&self, dims: &[isize]) -> Tensor {
        let loc = Location::caller();
        match self.axes(dims, loc) {
            Some(axes) => self.build(loc, |g| g.flip(self.id, &axes)),
            None => self.tracer.placeholder(),
        }
    }

    /// A tensor of this one's shape and dtype filled with `value`.
    #[track_caller]
    pub fn full_like(&self, value: impl super::axes::Scalarish) -> Tensor {
        let loc = Location::caller();
        let dtype = self.dtype();
        let v: Scalar = value.to_scalar(dtype);
        // The shape is read before `build` borrows the graph mutably.
        let shape = self.shape();
        self.build(loc, |g| g.full(v, dtype, shape))
    }
}
