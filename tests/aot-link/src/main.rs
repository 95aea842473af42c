//! Runs the linked kernels alone (no JIT in this program): `kiln-aot-link-test [N]` prints
//! each output as `name: bits...` (hexadecimal bit patterns of its elements).

use kiln_aot_link_test::{inputs, params, run_aot, tensor_bytes};
use kiln_ir::Bindings;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("N is a number"))
        .unwrap_or(5);
    let params = params();
    let inputs = inputs(n);
    let p: Vec<_> = params.iter().map(|(k, t)| (*k, t)).collect();
    let i: Vec<_> = inputs.iter().map(|(k, t)| (*k, t)).collect();
    let out = run_aot(&p, &i, &Bindings::new().with("n", n as i64), 1).expect("the model runs");
    for (name, t) in out {
        let hex: String = tensor_bytes(&t)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        println!("{name}: {hex}");
    }
}
