use kiln_nn::{model, Param};

pub struct Cfg;

#[model(config = Cfg)]
pub struct M {
    #[param(shape = [4], init = 0)]
    pub w: Param,
}

fn main() {}
