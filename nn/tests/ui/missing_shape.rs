use kiln_nn::{model, Param};

pub struct Cfg;

#[model(config = Cfg)]
pub struct M {
    #[param(dtype = kiln_ir::DType::F16)]
    pub w: Param,
}

fn main() {}
