use kiln_nn::model;

pub struct Cfg;

#[model(config = Cfg)]
pub struct M {
    #[param(shape = [4])]
    pub w: f32,
}

fn main() {}
