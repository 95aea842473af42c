use kiln_nn::{model, Param};

pub struct Cfg;

#[model(config = Cfg)]
pub struct M<T> {
    #[param(shape = [4])]
    pub w: Param,
    #[config(None)]
    pub t: Option<T>,
}

fn main() {}
