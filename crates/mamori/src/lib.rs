//! The `mamori` command line: reading event files, importing, investigating from the store or
//! straight from files, pivots, the simulator's demo and evaluation. `main.rs` only parses
//! arguments and calls [`cli::run`].

pub mod cli;
pub mod consume;
pub mod demo;
pub mod files;
pub mod import;
pub mod loadtest;
pub mod monitor;
pub mod people;
pub mod render;
pub mod serve;
pub mod source;
