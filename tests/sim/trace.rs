//! An optional record of what a schedule did, for replaying a failing seed.
//!
//! Off in the sweep (formatting every step would dominate its cost); on when
//! a single seed is replayed. Lines are built only when it is on.

use edge_worker::core::Timestamp;

use super::clock::elapsed;

/// The lines of one run, if tracing.
#[derive(Debug, Default)]
pub struct Trace {
    lines: Option<Vec<String>>,
}

impl Trace {
    /// A trace that records (`on`) or ignores everything.
    pub fn new(on: bool) -> Self {
        Self {
            lines: on.then(Vec::new),
        }
    }

    /// Records the line `line()` returns, stamped with `now`.
    pub fn line(&mut self, now: Timestamp, line: impl FnOnce() -> String) {
        if let Some(lines) = &mut self.lines {
            let ms = elapsed(now).as_millis();
            lines.push(format!("{ms:>9} {}", line()));
        }
    }

    /// Everything recorded, oldest first.
    pub fn lines(&self) -> &[String] {
        self.lines.as_deref().unwrap_or_default()
    }
}
