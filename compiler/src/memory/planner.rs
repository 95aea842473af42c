//! The slot-assignment planner (see the module documentation of [`super`]).

use super::{
    AppliedInPlace, BufferId, BufferKind, InPlaceRejection, Lifetime, MemoryPlan, MemoryProblem,
    Placement, PlanError, PlannedBuffer, RejectedInPlace, Slot,
};
use kiln_ir::Dim;
use std::collections::{BTreeMap, HashMap};

/// Plans the arena for `problem`.
///
/// Fails on a malformed problem (duplicate or unknown buffer ids, bad alignments, an
/// intermediate read before it is written, a write to an input or a parameter). Illegal
/// in-place hints are not errors: they are ignored and listed in
/// [`MemoryPlan::rejected_in_place`].
pub fn plan(problem: &MemoryProblem) -> Result<MemoryPlan, PlanError> {
    let buffers = &problem.buffers;
    let index = index_table(problem)?;
    let lifetimes = lifetimes(problem, &index)?;
    let (in_place_of, applied, rejected) = check_hints(problem, &index, &lifetimes);

    // Arena buffers in order of first use, ties by table order.
    let mut order: Vec<usize> = (0..buffers.len())
        .filter(|&i| buffers[i].kind == BufferKind::Intermediate && lifetimes[i].is_some())
        .collect();
    order.sort_by_key(|&i| (lifetimes[i].map(|l| l.first), i));

    let mut slots: Vec<Building> = Vec::new();
    let mut slot_of: HashMap<usize, usize> = HashMap::new();
    for &b in &order {
        let decl = &buffers[b];
        let life = lifetimes[b].expect("arena buffers have lifetimes");
        let slot = match in_place_of.get(&b) {
            Some(input) => slot_of[input],
            None => match choose_slot(&slots, &decl.size, life.first) {
                Some(s) => s,
                None => {
                    slots.push(Building::default());
                    slots.len() - 1
                }
            },
        };
        let s = &mut slots[slot];
        add_candidate(&mut s.candidates, &decl.size);
        s.align = s.align.max(decl.align);
        s.busy_until = Some(s.busy_until.map_or(life.last, |u| u.max(life.last)));
        s.members.push(decl.id);
        slot_of.insert(b, slot);
    }

    // Layout: by decreasing alignment (stable), offsets are prefix sums of padded sizes.
    let mut layout: Vec<usize> = (0..slots.len()).collect();
    layout.sort_by_key(|&s| std::cmp::Reverse(slots[s].align));
    let mut position = vec![0; slots.len()];
    let mut offset = Dim::constant(0);
    let mut out_slots = Vec::with_capacity(slots.len());
    for (pos, &s) in layout.iter().enumerate() {
        position[s] = pos;
        let b = &slots[s];
        let size = maximum(&b.candidates);
        // Rounding is monotone, so rounding each candidate gives the same value as rounding
        // the maximum, with simpler expressions (`256*seq` rounds to itself).
        let mut padded = Vec::new();
        for c in &b.candidates {
            add_candidate(&mut padded, &round_up(c, b.align));
        }
        let padded_size = maximum(&padded);
        out_slots.push(Slot {
            size,
            padded_size: padded_size.clone(),
            align: b.align,
            offset: offset.clone(),
            buffers: b.members.clone(),
        });
        offset = offset + padded_size;
    }

    let planned = buffers
        .iter()
        .enumerate()
        .map(|(i, decl)| {
            let placement = if decl.kind != BufferKind::Intermediate {
                Placement::External
            } else if let Some(&s) = slot_of.get(&i) {
                Placement::Arena {
                    slot: position[s],
                    offset: out_slots[position[s]].offset.clone(),
                }
            } else {
                Placement::Unused
            };
            PlannedBuffer {
                decl: decl.clone(),
                lifetime: lifetimes[i],
                placement,
            }
        })
        .collect();

    Ok(MemoryPlan {
        buffers: planned,
        slots: out_slots,
        arena_size: offset,
        steps: problem.steps.iter().map(|s| s.name.clone()).collect(),
        applied,
        rejected,
    })
}

/// The `maximum` of a non-empty candidate set.
fn maximum(candidates: &[Dim]) -> Dim {
    candidates
        .iter()
        .skip(1)
        .fold(candidates[0].clone(), |acc, c| acc.maximum(c))
}

/// A slot while buffers are being assigned.
#[derive(Default)]
struct Building {
    /// Pairwise incomparable sizes whose `maximum` is the slot size; sorted.
    candidates: Vec<Dim>,
    align: u64,
    /// Last step any member is live; `None` while empty.
    busy_until: Option<usize>,
    members: Vec<BufferId>,
}

/// `a - b` if it is a constant.
fn const_diff(a: &Dim, b: &Dim) -> Option<i64> {
    (a - b).as_const()
}

/// True if `a >= b` is provable for every binding of non-negative symbols.
fn provably_ge(a: &Dim, b: &Dim) -> bool {
    provably_nonneg(&(a - b), 16)
}

/// True if `d >= 0` is provable for every binding of non-negative symbols: a constant is
/// checked directly; otherwise `d` is split as `q*s + r` over one of its symbols `s`, with
/// `r = d[s := 0]` and `q = (d - r) / s` an exact polynomial quotient, and both parts must be
/// provably non-negative. Terms with `//`, `%`, `min` or `max` of `s` defeat the split, so
/// they are provable only where they cancel or sit in a constant difference.
fn provably_nonneg(d: &Dim, depth: u32) -> bool {
    if let Some(c) = d.as_const() {
        return c >= 0;
    }
    if depth == 0 {
        return false;
    }
    for s in d.symbols() {
        let zero = BTreeMap::from([(s.clone(), Dim::constant(0))]);
        let r = d.substitute(&zero);
        if &r == d {
            continue;
        }
        if let Some(q) = (d - &r).exact_div(&Dim::symbol(&s)) {
            return provably_nonneg(&q, depth - 1) && provably_nonneg(&r, depth - 1);
        }
    }
    false
}

/// Adds `size` to a slot's candidate set, dropping candidates it provably covers.
fn add_candidate(candidates: &mut Vec<Dim>, size: &Dim) {
    if candidates.iter().any(|c| provably_ge(c, size)) {
        return;
    }
    candidates.retain(|c| !provably_ge(size, c));
    candidates.push(size.clone());
    candidates.sort();
}

/// The best free slot for a buffer of `size` first used at step `first`, if any is free.
fn choose_slot(slots: &[Building], size: &Dim, first: usize) -> Option<usize> {
    let symbols = size.symbols();
    slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.busy_until.is_none_or(|u| u < first))
        .map(|(i, s)| {
            let cands = &s.candidates;
            // Least constant slack among candidates that cover `size`.
            let slack = cands
                .iter()
                .filter_map(|c| const_diff(c, size).filter(|&d| d >= 0))
                .min();
            let covers = cands.iter().any(|c| provably_ge(c, size));
            // Growth if `size` exceeds every candidate by a constant.
            let growth = cands
                .iter()
                .map(|c| const_diff(size, c).filter(|&d| d > 0))
                .collect::<Option<Vec<i64>>>()
                .and_then(|g| g.into_iter().min());
            let exceeds = cands.iter().all(|c| provably_ge(size, c));
            let score = match (slack, covers, growth, exceeds) {
                (Some(k), ..) => (0, k),
                (None, true, ..) => (1, 0),
                (None, false, Some(g), _) => (2, g),
                (None, false, None, true) => (3, 0),
                (None, false, None, false) => {
                    let mut slot_symbols: Vec<String> =
                        cands.iter().flat_map(|c| c.symbols()).collect();
                    slot_symbols.sort();
                    slot_symbols.dedup();
                    (4, i64::from(slot_symbols != symbols))
                }
            };
            (score, i)
        })
        .min()
        .map(|(_, i)| i)
}

/// `d` rounded up to a multiple of `align` (a power of two).
fn round_up(d: &Dim, align: u64) -> Dim {
    if align <= 1 {
        return d.clone();
    }
    let a = i64::try_from(align).unwrap_or(i64::MAX);
    (d.clone() + (a - 1)).floor_div(&Dim::constant(a)) * a
}

fn index_table(problem: &MemoryProblem) -> Result<HashMap<BufferId, usize>, PlanError> {
    let mut index: HashMap<BufferId, usize> = HashMap::new();
    for (i, b) in problem.buffers.iter().enumerate() {
        if !b.align.is_power_of_two() {
            return Err(PlanError::BadAlignment {
                buffer: b.name.clone(),
                align: b.align,
            });
        }
        if let Some(&prev) = index.get(&b.id) {
            return Err(PlanError::DuplicateBuffer {
                id: b.id.0,
                first: problem.buffers[prev].name.clone(),
                second: b.name.clone(),
            });
        }
        index.insert(b.id, i);
    }
    Ok(index)
}

/// Every buffer's lifetime (first write or use to last use), checking the steps.
fn lifetimes(
    problem: &MemoryProblem,
    index: &HashMap<BufferId, usize>,
) -> Result<Vec<Option<Lifetime>>, PlanError> {
    let mut lifetimes: Vec<Option<Lifetime>> = vec![None; problem.buffers.len()];
    let mut written = vec![false; problem.buffers.len()];
    for (t, step) in problem.steps.iter().enumerate() {
        let lookup = |id: BufferId| {
            index.get(&id).copied().ok_or(PlanError::UnknownBuffer {
                step: t,
                step_name: step.name.clone(),
                id: id.0,
            })
        };
        for h in &step.in_place {
            lookup(h.input)?;
            lookup(h.output)?;
        }
        for &id in &step.writes {
            let b = lookup(id)?;
            let decl = &problem.buffers[b];
            if decl.kind.is_read_only() {
                return Err(PlanError::WriteToReadOnly {
                    step: t,
                    step_name: step.name.clone(),
                    buffer: decl.name.clone(),
                    kind: decl.kind.name(),
                });
            }
            written[b] = true;
        }
        for &id in step.reads.iter().chain(&step.writes) {
            let b = lookup(id)?;
            let decl = &problem.buffers[b];
            if decl.kind == BufferKind::Intermediate && !written[b] {
                return Err(PlanError::ReadBeforeWrite {
                    step: t,
                    step_name: step.name.clone(),
                    buffer: decl.name.clone(),
                });
            }
            let life = lifetimes[b].get_or_insert(Lifetime { first: t, last: t });
            life.last = t;
        }
    }
    Ok(lifetimes)
}

type HintResult = (
    HashMap<usize, usize>,
    Vec<AppliedInPlace>,
    Vec<RejectedInPlace>,
);

/// Sorts the in-place hints into legal (output table index -> input table index) and rejected.
fn check_hints(
    problem: &MemoryProblem,
    index: &HashMap<BufferId, usize>,
    lifetimes: &[Option<Lifetime>],
) -> HintResult {
    let mut in_place_of = HashMap::new();
    let mut taken_inputs = HashMap::new();
    let mut applied = Vec::new();
    let mut rejected = Vec::new();
    for (t, step) in problem.steps.iter().enumerate() {
        for &hint in &step.in_place {
            let (o, i) = (index[&hint.output], index[&hint.input]);
            let (od, id) = (&problem.buffers[o], &problem.buffers[i]);
            let reason = if o == i
                || !step.writes.contains(&hint.output)
                || !step.reads.contains(&hint.input)
                || step.writes.contains(&hint.input)
            {
                Some(InPlaceRejection::NotOperands)
            } else if od.kind != BufferKind::Intermediate || id.kind != BufferKind::Intermediate {
                Some(InPlaceRejection::NotIntermediate)
            } else if od.size != id.size {
                Some(InPlaceRejection::SizeMismatch)
            } else if lifetimes[i].is_some_and(|l| l.last != t) {
                Some(InPlaceRejection::InputLiveAfter)
            } else if lifetimes[o].is_some_and(|l| l.first != t) {
                Some(InPlaceRejection::OutputLiveBefore)
            } else if taken_inputs.contains_key(&i) {
                Some(InPlaceRejection::InputAlreadyReused)
            } else if in_place_of.contains_key(&o) {
                Some(InPlaceRejection::OutputAlreadyPlaced)
            } else {
                None
            };
            match reason {
                Some(reason) => rejected.push(RejectedInPlace {
                    step: t,
                    hint,
                    reason,
                }),
                None => {
                    in_place_of.insert(o, i);
                    taken_inputs.insert(i, o);
                    applied.push(AppliedInPlace { step: t, hint });
                }
            }
        }
    }
    (in_place_of, applied, rejected)
}
