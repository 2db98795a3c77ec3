//! mamori-server: the configuration file (`mamori.toml`) and, built on it, the HTTP API.

pub mod config;
