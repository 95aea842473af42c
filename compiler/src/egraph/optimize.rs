//! The optimizer entry point: staged equality saturation and extraction.

use super::convert::{extract, to_egraph};
use super::cost::CostModel;
use super::lang::{KNode, KilnAnalysis};
use super::rules::{self, RuleDef};
use super::OptimizeError;
use kiln_ir::Graph;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// One stage: a rule set run to saturation or to the limits.
#[derive(Clone, Debug)]
pub struct Stage {
    /// Name shown in the stats.
    pub name: String,
    /// The rules.
    pub rules: Vec<RuleDef>,
}

/// Optimizer settings.
#[derive(Clone, Debug)]
pub struct OptimizeOptions {
    /// Stages, run one after the other on the same e-graph.
    pub stages: Vec<Stage>,
    /// Per stage: stop once the e-graph holds this many e-nodes.
    pub node_limit: usize,
    /// Per stage: stop after this many iterations.
    pub iter_limit: usize,
    /// Per stage: stop after this much time (the only limit that is not deterministic; it is
    /// a safety net, set far above what the node and iteration limits allow).
    pub time_limit: Duration,
    /// The cost model used for extraction.
    pub cost: CostModel,
}

impl Default for OptimizeOptions {
    /// Three stages:
    ///
    /// 1. `simplify`: every algebra rule and the movement rules that only shrink
    ///    (collapse view chains, drop identity views). Nothing here grows the program, so it
    ///    saturates quickly.
    /// 2. `layout`: views pushed through unary ops and transposes folded into `matmul` flags,
    ///    with the shrinking movement rules again so the moved views collapse.
    /// 3. `merge`: products of one input with several weights merged into one product with
    ///    the concatenated weights ([`rules::merge`]); runs after `layout` so that the
    ///    transposed weights are already folded into `trans_b`.
    fn default() -> OptimizeOptions {
        let algebra = rules::algebra::rules();
        let movement = rules::movement::rules();
        let (layout, shrink): (Vec<RuleDef>, Vec<RuleDef>) = movement.into_iter().partition(|r| {
            matches!(
                r.name,
                "view-through-unary" | "matmul-fold-transpose-a" | "matmul-fold-transpose-b"
            )
        });
        let mut simplify = algebra;
        simplify.extend(shrink.iter().copied());
        let mut second = layout;
        second.extend(shrink);
        OptimizeOptions {
            stages: vec![
                Stage {
                    name: "simplify".into(),
                    rules: simplify,
                },
                Stage {
                    name: "layout".into(),
                    rules: second,
                },
                Stage {
                    name: "merge".into(),
                    rules: rules::merge::rules(),
                },
            ],
            node_limit: 100_000,
            iter_limit: 30,
            time_limit: Duration::from_secs(10),
            cost: CostModel::default(),
        }
    }
}

impl OptimizeOptions {
    /// One stage holding only the named rules (for tests and `kiln inspect`).
    pub fn only(names: &[&str]) -> Result<OptimizeOptions, OptimizeError> {
        let mut rules_ = Vec::new();
        for n in names {
            rules_
                .push(rules::by_name(n).ok_or_else(|| OptimizeError::UnknownRule(n.to_string()))?);
        }
        Ok(OptimizeOptions {
            stages: vec![Stage {
                name: "only".into(),
                rules: rules_,
            }],
            ..OptimizeOptions::default()
        })
    }
}

/// What one stage did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageStats {
    /// The stage's name.
    pub name: String,
    /// Iterations run.
    pub iterations: usize,
    /// E-nodes at the end.
    pub enodes: usize,
    /// E-classes at the end.
    pub eclasses: usize,
    /// Why it stopped (`saturated`, `iteration limit 30`, ...).
    pub stop_reason: String,
}

/// Statistics of one [`optimize`] call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleStats {
    /// Per rule (by name): how many times it changed the e-graph, summed over stages. Rules
    /// that never fired are listed with 0.
    pub applied: BTreeMap<String, usize>,
    /// Per stage, in order.
    pub stages: Vec<StageStats>,
    /// Nodes of the graph before and after.
    pub nodes_before: usize,
    /// Nodes of the extracted graph.
    pub nodes_after: usize,
}

impl RuleStats {
    /// How many times the rule called `name` fired.
    pub fn applied(&self, name: &str) -> usize {
        self.applied.get(name).copied().unwrap_or(0)
    }
}

impl fmt::Display for RuleStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "nodes: {} -> {}", self.nodes_before, self.nodes_after)?;
        for s in &self.stages {
            writeln!(
                f,
                "stage {}: {} iterations, {} e-nodes, {} e-classes, stopped: {}",
                s.name, s.iterations, s.enodes, s.eclasses, s.stop_reason
            )?;
        }
        writeln!(f, "rules applied:")?;
        for (name, n) in &self.applied {
            writeln!(f, "  {name:<28} {n}")?;
        }
        Ok(())
    }
}

/// The result of [`optimize`].
#[derive(Clone, Debug)]
pub struct Optimized {
    /// The optimized graph.
    pub graph: Graph,
    /// What the rewrites did.
    pub stats: RuleStats,
}

fn stop_reason(r: &Option<egg::StopReason>) -> String {
    match r {
        None => "not stopped".into(),
        Some(egg::StopReason::Saturated) => "saturated".into(),
        Some(egg::StopReason::IterationLimit(n)) => format!("iteration limit {n}"),
        Some(egg::StopReason::NodeLimit(n)) => format!("node limit {n}"),
        Some(egg::StopReason::TimeLimit(t)) => format!("time limit {t}s"),
        Some(egg::StopReason::Other(s)) => s.clone(),
    }
}

/// Optimizes `graph`: loads it into an e-graph, runs each stage's rules with egg's `Runner`
/// (node, iteration and time limits per stage, every rule every iteration), then extracts
/// the cheapest equivalent graph under the cost model. The result has the same inputs,
/// params, states, outputs and state updates (names and types) as `graph`.
pub fn optimize(graph: &Graph, options: &OptimizeOptions) -> Result<Optimized, OptimizeError> {
    let mut loaded = to_egraph(graph);
    let mut stats = RuleStats {
        nodes_before: graph.nodes().len(),
        ..RuleStats::default()
    };
    for stage in &options.stages {
        for r in &stage.rules {
            stats.applied.entry(r.name.to_string()).or_insert(0);
        }
        let rewrites: Vec<egg::Rewrite<KNode, KilnAnalysis>> =
            stage.rules.iter().map(|r| r.to_rewrite()).collect();
        let egraph = std::mem::take(&mut loaded.egraph);
        let runner = egg::Runner::<KNode, KilnAnalysis, ()>::new(KilnAnalysis::default())
            .with_egraph(egraph)
            .with_node_limit(options.node_limit)
            .with_iter_limit(options.iter_limit)
            .with_time_limit(options.time_limit)
            .with_scheduler(egg::SimpleScheduler)
            .run(&rewrites);
        for it in &runner.iterations {
            for (name, n) in &it.applied {
                *stats.applied.entry(name.to_string()).or_insert(0) += n;
            }
        }
        stats.stages.push(StageStats {
            name: stage.name.clone(),
            iterations: runner.iterations.len(),
            enodes: runner.egraph.total_number_of_nodes(),
            eclasses: runner.egraph.number_of_classes(),
            stop_reason: stop_reason(&runner.stop_reason),
        });
        loaded.egraph = runner.egraph;
    }
    let out = extract(graph, &loaded, &options.cost)?;
    stats.nodes_after = out.nodes().len();
    Ok(Optimized { graph: out, stats })
}
