//! The webhooks service library: every Lambda binary, the local server and the CLI link it.

pub mod api;
mod app;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod events;
pub mod manage;
pub mod queue;
pub mod signing;
pub mod store;
pub mod telemetry;

pub use app::{App, Needs, sender_from_env};
pub use config::Config;
