use kiln_models::llama::LoadedLlama;
use kiln_runtime::llm::{CausalLm, LmOptions};
use kiln_runtime::weights::gguf::GgufFile;
use std::time::Instant;
fn main() {
    let t0 = Instant::now();
    let f = GgufFile::open(std::path::Path::new(
        "/work/models/SmolLM2-135M-Instruct.Q4_1.gguf",
    ))
    .unwrap();
    let l = LoadedLlama::from_gguf(&f, 512).unwrap();
    println!("load {:?} unused {:?}", t0.elapsed(), l.unused);
    let g = l.graphs().unwrap();
    println!("trace {:?}", t0.elapsed());
    let mut lm = CausalLm::new(
        g,
        l.weights,
        LmOptions {
            threads: 2,
            no_optimize: false,
            exact: std::env::var("EXACT").is_ok(),
        },
        &mut |s| println!("{s} {:?}", t0.elapsed()),
    )
    .unwrap();
    println!("ready {:?}", t0.elapsed());
    let prompt = [504u32, 3575, 282, 4649, 314];
    let t = Instant::now();
    let mut logits = lm.forward(&prompt).unwrap();
    println!("prompt {:?} {:?}", t.elapsed(), &logits[..8]);
    let mut out = vec![];
    let t = Instant::now();
    for _ in 0..std::env::var("N").map(|v| v.parse().unwrap()).unwrap_or(16) {
        let next = logits
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a })
            .0 as u32;
        out.push(next);
        logits = lm.forward(&[next]).unwrap();
    }
    println!("decode {:?}/tok {:?}", t.elapsed() / out.len() as u32, out);
    lm.reset();
    let all = lm.all_logits(&prompt).unwrap();
    println!("all first row {:?}", &all[..8]);
}
