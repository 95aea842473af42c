//! Indexing: index_select, gather, scatter, and the KV-cache write (slice_update).

use super::Tensor;
use kiln_ir::{Dim, ScatterReduce};
use std::panic::Location;

impl Tensor {
    /// Entries along `dim` picked by the rank-1 integer tensor `index` (`torch.index_select`).
    #[track_caller]
    pub fn index_select(&self, dim: isize, index: &Tensor) -> Tensor {
        let loc = Location::caller();
        let op = "index_select";
        let (Some(a), Some(i)) = (self.axis(op, dim, loc), self.same_trace(op, index, loc)) else {
            return self.tracer.placeholder();
        };
        self.build(loc, |g| g.index_select(self.id, a, i))
    }

    /// `torch.gather(self, dim, index)`.
    #[track_caller]
    pub fn gather(&self, dim: isize, index: &Tensor) -> Tensor {
        let loc = Location::caller();
        let op = "gather";
        let (Some(a), Some(i)) = (self.axis(op, dim, loc), self.same_trace(op, index, loc)) else {
            return self.tracer.placeholder();
        };
        self.build(loc, |g| g.gather(self.id, a, i))
    }

    /// `torch.scatter(self, dim, index, src)`: a copy of `self` with `src` written at `index`.
    #[track_caller]
    pub fn scatter(&self, dim: isize, index: &Tensor, src: &Tensor) -> Tensor {
        self.scatter_with(dim, index, src, ScatterReduce::Assign, Location::caller())
    }

    /// `torch.scatter_add(self, dim, index, src)`.
    #[track_caller]
    pub fn scatter_add(&self, dim: isize, index: &Tensor, src: &Tensor) -> Tensor {
        self.scatter_with(dim, index, src, ScatterReduce::Add, Location::caller())
    }

    fn scatter_with(
        &self,
        dim: isize,
        index: &Tensor,
        src: &Tensor,
        reduce: ScatterReduce,
        loc: &Location<'_>,
    ) -> Tensor {
        let op = match reduce {
            ScatterReduce::Add => "scatter_add",
            _ => "scatter",
        };
        let a = self.axis(op, dim, loc);
        let (i, s) = (
            self.same_trace(op, index, loc),
            self.same_trace(op, src, loc),
        );
        let (Some(a), Some(i), Some(s)) = (a, i, s) else {
            return self.tracer.placeholder();
        };
        self.build(loc, |g| g.scatter(self.id, a, i, s, reduce))
    }

    /// A copy of `self` with `src` written at offset `start` along `dim` (the other dims must
    /// match): the KV-cache write, `cache[:, :, past:past+seq] = new`.
    #[track_caller]
    pub fn slice_update(&self, dim: isize, start: impl Into<Dim>, src: &Tensor) -> Tensor {
        let loc = Location::caller();
        let op = "slice_update";
        let (Some(a), Some(s)) = (self.axis(op, dim, loc), self.same_trace(op, src, loc)) else {
            return self.tracer.placeholder();
        };
        let start = start.into();
        self.build(loc, |g| g.slice_update(self.id, s, a, start))
    }
}
