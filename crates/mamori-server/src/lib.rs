//! mamori-server: the configuration file (`mamori.toml`) and the HTTP API for the broker's
//! systems: real-time decisions, ingest, alerts, history and pivots.

pub mod app;
pub mod auth;
pub mod config;
pub mod mail;
pub mod notices;
pub mod passkeys;
pub mod people;
pub mod problem;
pub mod serve;
