//! Stage outputs: `--dump-dir` writes them, `kiln verify` compares them with a reference
//! (the dumps `scripts/hf_reference.py` writes: one directory per prompt holding
//! `tokens.npy` and `embed.npy`, `layers.N.npy`, `norm.npy`, `logits.npy`).

use crate::model::{self, ModelArgs};
use crate::npy;
use anyhow::{bail, Context};
use kiln_runtime::llm::Session;
use std::path::{Path, PathBuf};

/// Writes the stage outputs of `ids` (from position 0) and the ids into `dir`.
pub fn dump(session: &mut Session, ids: &[u32], dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tokens: Vec<f32> = ids.iter().map(|&t| t as f32).collect();
    npy::write_f32(&dir.join("tokens.npy"), &[ids.len()], &tokens)?;
    for (name, t) in session.lm.stages(ids)? {
        let v = t.as_slice::<f32>().context("a stage output is not f32")?;
        let shape = &t.shape()[1..]; // batch 1
        npy::write_f32(&dir.join(format!("{name}.npy")), shape, v)?;
    }
    Ok(())
}

/// `kiln verify`'s flags.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The model and how to run it.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Reference dumps: a directory with `tokens.npy` and stage files, or a directory of
    /// such directories (one per prompt).
    #[arg(long = "ref", short = 'r')]
    pub reference: PathBuf,
    /// Smallest cosine similarity accepted for the logits (other stages: 0.999, the first
    /// stage 0.9999).
    #[arg(long = "min-cos", default_value_t = 0.999)]
    pub min_cos: f64,
}

/// Cosine similarity and max |difference| of two equally long vectors.
pub fn compare(a: &[f64], b: &[f64]) -> (f64, f64) {
    let (mut dot, mut na, mut nb, mut max) = (0.0, 0.0, 0.0, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
        max = max.max((x - y).abs());
    }
    let cos = if na == 0.0 && nb == 0.0 {
        1.0
    } else {
        dot / (na.sqrt() * nb.sqrt()).max(f64::MIN_POSITIVE)
    };
    (cos, max)
}

/// Runs `kiln verify`: prints cosine and max error per stage; fails if a stage is below
/// its threshold or the logits' argmax differs at some position.
pub fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if args.reference.join("tokens.npy").exists() {
        dirs.push(args.reference.clone());
    } else {
        for e in std::fs::read_dir(&args.reference)
            .with_context(|| format!("reading {}", args.reference.display()))?
        {
            let p = e?.path();
            if p.join("tokens.npy").exists() {
                dirs.push(p);
            }
        }
        dirs.sort();
    }
    if dirs.is_empty() {
        bail!(
            "no reference dumps (tokens.npy) under {}",
            args.reference.display()
        );
    }
    let mut session = model::open(&args.model)?;
    let mut failed = 0;
    for dir in &dirs {
        let tokens = npy::read(&dir.join("tokens.npy"))?;
        let ids: Vec<u32> = tokens.data.iter().map(|&t| t as u32).collect();
        println!("{} ({} tokens)", dir.display(), ids.len());
        println!("  {:<12} {:>10} {:>12}", "stage", "cosine", "max |err|");
        let stages = session.lm.stages(&ids)?;
        let n = stages.len();
        for (i, (name, t)) in stages.iter().enumerate() {
            let path = dir.join(format!("{name}.npy"));
            if !path.exists() {
                continue;
            }
            let reference = npy::read(&path)?;
            let ours: Vec<f64> = t.to_f64_vec().context("stage output")?;
            if reference.data.len() != ours.len() {
                bail!(
                    "{}: reference shape {:?}, Kiln's {:?}",
                    path.display(),
                    reference.shape,
                    t.shape()
                );
            }
            let (cos, max) = compare(&ours, &reference.data);
            let min = if i == 0 {
                0.9999
            } else if i + 1 == n {
                args.min_cos
            } else {
                0.999
            };
            let mut verdict = if cos >= min { "ok" } else { "LOW" }.to_string();
            if name == "logits" {
                let vocab = *reference.shape.last().unwrap_or(&1);
                let bad = argmax_mismatches(&ours, &reference.data, vocab);
                if !bad.is_empty() {
                    verdict = format!("argmax differs at positions {bad:?}");
                }
            }
            if verdict != "ok" {
                failed += 1;
            }
            println!("  {name:<12} {cos:>10.6} {max:>12.4e}  {verdict}");
        }
    }
    if failed > 0 {
        bail!("{failed} stage(s) disagree with the reference");
    }
    println!("all stages agree");
    Ok(())
}

/// Positions whose argmax differs.
fn argmax_mismatches(a: &[f64], b: &[f64], vocab: usize) -> Vec<usize> {
    let arg = |r: &[f64]| {
        r.iter()
            .enumerate()
            .fold(
                (0, f64::NEG_INFINITY),
                |m, (i, &v)| if v > m.1 { (i, v) } else { m },
            )
            .0
    };
    a.chunks(vocab)
        .zip(b.chunks(vocab))
        .enumerate()
        .filter(|(_, (x, y))| arg(x) != arg(y))
        .map(|(i, _)| i)
        .collect()
}
