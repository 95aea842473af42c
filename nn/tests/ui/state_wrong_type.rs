use kiln_nn::{model, Param};

pub struct Cfg;

#[model(config = Cfg)]
pub struct M {
    #[state(shape = [4])]
    pub cache: Param,
}

fn main() {}
