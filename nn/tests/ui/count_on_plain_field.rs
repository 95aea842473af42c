use kiln_nn::layers::{Linear, LinearConfig};
use kiln_nn::model;

pub struct Cfg {
    pub n: usize,
}

#[model(config = Cfg)]
pub struct M {
    #[module(config = LinearConfig::new(4, 4), count = cfg.n)]
    pub layer: Linear,
}

fn main() {}
