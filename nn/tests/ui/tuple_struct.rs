use kiln_nn::{model, Param};

pub struct Cfg;

#[model(config = Cfg)]
pub struct M(Param);

fn main() {}
