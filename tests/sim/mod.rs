//! A deterministic simulation of workers, a pgmq database and a clock,
//! driving the real core through seeded random schedules.
//!
//! [`world::run`] plays the schedule of one seed and returns the invariants
//! it broke. Nothing reads a wall clock, spawns a thread or iterates a hash
//! map, so a seed replays exactly.

pub mod clock;
pub mod db;
pub mod faults;
pub mod host;
pub mod invariants;
pub mod link;
pub mod trace;
pub mod world;
