//! Edge Worker: a pgmq queue worker for Supabase Edge Functions.
//!
//! The crate has two layers. [`core`] is the worker's state machine: it
//! takes events and the current time and returns commands, and does no I/O.
//! [`driver`] is the async loop compiled to wasm: it performs the core's
//! commands through a TypeScript port (postgres.js, handlers, timers) and
//! feeds the results back as events. See `docs/architecture.md`.

pub mod core;
pub mod driver;
