use kiln_nn::{model, Param};

pub struct Cfg;

#[model(config = Cfg)]
pub struct M {
    #[param(shape = [4])]
    pub weight: Param,
    #[param(shape = [4], name = "weight")]
    pub other: Param,
}

fn main() {}
