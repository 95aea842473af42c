//! `kiln run` (generate from a prompt, streamed) and `kiln chat` (interactive, with the
//! model's chat template).

use crate::model::{self, ModelArgs};
use crate::stages;
use anyhow::{bail, Context};
use kiln_runtime::llm::{GenerateOptions, Generation, Session};
use kiln_runtime::sampling::SamplingOptions;
use kiln_runtime::tokenizer::ChatMessage;
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// Sampling and stopping flags.
#[derive(clap::Args, Clone, Debug)]
pub struct SampleArgs {
    /// Most new tokens.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 256)]
    pub max_tokens: usize,
    /// Temperature; 0 means greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Keep the k most likely tokens (0: off).
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    /// Keep the most likely tokens up to this probability mass (1: off).
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    /// Keep tokens at least this fraction as likely as the most likely one (0: off).
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalty for tokens seen in the last `--repeat-last-n` tokens (1: off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Window of the repetition penalty (0: everything).
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep generating after end-of-generation tokens.
    #[arg(long = "ignore-eos")]
    pub ignore_eos: bool,
    /// Stop at this text (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
}

impl SampleArgs {
    /// The generation options.
    pub fn options(&self) -> GenerateOptions {
        GenerateOptions {
            max_tokens: self.max_tokens,
            sampling: SamplingOptions {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repetition_penalty: self.repeat_penalty,
                repeat_last_n: self.repeat_last_n,
                seed: self.seed,
            },
            ignore_eos: self.ignore_eos,
            stop: self.stop.clone(),
        }
    }
}

/// `kiln run`'s own flags.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The model and how to run it.
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt (default: read from stdin).
    #[arg(short = 'p', long)]
    pub prompt: Option<String>,
    /// Use the prompt as is: no chat template, BOS only if the model's metadata asks.
    #[arg(long)]
    pub raw: bool,
    /// A system message (with the chat template).
    #[arg(long)]
    pub system: Option<String>,
    /// Sampling.
    #[command(flatten)]
    pub sample: SampleArgs,
    /// Write every stage's output for the prompt (`embed`, `layers.N`, `norm`, `logits`,
    /// float32 `.npy`, plus `tokens.npy`) into this directory, for `kiln verify` or a
    /// comparison with a reference.
    #[arg(long = "dump-dir")]
    pub dump_dir: Option<PathBuf>,
    /// Print the prompt's token ids.
    #[arg(long)]
    pub verbose_prompt: bool,
}

/// The prompt's tokens: through the chat template unless `raw` (or the model has none).
pub fn prompt_tokens(
    session: &Session,
    prompt: &str,
    raw: bool,
    system: Option<&str>,
) -> anyhow::Result<Vec<u32>> {
    let tok = &session.tokenizer;
    match tok.chat_template() {
        Some(template) if !raw => {
            let mut messages = Vec::new();
            if let Some(s) = system {
                messages.push(ChatMessage {
                    role: "system".into(),
                    content: s.into(),
                });
            }
            messages.push(ChatMessage {
                role: "user".into(),
                content: prompt.into(),
            });
            let text = template.render(&messages, true)?;
            Ok(tok.encode(&text, true)?)
        }
        _ => Ok(tok.encode(prompt, true)?),
    }
}

/// Runs `kiln run`.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let prompt = match &args.prompt {
        Some(p) => p.clone(),
        None => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .context("reading the prompt from stdin")?;
            s
        }
    };
    let mut session = model::open(&args.model)?;
    let ids = prompt_tokens(&session, &prompt, args.raw, args.system.as_deref())?;
    if ids.is_empty() {
        bail!("the prompt has no tokens");
    }
    if args.verbose_prompt {
        eprintln!("kiln: prompt ids {ids:?}");
    }
    if let Some(dir) = &args.dump_dir {
        stages::dump(&mut session, &ids, dir)?;
        eprintln!("kiln: wrote stage outputs to {}", dir.display());
    }
    if args.raw {
        print!("{prompt}");
    }
    let gen = stream(&mut session, &ids, &args.sample.options())?;
    println!();
    report(&gen);
    Ok(())
}

/// Generates, printing text as it comes.
fn stream(
    session: &mut Session,
    ids: &[u32],
    options: &GenerateOptions,
) -> anyhow::Result<Generation> {
    let mut out = std::io::stdout();
    Ok(session.generate(ids, options, &mut |piece| {
        print!("{piece}");
        out.flush().is_ok()
    })?)
}

/// Prints the speeds, as llama.cpp's tools do.
fn report(g: &Generation) {
    let ms = |d: std::time::Duration, n: usize| d.as_secs_f64() * 1e3 / n.max(1) as f64;
    eprintln!(
        "kiln: prompt {} tokens in {:.1} ms ({:.1} tok/s); generated {} tokens, {:.1} ms/token ({:.1} tok/s); stop: {:?}",
        g.prompt_tokens,
        g.prompt_time.as_secs_f64() * 1e3,
        g.prompt_tok_per_s(),
        g.tokens.len(),
        ms(g.decode_time, g.tokens.len().saturating_sub(1)),
        g.decode_tok_per_s(),
        g.stop
    );
}

/// `kiln chat`'s flags.
#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    /// The model and how to run it.
    #[command(flatten)]
    pub model: ModelArgs,
    /// A system message.
    #[arg(long)]
    pub system: Option<String>,
    /// Sampling.
    #[command(flatten)]
    pub sample: SampleArgs,
}

/// Runs `kiln chat`: reads user turns from stdin (`/reset` clears the conversation,
/// `/exit` or end of input quits); the whole conversation goes through the template each
/// turn and the cached prefix is reused.
pub fn chat(args: &ChatArgs) -> anyhow::Result<()> {
    let mut session = model::open(&args.model)?;
    if session.tokenizer.chat_template().is_none() {
        let why = session
            .tokenizer
            .chat_template_error()
            .map_or_else(|| "it has none".to_string(), |e| e.to_string());
        bail!("this model's chat template cannot be used ({why}); use `kiln run --raw`");
    }
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(ChatMessage {
            role: "system".into(),
            content: s.clone(),
        });
    }
    let base = messages.len();
    eprintln!("kiln: chat — type a message; /reset clears, /exit quits");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\n', '\r']);
        match line.trim() {
            "/exit" | "/quit" => break,
            "/reset" => {
                messages.truncate(base);
                session.reset();
                continue;
            }
            "" => continue,
            _ => {}
        }
        messages.push(ChatMessage {
            role: "user".into(),
            content: line.to_string(),
        });
        let tok = &session.tokenizer;
        let template = tok.chat_template().expect("checked above");
        let ids = tok.encode(&template.render(&messages, true)?, true)?;
        let gen = stream(&mut session, &ids, &args.sample.options())?;
        println!();
        report(&gen);
        messages.push(ChatMessage {
            role: "assistant".into(),
            content: gen.text.trim().to_string(),
        });
    }
    Ok(())
}
