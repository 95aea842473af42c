//! The memory planner: property tests over random launch lists with symbolic sizes (no two live
//! buffers overlap, in-place sharing only where legal, bounds on peak and arena bytes), a
//! snapshot of the report, and the checks on malformed problems.

use kiln_compiler::memory::{
    plan, BufferDecl, BufferId, BufferKind, InPlaceRejection, Lifetime, MemoryPlan, MemoryProblem,
    Placement, PlanError, PlanEvalError, Step,
};
use kiln_ir::{Bindings, Dim};
use proptest::prelude::*;
use std::collections::HashMap;

fn d(s: &str) -> Dim {
    s.parse().unwrap()
}

/// The bindings every random plan is evaluated under.
fn bindings() -> Vec<Bindings> {
    [(1, 0), (1, 4095), (7, 33), (128, 1000), (3, 5), (0, 0)]
        .iter()
        .map(|&(seq, past)| Bindings::new().with("seq", seq).with("past", past))
        .collect()
}

/// A pool of sizes: small, so that equal sizes (in-place candidates) and sizes that differ by a
/// constant are common, with incomparable ones mixed in.
const SIZES: [&str; 13] = [
    "256",
    "260",
    "4*seq",
    "4*seq + 16",
    "4*past",
    "4*seq + 4*past",
    "2*seq*past",
    "4*min(seq, 64)",
    "(seq + 3) // 4 * 18",
    "0",
    "seq*seq + 4*past",
    "4*seq*min(seq, 64)",
    "256*seq",
];
const ALIGNS: [u64; 4] = [1, 4, 16, 64];

/// Recipe for one step of a random problem.
#[derive(Clone, Debug)]
struct StepSpec {
    /// How many new intermediates the step writes (0 writes only the output/state).
    new: usize,
    /// Which earlier intermediates it reads (bit i: the i-th most recent).
    reads: u16,
    /// Reads the input, the param and the state.
    read_external: bool,
    /// Writes the state (a KV cache update).
    write_state: bool,
    /// In-place hint: (index into writes, index into intermediate reads), if any.
    hint: Option<(usize, usize)>,
}

fn step_spec() -> impl Strategy<Value = StepSpec> {
    (
        0usize..=2,
        any::<u16>(),
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::option::weighted(0.6, (0usize..2, 0usize..4)),
    )
        .prop_map(|(new, reads, read_external, write_state, hint)| StepSpec {
            new,
            reads,
            read_external,
            write_state,
            hint,
        })
}

/// Ids of the external buffers in every random problem.
const INPUT: usize = 1000;
const PARAM: usize = 1001;
const STATE: usize = 1002;
const OUTPUT: usize = 1003;
const UNUSED: usize = 1004;

/// Builds a problem from step recipes and (size, align) choices for the intermediates.
fn build(specs: &[StepSpec], sizes: &[(usize, usize)]) -> MemoryProblem {
    let mut buffers = vec![
        BufferDecl::new(INPUT, "x", d("4*seq"), BufferKind::Input, 16),
        BufferDecl::new(PARAM, "w", 4096, BufferKind::Param, 64),
        BufferDecl::new(STATE, "kv", d("4*(past + seq)"), BufferKind::State, 64),
        BufferDecl::new(OUTPUT, "y", d("4*seq"), BufferKind::Output, 16),
        BufferDecl::new(UNUSED, "never", 128, BufferKind::Intermediate, 4),
    ];
    let mut written: Vec<usize> = Vec::new();
    let mut next_id = 0;
    let mut steps = Vec::new();
    for (t, spec) in specs.iter().enumerate() {
        let mut reads: Vec<usize> = written
            .iter()
            .rev()
            .enumerate()
            .filter(|(i, _)| *i < 16 && spec.reads & (1 << i) != 0)
            .map(|(_, &b)| b)
            .collect();
        let intermediate_reads = reads.clone();
        if spec.read_external {
            reads.extend([INPUT, PARAM, STATE]);
        }
        let mut writes = Vec::new();
        for _ in 0..spec.new {
            let id = next_id;
            next_id += 1;
            let (size, align) = sizes[id % sizes.len()];
            buffers.push(BufferDecl::new(
                id,
                format!("t{id}"),
                d(SIZES[size]),
                BufferKind::Intermediate,
                ALIGNS[align],
            ));
            writes.push(id);
        }
        if spec.write_state {
            writes.push(STATE);
        }
        let mut step = Step::new(format!("k{t}"), reads, writes.clone());
        if let Some((w, r)) = spec.hint {
            if let (Some(&o), Some(&i)) = (writes.get(w), intermediate_reads.get(r)) {
                step = step.with_in_place(o, i);
            }
        }
        written.extend(writes.iter().filter(|&&b| b != STATE));
        steps.push(step);
    }
    // The last step produces the output from the most recent intermediate.
    steps.push(Step::new(
        "out",
        written.last().copied().into_iter().collect::<Vec<_>>(),
        [OUTPUT],
    ));
    MemoryProblem { buffers, steps }
}

/// Lifetimes computed directly from the steps, independently of the planner.
fn lifetimes(problem: &MemoryProblem) -> HashMap<BufferId, Lifetime> {
    let mut out: HashMap<BufferId, Lifetime> = HashMap::new();
    for (t, s) in problem.steps.iter().enumerate() {
        for &id in s.reads.iter().chain(&s.writes) {
            out.entry(id)
                .and_modify(|l| l.last = t)
                .or_insert(Lifetime { first: t, last: t });
        }
    }
    out
}

fn round_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Every property a plan must have, checked under `b`.
fn check_plan(problem: &MemoryProblem, plan: &MemoryPlan, b: &Bindings) {
    let lifetimes = lifetimes(problem);
    let resolved = plan.resolve(b).unwrap();
    let arena = resolved.arena_bytes;
    let peak = plan.peak_bytes(b).unwrap();
    assert_eq!(arena, plan.arena_bytes(b).unwrap());

    // Placement by kind; lifetimes as computed directly.
    for pb in plan.buffers() {
        let id = pb.decl.id;
        assert_eq!(pb.lifetime, lifetimes.get(&id).copied(), "{}", pb.decl.name);
        match pb.decl.kind {
            BufferKind::Intermediate if lifetimes.contains_key(&id) => {
                assert!(matches!(pb.placement, Placement::Arena { .. }))
            }
            BufferKind::Intermediate => assert_eq!(pb.placement, Placement::Unused),
            _ => {
                assert_eq!(pb.placement, Placement::External);
                assert!(plan.offset(id).is_none());
            }
        }
    }

    let decl = |id: BufferId| &plan.buffer(id).unwrap().decl;
    let in_place_pair = |a: BufferId, c: BufferId| {
        plan.in_place().iter().any(|p| {
            (p.hint.input, p.hint.output) == (a, c) || (p.hint.input, p.hint.output) == (c, a)
        })
    };

    // Alignment and bounds.
    for &(id, off, size) in &resolved.arena_buffers {
        assert_eq!(off % decl(id).align, 0, "{} misaligned", decl(id).name);
        assert!(off + size <= arena, "{} past the arena", decl(id).name);
    }
    // No two buffers live at once share bytes, unless they are a legal in-place pair.
    for (i, &(a, oa, sa)) in resolved.arena_buffers.iter().enumerate() {
        for &(c, oc, sc) in &resolved.arena_buffers[i + 1..] {
            if !lifetimes[&a].overlaps(&lifetimes[&c]) {
                continue;
            }
            let disjoint = oa + sa <= oc || oc + sc <= oa;
            if !disjoint {
                assert!(
                    in_place_pair(a, c),
                    "{} [{oa}, {}) and {} [{oc}, {}) are live together and overlap",
                    decl(a).name,
                    oa + sa,
                    decl(c).name,
                    oc + sc
                );
            }
        }
    }
    // Every applied in-place pair is legal and shares storage.
    for p in plan.in_place() {
        let step = &problem.steps[p.step];
        let (o, i) = (p.hint.output, p.hint.input);
        assert!(step.in_place.contains(&p.hint));
        assert!(step.writes.contains(&o) && step.reads.contains(&i) && !step.writes.contains(&i));
        assert_eq!(decl(o).kind, BufferKind::Intermediate);
        assert_eq!(decl(i).kind, BufferKind::Intermediate);
        assert_eq!(decl(o).size, decl(i).size);
        assert_eq!(lifetimes[&i].last, p.step, "input live after the step");
        assert_eq!(lifetimes[&o].first, p.step, "output live before the step");
        assert_eq!(plan.offset(o), plan.offset(i));
    }
    // Every input is taken at most once.
    let mut inputs: Vec<BufferId> = plan.in_place().iter().map(|p| p.hint.input).collect();
    inputs.sort();
    inputs.dedup();
    assert_eq!(inputs.len(), plan.in_place().len());

    // Slots cover their members.
    for s in plan.slots() {
        let size = s.size.eval(b).unwrap();
        for &m in &s.buffers {
            assert!(decl(m).size.eval(b).unwrap() <= size);
        }
    }

    // Bounds: peak <= arena <= no sharing at all; peak <= the sum of the sizes.
    let max_align = resolved
        .arena_buffers
        .iter()
        .map(|&(id, _, _)| decl(id).align)
        .max()
        .unwrap_or(1);
    let sum: u64 = resolved.arena_buffers.iter().map(|t| t.2).sum();
    let sum_padded: u64 = resolved
        .arena_buffers
        .iter()
        .map(|t| round_up(t.2, max_align))
        .sum();
    assert!(peak <= sum);
    assert!(peak <= arena, "peak {peak} > arena {arena}");
    assert!(arena <= sum_padded, "arena {arena} > unshared {sum_padded}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_plans_are_sound(
        specs in prop::collection::vec(step_spec(), 1..16),
        sizes in prop::collection::vec((0..SIZES.len(), 0..ALIGNS.len()), 1..8),
    ) {
        let problem = build(&specs, &sizes);
        let plan = plan(&problem).unwrap();
        for b in bindings() {
            check_plan(&problem, &plan, &b);
        }
    }

    /// A chain where every buffer stays live until a final step reads them all: nothing can be
    /// shared, so the peak is the sum of the sizes and every buffer has its own slot.
    #[test]
    fn nothing_shared_when_all_live(sizes in prop::collection::vec((0..SIZES.len(), 0..ALIGNS.len()), 1..10)) {
        let n = sizes.len();
        let mut buffers = Vec::new();
        let mut steps = Vec::new();
        for (i, &(s, a)) in sizes.iter().enumerate() {
            buffers.push(BufferDecl::new(i, format!("t{i}"), d(SIZES[s]), BufferKind::Intermediate, ALIGNS[a]));
            let reads: Vec<usize> = if i == 0 { vec![] } else { vec![i - 1] };
            steps.push(Step::new(format!("k{i}"), reads, [i]));
        }
        buffers.push(BufferDecl::new(n, "y", 4, BufferKind::Output, 4));
        steps.push(Step::new("sum", 0..n, [n]));
        let problem = MemoryProblem { buffers, steps };
        let plan = plan(&problem).unwrap();
        prop_assert_eq!(plan.slots().len(), n);
        for b in bindings() {
            check_plan(&problem, &plan, &b);
            let sizes: Vec<(u64, u64)> = problem.buffers[..n]
                .iter()
                .map(|d| (d.size.eval(&b).unwrap() as u64, d.align))
                .collect();
            prop_assert_eq!(plan.peak_bytes(&b).unwrap(), sizes.iter().map(|s| s.0).sum::<u64>());
            prop_assert_eq!(
                plan.arena_bytes(&b).unwrap(),
                sizes.iter().map(|&(s, a)| round_up(s, a)).sum::<u64>()
            );
        }
    }

    /// A chain of elementwise ops of one size, each allowed in place: one slot for all.
    #[test]
    fn in_place_chain_uses_one_slot(n in 1usize..12, size in 0..SIZES.len()) {
        let mut buffers = vec![BufferDecl::new(100, "x", d(SIZES[size]), BufferKind::Input, 16)];
        let mut steps = vec![Step::new("k0", [100], [0])];
        buffers.push(BufferDecl::new(0, "t0", d(SIZES[size]), BufferKind::Intermediate, 16));
        for i in 1..n {
            buffers.push(BufferDecl::new(i, format!("t{i}"), d(SIZES[size]), BufferKind::Intermediate, 16));
            steps.push(Step::new(format!("k{i}"), [i - 1], [i]).with_in_place(i, i - 1));
        }
        let problem = MemoryProblem { buffers, steps };
        let plan = plan(&problem).unwrap();
        prop_assert_eq!(plan.slots().len(), 1);
        prop_assert_eq!(plan.in_place().len(), n - 1);
        prop_assert!(plan.rejected_in_place().is_empty());
        for b in bindings() {
            check_plan(&problem, &plan, &b);
            let s = d(SIZES[size]).eval(&b).unwrap() as u64;
            prop_assert_eq!(plan.arena_bytes(&b).unwrap(), round_up(s, 16));
        }
    }
}

/// A decode step of a tiny attention block: the KV cache is state, written and read in place
/// by the steps, yet never in the arena.
fn attention_problem() -> MemoryProblem {
    use BufferKind::*;
    let buffers = vec![
        BufferDecl::new(0, "x", d("256*seq"), Input, 64),
        BufferDecl::new(1, "wqkv", 196608, Param, 64),
        BufferDecl::new(2, "kv", d("512*(past + seq)"), State, 64),
        BufferDecl::new(3, "qkv", d("768*seq"), Intermediate, 64),
        BufferDecl::new(4, "q", d("256*seq"), Intermediate, 64),
        BufferDecl::new(5, "scores", d("16*seq*(past + seq)"), Intermediate, 64),
        BufferDecl::new(6, "probs", d("16*seq*(past + seq)"), Intermediate, 64),
        BufferDecl::new(7, "attn", d("256*seq"), Intermediate, 64),
        BufferDecl::new(8, "h", d("256*seq"), Intermediate, 64),
        BufferDecl::new(9, "y", d("256*seq"), Output, 64),
        BufferDecl::new(10, "rowmax", d("4*seq"), Intermediate, 4),
    ];
    let steps = vec![
        Step::new("qkv_proj", [0, 1], [3]),
        Step::new("rope_split", [3], [4, 2]),
        Step::new("qk", [4, 2], [5]),
        Step::new("rowmax", [5], [10]),
        Step::new("softmax", [5, 10], [6]).with_in_place(6, 5),
        Step::new("pv", [6, 2], [7]),
        // `attn` is read again by the residual, so this hint must be rejected.
        Step::new("out_proj", [7, 1], [8]).with_in_place(8, 7),
        Step::new("residual", [8, 7, 0], [9]),
    ];
    MemoryProblem { buffers, steps }
}

#[test]
fn attention_report_snapshot() {
    let plan = plan(&attention_problem()).unwrap();
    insta::assert_snapshot!(plan.to_string());
}

#[test]
fn attention_plan_values() {
    let problem = attention_problem();
    let plan = plan(&problem).unwrap();
    assert_eq!(plan.in_place().len(), 1);
    assert_eq!(plan.rejected_in_place().len(), 1);
    assert_eq!(
        plan.rejected_in_place()[0].reason,
        InPlaceRejection::InputLiveAfter
    );
    assert_eq!(plan.offset(BufferId(6)), plan.offset(BufferId(5)));
    for b in bindings() {
        check_plan(&problem, &plan, &b);
    }
    // seq = 1, past = 100: qkv 768, q 256, scores/probs 1616, attn 256, h 256, rowmax 4.
    let b = Bindings::new().with("seq", 1).with("past", 100);
    // Live at `pv`: probs (in place of scores) and attn: 1616 + 256.
    assert_eq!(plan.peak_bytes(&b).unwrap(), 1616 + 256);
    assert!(plan.arena_bytes(&b).unwrap() >= plan.peak_bytes(&b).unwrap());
}

#[test]
fn state_and_external_buffers_never_get_arena_offsets() {
    let problem = attention_problem();
    let plan = plan(&problem).unwrap();
    for id in [0, 1, 2, 9] {
        let pb = plan.buffer(BufferId(id)).unwrap();
        assert_eq!(pb.placement, Placement::External, "{}", pb.decl.name);
        assert!(plan.offset(BufferId(id)).is_none());
    }
    assert!(plan
        .slots()
        .iter()
        .all(|s| !s.buffers.contains(&BufferId(2))));
    let resolved = plan
        .resolve(&Bindings::new().with("seq", 5).with("past", 7))
        .unwrap();
    assert!(resolved.arena_buffers.iter().all(|t| t.0 != BufferId(2)));
    // A hint to write an intermediate over the state is rejected.
    let mut problem = problem;
    problem.steps[2] = Step::new("qk", [4, 2], [5]).with_in_place(5, 2);
    let plan = kiln_compiler::memory::plan(&problem).unwrap();
    assert_eq!(
        plan.rejected_in_place()[0].reason,
        InPlaceRejection::NotIntermediate
    );
    assert_eq!(
        plan.buffer(BufferId(2)).unwrap().placement,
        Placement::External
    );
}

#[test]
fn provably_larger_slot_is_reused_and_grown_by_constants() {
    use BufferKind::Intermediate;
    // a dies before b and c are born; b provably fits a's slot (4*seq + 16 >= 4*seq).
    let buffers = vec![
        BufferDecl::new(0, "a", d("4*seq + 16"), Intermediate, 1),
        BufferDecl::new(1, "b", d("4*seq"), Intermediate, 1),
        BufferDecl::new(2, "c", d("4*seq + 32"), Intermediate, 1),
        BufferDecl::new(3, "d", d("4*seq + 32"), Intermediate, 1),
    ];
    let steps = vec![
        Step::new("a", [], [0]),
        Step::new("b", [0], [1]),
        Step::new("c", [1], [2]),
        Step::new("d", [2], [3]),
    ];
    let plan = plan(&MemoryProblem { buffers, steps }).unwrap();
    assert_eq!(plan.slots().len(), 2);
    // The slots' sizes stay free of redundant `max` terms.
    let sizes: Vec<String> = plan.slots().iter().map(|s| s.size.to_string()).collect();
    assert_eq!(sizes, ["4*seq + 32", "4*seq + 32"]);
    assert_eq!(plan.arena_size(), &d("8*seq + 64"));
}

#[test]
fn symbolic_sizes_compare_for_non_negative_symbols() {
    use BufferKind::Intermediate;
    // `256*seq` covers `4*seq`, and `4*(seq + past)` covers both once `seq`'s slot is free:
    // every slot size stays a single polynomial, with no `max`.
    let buffers = vec![
        BufferDecl::new(0, "a", d("256*seq"), Intermediate, 1),
        BufferDecl::new(1, "b", d("4*seq"), Intermediate, 1),
        BufferDecl::new(2, "c", d("4*seq"), Intermediate, 1),
        BufferDecl::new(3, "e", d("4*seq + 4*past"), Intermediate, 1),
        BufferDecl::new(4, "f", d("4*min(seq, 64)"), Intermediate, 1),
    ];
    let steps = vec![
        Step::new("a", [], [0]),
        Step::new("b", [0], [1]),
        Step::new("c", [1], [2]),
        Step::new("e", [2], [3]),
        Step::new("f", [3], [4]),
    ];
    let problem = MemoryProblem { buffers, steps };
    let plan = plan(&problem).unwrap();
    let sizes: Vec<String> = plan.slots().iter().map(|s| s.size.to_string()).collect();
    // a, c share a slot; b, then e (which covers b) share the other; f cannot be compared with
    // the slots it may use (`min`), so it joins one through `maximum`.
    assert_eq!(plan.slots().len(), 2);
    assert_eq!(plan.offset(BufferId(0)), plan.offset(BufferId(2)));
    assert_eq!(plan.offset(BufferId(1)), plan.offset(BufferId(3)));
    assert_eq!(sizes[1], "4*past + 4*seq");
    assert!(sizes[0].contains("max("), "{sizes:?}");
    for b in bindings() {
        check_plan(&problem, &plan, &b);
    }
}

#[test]
fn malformed_problems_are_errors() {
    use BufferKind::*;
    let t = |id, kind| BufferDecl::new(id, format!("b{id}"), 4, kind, 4);
    let err = |buffers, steps| plan(&MemoryProblem { buffers, steps }).unwrap_err();

    assert!(matches!(
        err(vec![t(0, Intermediate), t(0, Input)], vec![]),
        PlanError::DuplicateBuffer { id: 0, .. }
    ));
    assert!(matches!(
        err(vec![t(0, Intermediate)], vec![Step::new("k", [0], [9])]),
        PlanError::UnknownBuffer { id: 9, .. }
    ));
    assert!(matches!(
        err(
            vec![t(0, Intermediate), t(1, Intermediate)],
            vec![Step::new("k", [0], [1])]
        ),
        PlanError::ReadBeforeWrite { step: 0, .. }
    ));
    assert!(matches!(
        err(vec![t(0, Param)], vec![Step::new("k", [], [0])]),
        PlanError::WriteToReadOnly { kind: "param", .. }
    ));
    assert!(matches!(
        err(vec![BufferDecl::new(0, "odd", 4, Intermediate, 3)], vec![]),
        PlanError::BadAlignment { align: 3, .. }
    ));
    let e = err(
        vec![t(0, Intermediate)],
        vec![Step::new("k", [], [0]).with_in_place(0, 7)],
    );
    assert!(matches!(e, PlanError::UnknownBuffer { id: 7, .. }));
    assert!(e.to_string().contains("buffer id 7"));
}

#[test]
fn evaluation_errors() {
    let buffers = vec![BufferDecl::new(
        0,
        "t",
        d("4*seq - 8"),
        BufferKind::Intermediate,
        4,
    )];
    let plan = plan(&MemoryProblem {
        buffers,
        steps: vec![Step::new("k", [], [0])],
    })
    .unwrap();
    assert!(matches!(
        plan.peak_bytes(&Bindings::new()),
        Err(PlanEvalError::Dim(_))
    ));
    assert!(matches!(
        plan.peak_bytes(&Bindings::new().with("seq", 1)),
        Err(PlanEvalError::NegativeSize { value: -4, .. })
    ));
    assert_eq!(
        plan.arena_bytes(&Bindings::new().with("seq", 3)).unwrap(),
        4
    );
}

#[test]
fn empty_problem() {
    let plan = plan(&MemoryProblem::default()).unwrap();
    assert_eq!(plan.arena_size(), &Dim::constant(0));
    assert_eq!(plan.arena_bytes(&Bindings::new()).unwrap(), 0);
    assert_eq!(plan.peak_bytes(&Bindings::new()).unwrap(), 0);
    assert_eq!(plan.arena_align(), 1);
}
