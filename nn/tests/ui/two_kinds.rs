use kiln_nn::{model, Param};

pub struct Cfg;

#[model(config = Cfg)]
pub struct M {
    #[param(shape = [4])]
    #[buffer(shape = [4])]
    pub w: Param,
}

fn main() {}
