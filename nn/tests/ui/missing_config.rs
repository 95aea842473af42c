use kiln_nn::{model, Param};

#[model]
pub struct M {
    #[param(shape = [4])]
    pub w: Param,
}

fn main() {}
