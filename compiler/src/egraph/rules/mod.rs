//! Rewrite rules, grouped by what they concern, and the machinery that turns a plain Rust
//! function into an egg rewrite.
//!
//! A rule is a [`RuleDef`]: a name and a function that looks at one e-node (with the
//! e-graph's types at hand) and returns the right-hand sides it is equal to, as [`Rhs`]
//! trees. A few rules match several nodes at once (the matmul merging of [`merge`]); those
//! are *whole-graph* rules ([`RuleDef::global`]): one function scans the e-graph and returns
//! `(class, right-hand side)` pairs, applied like the others. Every rule computes its attributes in Rust and checks legality against the
//! analysis' types, so all rules are custom egg searchers/appliers rather than patterns
//! (the ops carry attributes, symbolic dims included, that patterns cannot compute).
//!
//! Appliers type-check every new node with [`kiln_ir::infer_type`] and require the result to
//! have the matched class's type; a rule that breaks this is a bug, reported by a panic in
//! debug builds (in release builds the rewrite is skipped).
//!
//! Commutativity and associativity are not applied: rules that care about operand order
//! (`x + 0` and `0 + x`) match both orders explicitly, so the e-graph never grows by
//! reordering, and float results never change by reassociation.

pub mod algebra;
pub mod merge;
pub mod movement;

use super::lang::{KGraph, KNode};
use egg::{Applier, Id, SearchMatches, Searcher, Subst, Symbol, Var};
use kiln_ir::{infer_type, Op, Scalar, TensorType};
use std::sync::Mutex;

/// The right-hand side of a rewrite: an existing e-class, or a new node over right-hand
/// sides.
#[derive(Clone, Debug)]
pub enum Rhs {
    /// An e-class already in the e-graph.
    Class(Id),
    /// A new node.
    Node(Op, Vec<Rhs>),
}

impl Rhs {
    /// A new node over existing classes.
    pub fn node(op: Op, children: &[Id]) -> Rhs {
        Rhs::Node(op, children.iter().map(|c| Rhs::Class(*c)).collect())
    }
}

/// What a rule function sees: the e-graph, read-only, with helpers.
pub struct Ctx<'a> {
    /// The e-graph.
    pub egraph: &'a KGraph,
}

impl<'a> Ctx<'a> {
    /// The op of a node.
    pub fn op(&self, node: &KNode) -> &'a Op {
        self.egraph.analysis.op(node.op)
    }

    /// The type of an e-class.
    pub fn ty(&self, id: Id) -> &'a TensorType {
        &self.egraph[id].data.ty
    }

    /// The single value of every element of an e-class, if known.
    pub fn konst(&self, id: Id) -> Option<Scalar> {
        self.egraph[id].data.konst
    }

    /// The nodes of an e-class with their ops.
    pub fn nodes(&self, id: Id) -> impl Iterator<Item = (&'a Op, &'a KNode)> + 'a {
        let eg = self.egraph;
        eg[id].iter().map(move |n| (eg.analysis.op(n.op), n))
    }
}

/// A rule function: the right-hand sides equal to `node` (whose op is `op`), if any.
pub type RuleFn = fn(&Ctx, &KNode, &Op) -> Vec<Rhs>;

/// A whole-graph rule function: scans the e-graph and returns `(class, rhs)` pairs, each
/// saying that class `class` equals `rhs`. Must be deterministic (order by class id).
pub type GlobalRuleFn = fn(&Ctx) -> Vec<(Id, Rhs)>;

/// What a rule looks at.
#[derive(Clone, Copy)]
pub enum RuleKind {
    /// One e-node at a time.
    Node(RuleFn),
    /// The whole e-graph at once (multi-node patterns).
    Global(GlobalRuleFn),
}

/// A named rewrite rule.
#[derive(Clone, Copy)]
pub struct RuleDef {
    /// Unique name (used in stats and to pick rules).
    pub name: &'static str,
    /// The rewrite.
    pub kind: RuleKind,
}

impl std::fmt::Debug for RuleDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl RuleDef {
    /// A rule from a name and a function.
    pub const fn new(name: &'static str, f: RuleFn) -> RuleDef {
        RuleDef {
            name,
            kind: RuleKind::Node(f),
        }
    }

    /// A whole-graph rule from a name and a function.
    pub const fn global(name: &'static str, f: GlobalRuleFn) -> RuleDef {
        RuleDef {
            name,
            kind: RuleKind::Global(f),
        }
    }

    /// The egg rewrite running this rule.
    pub fn to_rewrite(self) -> egg::Rewrite<KNode, super::lang::KilnAnalysis> {
        let r = std::sync::Arc::new(FnRule {
            def: self,
            found: Mutex::new(Vec::new()),
        });
        egg::Rewrite::new(self.name, RuleSearcher(r.clone()), RuleApplier(r))
            .expect("a rule binds its one variable")
    }
}

/// Every rule of every rule set.
pub fn all() -> Vec<RuleDef> {
    let mut v = algebra::rules();
    v.extend(movement::rules());
    v.extend(merge::rules());
    v
}

/// The rule called `name`.
pub fn by_name(name: &str) -> Option<RuleDef> {
    all().into_iter().find(|r| r.name == name)
}

struct FnRule {
    def: RuleDef,
    /// Right-hand sides found by the last search; substitutions hold indices into it.
    found: Mutex<Vec<Rhs>>,
}

fn match_var() -> Var {
    "?m".parse().expect("valid var")
}

struct RuleSearcher(std::sync::Arc<FnRule>);
struct RuleApplier(std::sync::Arc<FnRule>);

impl Searcher<KNode, super::lang::KilnAnalysis> for RuleSearcher {
    fn search_eclass_with_limit(
        &self,
        egraph: &KGraph,
        eclass: Id,
        limit: usize,
    ) -> Option<SearchMatches<'_, KNode>> {
        let ctx = Ctx { egraph };
        let var = match_var();
        let mut substs = Vec::new();
        let mut found = self.0.found.lock().expect("rule table");
        let eclass = egraph.find(eclass);
        let mut push = |rhs: Rhs, substs: &mut Vec<Subst>| {
            let mut s = Subst::with_capacity(1);
            s.insert(var, Id::from(found.len()));
            found.push(rhs);
            substs.push(s);
        };
        match self.0.def.kind {
            RuleKind::Node(f) => {
                for node in egraph[eclass].iter() {
                    for rhs in f(&ctx, node, ctx.op(node)) {
                        if substs.len() >= limit {
                            break;
                        }
                        push(rhs, &mut substs);
                    }
                }
            }
            RuleKind::Global(f) => {
                for (class, rhs) in f(&ctx) {
                    if egraph.find(class) == eclass && substs.len() < limit {
                        push(rhs, &mut substs);
                    }
                }
            }
        }
        (!substs.is_empty()).then_some(SearchMatches {
            eclass,
            substs,
            ast: None,
        })
    }

    fn search_with_limit(&self, egraph: &KGraph, limit: usize) -> Vec<SearchMatches<'_, KNode>> {
        self.0.found.lock().expect("rule table").clear();
        if let RuleKind::Global(f) = self.0.def.kind {
            // One scan; matches grouped by class, classes in id order.
            let mut by_class: std::collections::BTreeMap<Id, Vec<Rhs>> = Default::default();
            for (class, rhs) in f(&Ctx { egraph }) {
                by_class.entry(egraph.find(class)).or_default().push(rhs);
            }
            let mut found = self.0.found.lock().expect("rule table");
            let var = match_var();
            let mut out = Vec::new();
            let mut left = limit;
            for (eclass, rhss) in by_class {
                let mut substs = Vec::new();
                for rhs in rhss {
                    if left == 0 {
                        break;
                    }
                    let mut s = Subst::with_capacity(1);
                    s.insert(var, Id::from(found.len()));
                    found.push(rhs);
                    substs.push(s);
                    left -= 1;
                }
                if !substs.is_empty() {
                    out.push(SearchMatches {
                        eclass,
                        substs,
                        ast: None,
                    });
                }
            }
            return out;
        }
        let mut ids: Vec<Id> = egraph.classes().map(|c| c.id).collect();
        ids.sort();
        let mut out = Vec::new();
        let mut left = limit;
        for id in ids {
            if left == 0 {
                break;
            }
            if let Some(m) = self.search_eclass_with_limit(egraph, id, left) {
                left = left.saturating_sub(m.substs.len());
                out.push(m);
            }
        }
        out
    }

    fn vars(&self) -> Vec<Var> {
        vec![match_var()]
    }
}

impl Applier<KNode, super::lang::KilnAnalysis> for RuleApplier {
    fn apply_one(
        &self,
        egraph: &mut KGraph,
        eclass: Id,
        subst: &Subst,
        _ast: Option<&egg::PatternAst<KNode>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let idx = usize::from(subst[match_var()]);
        let rhs = self.0.found.lock().expect("rule table")[idx].clone();
        let name = self.0.def.name;
        let Some(id) = add_rhs(egraph, &rhs, name) else {
            return Vec::new();
        };
        let (want, got) = (&egraph[eclass].data.ty, &egraph[id].data.ty);
        if want != got {
            debug_assert!(false, "rule `{name}` changes a type: {want} -> {got}");
            return Vec::new();
        }
        if egraph.union(eclass, id) {
            vec![eclass]
        } else {
            Vec::new()
        }
    }
}

/// Adds a right-hand side, type-checking each new node first.
fn add_rhs(egraph: &mut KGraph, rhs: &Rhs, rule: &str) -> Option<Id> {
    match rhs {
        Rhs::Class(id) => Some(*id),
        Rhs::Node(op, kids) => {
            let mut ids = Vec::with_capacity(kids.len());
            for k in kids {
                ids.push(add_rhs(egraph, k, rule)?);
            }
            let types: Vec<&TensorType> = ids.iter().map(|c| &egraph[*c].data.ty).collect();
            if let Err(e) = infer_type(op, &types) {
                debug_assert!(
                    false,
                    "rule `{rule}` builds an ill-typed {}: {e}",
                    op.name()
                );
                return None;
            }
            let key = egraph.analysis.intern(op.clone());
            Some(egraph.add(KNode {
                op: key,
                children: ids,
            }))
        }
    }
}
