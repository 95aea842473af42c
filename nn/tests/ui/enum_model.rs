use kiln_nn::model;

pub struct Cfg;

#[model(config = Cfg)]
pub enum M {
    A,
}

fn main() {}
