//! The worker's state machine and its policies, with no I/O and no clock.
//!
//! Events go in with the time they were seen; commands come out. The same
//! code runs natively under `cargo test` and the simulations, and in wasm
//! under the driver.

pub mod backoff;
pub mod config;
pub mod error_text;
pub mod event;
pub mod machine;
pub mod retry;
pub mod time;

pub use config::{Config, ConfigError, Parsed};
pub use event::{Command, Event};
pub use machine::Worker;
pub use time::Timestamp;
