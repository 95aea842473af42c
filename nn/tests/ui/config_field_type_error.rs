use kiln_nn::{model, Param};

pub struct Cfg {
    pub eps: f64,
}

#[model(config = Cfg)]
pub struct M {
    #[param(shape = [4])]
    pub w: Param,
    #[config(cfg.eps)]
    pub eps: usize,
}

fn main() {}
