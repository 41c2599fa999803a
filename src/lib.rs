mod binding;
pub mod core;
