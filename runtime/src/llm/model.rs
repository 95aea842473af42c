//! [`CausalLm`]: a causal language model compiled for a device (the CPU or a GPU through
//! wgpu), as the programs generation
//! needs, sharing one set of weights (memory-mapped, not copied) and one KV cache.

use crate::cpu::{CpuError, CpuOptions};
use crate::device::{Device, Executable};
use crate::weights::{WeightError, WeightTensor};
use kiln_compiler::egraph::OptimizeOptions;
use kiln_compiler::CompileError;
use kiln_ir::{Bindings, DType, Graph, Tensor};
use std::collections::HashMap;

/// Why a language model could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum LmError {
    /// Compilation failed.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// The executable (CPU or wgpu) refused a weight, an input or a run.
    #[error(transparent)]
    Cpu(#[from] CpuError),
    /// A weight is missing or malformed.
    #[error(transparent)]
    Weight(#[from] WeightError),
    /// The graphs are not what [`LmGraphs`] describes.
    #[error("{0}")]
    Graph(String),
    /// The KV cache cannot hold the tokens.
    #[error("the context holds {capacity} tokens: {past} are cached and {new} more do not fit")]
    ContextFull {
        /// Positions of the KV cache.
        capacity: usize,
        /// Positions already used.
        past: usize,
        /// Positions asked for.
        new: usize,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    BadToken {
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab: usize,
    },
}

/// The traced programs of a causal LM. Each takes the input `ids` (i64 `[1, seq]`) and the
/// symbol `past` (cached positions), reads and updates the same states (the KV caches,
/// `[.., capacity, ..]` with the capacity at axis `cache_axis`), and has the output `logits`.
pub struct LmGraphs {
    /// Any number of new tokens; logits of the last one only (`[1, 1, vocab]`).
    pub prompt: Graph,
    /// One new token (`seq` = 1); logits `[1, 1, vocab]`.
    pub step: Graph,
    /// Any number of new tokens; logits of every one (`[1, seq, vocab]`). Compiled when
    /// first used ([`CausalLm::all_logits`]).
    pub all: Graph,
    /// Stage outputs for debugging (`embed`, `layers.N`, `norm`, `logits`; every output of
    /// the graph is a stage), over positions `0..seq` without the cache. Compiled on use.
    pub stages: Option<Graph>,
}

/// Which program holds the KV cache now.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Holder {
    Prompt,
    Step,
    All,
}

/// Options of a [`CausalLm`].
#[derive(Clone, Debug, Default)]
pub struct LmOptions {
    /// Where the programs run (the CPU by default).
    pub device: Device,
    /// CPU worker threads (0: one per core).
    pub threads: usize,
    /// Skip the e-graph optimizer (for debugging).
    pub no_optimize: bool,
    /// Run matmuls as generated code accumulating in f64 on dequantized weights (no 8-bit
    /// activations; slow; for checking against a float reference).
    pub exact: bool,
    /// Decode (few-row) products with block-quantized weights multiply the f32 activations,
    /// exact to f32 rounding, instead of quantizing them to 8 bits per block for integer
    /// dots as llama.cpp does (the default: faster, about 0.4% RMS error per product; see
    /// [`CpuExecutable::quantize_activations`]).
    pub f32_activations: bool,
}

/// A causal LM ready to run: prompt and decode-step programs compiled once, weights shared
/// with the file, the KV cache persistent across calls.
pub struct CausalLm {
    graphs: LmGraphs,
    options: LmOptions,
    weights: HashMap<String, WeightTensor>,
    prompt: Executable,
    step: Executable,
    all: Option<Executable>,
    holder: Holder,
    /// Positions in the cache.
    past: usize,
    capacity: usize,
    vocab: usize,
}

impl CausalLm {
    /// Compiles the prompt and step programs and loads `weights` (by param name) into both.
    /// `progress` is told each phase (`"compile prompt"`, `"compile step"`, `"load"`).
    pub fn new(
        graphs: LmGraphs,
        weights: HashMap<String, WeightTensor>,
        options: LmOptions,
        progress: &mut dyn FnMut(&str),
    ) -> Result<CausalLm, LmError> {
        let (capacity, vocab) = shape_of(&graphs.step)?;
        progress("compile prompt");
        let mut prompt = build(&graphs.prompt, &weights, &options)?;
        if let Some(e) = prompt.as_cpu_mut() {
            e.set_profile_label("prompt program");
        }
        progress("compile step");
        let mut step = build(&graphs.step, &weights, &options)?;
        if let Some(e) = step.as_cpu_mut() {
            e.set_profile_label("decode step program");
        }
        progress("load");
        for (name, id) in graphs.step.states() {
            let ty = graphs.step.ty(id);
            let shape = ty
                .shape
                .dims()
                .iter()
                .map(|d| d.as_const().map(|c| c as usize))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| LmError::Graph(format!("state `{name}` has a symbolic shape")))?;
            step.set_state(name, &zeros(ty.dtype, shape)?)?;
        }
        Ok(CausalLm {
            graphs,
            options,
            weights,
            prompt,
            step,
            all: None,
            holder: Holder::Step,
            past: 0,
            capacity,
            vocab,
        })
    }

    /// Positions already in the KV cache.
    pub fn past(&self) -> usize {
        self.past
    }

    /// Positions the KV cache holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether decode products with block-quantized weights run on 8-bit activations (see
    /// [`LmOptions::f32_activations`]).
    pub fn quantizes_activations(&self) -> bool {
        self.step
            .as_cpu()
            .is_some_and(|e| e.quantizes_activations())
    }

    /// Vocabulary size (entries per logits row).
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// CPU worker threads (0 on another device).
    pub fn threads(&self) -> usize {
        self.step.as_cpu().map_or(0, |e| e.threads())
    }

    /// What the programs run on (`cpu (N threads)`, or the GPU adapter).
    pub fn device(&self) -> String {
        self.step.describe()
    }

    /// Forgets the cached positions (the next call starts a new sequence). The cache's
    /// contents need no clearing: positions past `past` are never read.
    pub fn reset(&mut self) {
        self.past = 0;
    }

    /// Drops cached positions from `keep` on (keeps the first `keep`).
    pub fn truncate(&mut self, keep: usize) {
        self.past = self.past.min(keep);
    }

    /// Runs `tokens` after the cached ones; returns the logits of the last one.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, LmError> {
        let holder = if tokens.len() == 1 {
            Holder::Step
        } else {
            Holder::Prompt
        };
        let t = self.run(holder, tokens)?;
        Ok(t.as_slice::<f32>()
            .map_err(|e| LmError::Graph(e.to_string()))?[..self.vocab]
            .to_vec())
    }

    /// Runs `tokens` after the cached ones; returns the logits of every one (`[n, vocab]`
    /// row-major). Compiles the all-positions program on first use.
    pub fn all_logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>, LmError> {
        if self.all.is_none() {
            self.all = Some(build(&self.graphs.all, &self.weights, &self.options)?);
        }
        let t = self.run(Holder::All, tokens)?;
        Ok(t.as_slice::<f32>()
            .map_err(|e| LmError::Graph(e.to_string()))?
            .to_vec())
    }

    /// Every stage output for `tokens` from position 0 (no cache), by name.
    pub fn stages(&mut self, tokens: &[u32]) -> Result<Vec<(String, Tensor)>, LmError> {
        let g = self
            .graphs
            .stages
            .as_ref()
            .ok_or_else(|| LmError::Graph("this model has no stage program".into()))?;
        let mut exe = build(g, &self.weights, &self.options)?;
        let ids = self.ids(tokens)?;
        Ok(exe.run(&[("ids", &ids)], &Bindings::new())?)
    }

    fn ids(&self, tokens: &[u32]) -> Result<Tensor, LmError> {
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= self.vocab) {
            return Err(LmError::BadToken {
                id,
                vocab: self.vocab,
            });
        }
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        Tensor::from_vec(vec![1, tokens.len()], ids).map_err(|e| LmError::Graph(e.to_string()))
    }

    fn run(&mut self, holder: Holder, tokens: &[u32]) -> Result<Tensor, LmError> {
        if tokens.is_empty() {
            return Err(LmError::Graph("no tokens to run".into()));
        }
        if self.past + tokens.len() > self.capacity {
            return Err(LmError::ContextFull {
                capacity: self.capacity,
                past: self.past,
                new: tokens.len(),
            });
        }
        let ids = self.ids(tokens)?;
        if self.holder != holder {
            let (from, to) = match (self.holder, holder) {
                (Holder::Step, Holder::Prompt) | (Holder::Prompt, Holder::Step) => {
                    (&mut self.step, &mut self.prompt)
                }
                (Holder::Step, Holder::All) | (Holder::All, Holder::Step) => (
                    &mut self.step,
                    self.all.as_mut().expect("compiled before use"),
                ),
                _ => (
                    &mut self.prompt,
                    self.all.as_mut().expect("compiled before use"),
                ),
            };
            from.swap_states(to);
            self.holder = holder;
        }
        let exe = match holder {
            Holder::Prompt => &mut self.prompt,
            Holder::Step => &mut self.step,
            Holder::All => self.all.as_mut().expect("compiled before use"),
        };
        let b = Bindings::new().with("past", self.past as i64);
        let out = exe.run(&[("ids", &ids)], &b)?;
        self.past += tokens.len();
        out.into_iter()
            .find(|(n, _)| n == "logits")
            .map(|(_, t)| t)
            .ok_or_else(|| LmError::Graph("the program has no output `logits`".into()))
    }
}

/// Compiles `g` for the options' device and loads the weights it reads.
fn build(
    g: &Graph,
    weights: &HashMap<String, WeightTensor>,
    options: &LmOptions,
) -> Result<Executable, LmError> {
    let opt = OptimizeOptions::default();
    let compiled = kiln_compiler::compile(g, (!options.no_optimize).then_some(&opt))?;
    let mut exe = Executable::new(
        &compiled,
        &options.device,
        &CpuOptions {
            threads: options.threads,
        },
    )?;
    if let Some(e) = exe.as_cpu_mut() {
        e.use_microkernels(!options.exact);
        e.quantize_activations(!options.exact && !options.f32_activations);
    }
    for (name, _) in g.params() {
        let w = weights
            .get(name)
            .ok_or_else(|| WeightError::MissingTensor {
                file: "the model's weights".into(),
                tensor: name.to_string(),
            })?;
        exe.set_param_bytes(name, w)?;
    }
    Ok(exe)
}

/// KV capacity and vocabulary of the step program: `logits` is `[1, 1, vocab]`; the
/// capacity is the smallest cache length (axis -2) over the states.
fn shape_of(step: &Graph) -> Result<(usize, usize), LmError> {
    let (_, logits) = step
        .outputs()
        .iter()
        .find(|(n, _)| n == "logits")
        .ok_or_else(|| LmError::Graph("the step program has no output `logits`".into()))?;
    let vocab = step
        .ty(*logits)
        .shape
        .dims()
        .last()
        .and_then(|d| d.as_const())
        .ok_or_else(|| LmError::Graph("logits need a constant vocabulary dim".into()))?
        as usize;
    let capacity = step
        .states()
        .into_iter()
        .filter_map(|(_, id)| {
            let dims = step.ty(id).shape.dims().to_vec();
            dims.get(dims.len().checked_sub(2)?)?.as_const()
        })
        .min()
        .ok_or_else(|| LmError::Graph("the step program has no KV-cache state".into()))?;
    Ok((capacity as usize, vocab))
}

/// A zero tensor.
fn zeros(dtype: DType, shape: Vec<usize>) -> Result<Tensor, LmError> {
    let n: usize = shape.iter().product();
    let t = match dtype {
        DType::F32 => Tensor::from_vec(shape, vec![0f32; n]),
        DType::F16 => Tensor::from_vec(shape, vec![half::f16::ZERO; n]),
        DType::BF16 => Tensor::from_vec(shape, vec![half::bf16::ZERO; n]),
        d => return Err(LmError::Graph(format!("KV cache of dtype {d}"))),
    };
    t.map_err(|e| LmError::Graph(e.to_string()))
}
