//! The simulated clock: one queue of everything that is due, in time order.
//!
//! Time only moves when the next item is taken, and jumps straight to it.
//! Items due at the same millisecond come out in the order they were
//! scheduled, so a run depends on nothing but its seed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use edge_worker::core::Timestamp;

/// Where every simulation starts: an ordinary epoch time, so that the core
/// sees realistic timestamps.
pub const EPOCH: Timestamp = Timestamp::from_millis(1_750_000_000_000);

/// How far into the simulation `t` is.
pub fn elapsed(t: Timestamp) -> Duration {
    EPOCH.until(t)
}

/// A time-ordered queue of items of type `T` and the current time.
///
/// The heap holds only `(time, order, slot)`; items wait in `slots`, so
/// that reordering the heap moves three numbers instead of an item.
pub struct Scheduler<T> {
    now: Timestamp,
    heap: BinaryHeap<Reverse<(Timestamp, u64, usize)>>,
    slots: Vec<Option<T>>,
    free: Vec<usize>,
    scheduled: u64,
}

impl<T> Scheduler<T> {
    /// An empty schedule whose clock reads `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: start,
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            scheduled: 0,
        }
    }

    /// The current simulated time.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Schedules `item` at `at`; a time in the past means now.
    pub fn at(&mut self, at: Timestamp, item: T) {
        self.scheduled += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(item);
                slot
            }
            None => {
                self.slots.push(Some(item));
                self.slots.len() - 1
            }
        };
        self.heap
            .push(Reverse((at.max(self.now), self.scheduled, slot)));
    }

    /// Schedules `item` `delay` from now.
    pub fn after(&mut self, delay: Duration, item: T) {
        self.at(self.now + delay, item);
    }

    /// Takes the earliest item (among equal times, the earliest scheduled)
    /// and moves the clock to its time.
    pub fn next(&mut self) -> Option<T> {
        let Reverse((at, _, slot)) = self.heap.pop()?;
        self.now = at;
        self.free.push(slot);
        self.slots[slot].take()
    }
}
