//! What clients make the broker hold in memory, against its limits: queued
//! messages (counted by `Persistence`) and messages still arriving in
//! several frames (counted here, by [`AssemblyCharge`]s).
//!
//! The two together are compared with the high-water mark: at it,
//! producers are held back (no credit, no window for a message in
//! assembly); past 1.25 times it, messages are refused. Messages in
//! assembly are also capped on their own, so that clients streaming large
//! messages slowly cannot hold more than the cap between them.
//!
//! So that the mark holds producers back rather than their messages being
//! refused, the credit producers get is sized by the room left: all the
//! producers' credit together, at the average message size, covers at most
//! an eighth of the room below the mark, half the margin between the mark
//! and the refusals; whatever is in flight when the mark is reached fits
//! in that margin. Far below the mark that is the configured credit.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// Memory held for clients against the high-water mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MemoryLevel {
    /// Below the mark.
    Normal = 0,
    /// At or past it: producers get no more credit.
    Blocked = 1,
    /// Past 1.25 times it: messages are refused.
    Full = 2,
}

/// The gauge: the limits, the bytes in assembly, and the level last seen.
#[derive(Debug, Default)]
pub struct MemoryGauge {
    /// Bytes held past which producers are held back (0: never).
    high_watermark: AtomicU64,
    /// Bytes of messages in assembly allowed at once (0: the high-water
    /// mark; both 0: no cap).
    max_assembly: AtomicU64,
    /// Bytes of messages in assembly now, on every connection.
    assembly: AtomicU64,
    /// The level last reported, so that changes are logged once.
    level: AtomicU8,
    /// Producer links that are granted credit.
    producers: AtomicU64,
    /// A moving average of the sizes of messages received, in bytes (0:
    /// none yet, taken as [`FIRST_MESSAGE_SIZE`]).
    message_size: AtomicU64,
}

/// The message size assumed before any arrived: large enough that early
/// producers do not get credit for more than the room.
const FIRST_MESSAGE_SIZE: u64 = 64 * 1024;

impl MemoryGauge {
    /// Sets the high-water mark in bytes (0: none).
    pub fn set_high_watermark(&self, bytes: u64) {
        self.high_watermark.store(bytes, Ordering::Relaxed);
    }

    /// Sets the cap on bytes in assembly (0: the high-water mark).
    pub fn set_max_assembly(&self, bytes: u64) {
        self.max_assembly.store(bytes, Ordering::Relaxed);
    }

    /// Bytes of messages in assembly now.
    pub fn assembly(&self) -> u64 {
        self.assembly.load(Ordering::Relaxed)
    }

    /// The cap on bytes in assembly (0: none).
    fn assembly_cap(&self) -> u64 {
        match self.max_assembly.load(Ordering::Relaxed) {
            0 => self.high_watermark.load(Ordering::Relaxed),
            cap => cap,
        }
    }

    /// The level with `queued` bytes of queued messages in memory (logged
    /// when it changes).
    pub fn level(&self, queued: u64) -> MemoryLevel {
        let mark = self.high_watermark.load(Ordering::Relaxed);
        if mark == 0 {
            return MemoryLevel::Normal;
        }
        let held = queued.saturating_add(self.assembly());
        let level = if held >= mark.saturating_add(mark / 4) {
            MemoryLevel::Full
        } else if held >= mark {
            MemoryLevel::Blocked
        } else {
            MemoryLevel::Normal
        };
        let before = self.level.swap(level as u8, Ordering::Relaxed);
        if before != level as u8 {
            let assembly = self.assembly();
            if level == MemoryLevel::Normal {
                tracing::info!(
                    queued,
                    assembly,
                    high_watermark = mark,
                    "memory below the high-water mark: producers get credit again"
                );
            } else {
                tracing::warn!(
                    queued,
                    assembly,
                    high_watermark = mark,
                    ?level,
                    "memory high-water mark reached: producers are held back"
                );
            }
        }
        level
    }

    /// Counts a received message's size in the moving average (a sixteenth
    /// of each new size).
    pub fn observe_message(&self, size: u64) {
        let avg = match self.message_size.load(Ordering::Relaxed) {
            0 => size,
            avg => avg - avg / 16 + size / 16,
        };
        self.message_size.store(avg.max(1), Ordering::Relaxed);
    }

    /// The credit to grant a producer, at most `max`, with `queued` bytes
    /// of queued messages in memory (see the module's doc); at least 1.
    pub fn producer_credit(&self, queued: u64, max: u32) -> u32 {
        let mark = self.high_watermark.load(Ordering::Relaxed);
        if mark == 0 {
            return max;
        }
        let room = mark.saturating_sub(queued.saturating_add(self.assembly()));
        let size = match self.message_size.load(Ordering::Relaxed) {
            0 => FIRST_MESSAGE_SIZE,
            size => size,
        };
        let producers = self.producers.load(Ordering::Relaxed).max(1);
        let each = room / 8 / size.saturating_mul(producers).max(1);
        u32::try_from(each).unwrap_or(u32::MAX).clamp(1, max.max(1))
    }

    /// Registers a producer link for credit sizing, until the share drops.
    pub fn producer(self: &Arc<Self>) -> ProducerShare {
        self.producers.fetch_add(1, Ordering::Relaxed);
        ProducerShare {
            gauge: Arc::clone(self),
        }
    }

    /// A charge for one message in assembly, holding nothing yet.
    pub fn charge(self: &Arc<Self>) -> AssemblyCharge {
        AssemblyCharge {
            gauge: Arc::clone(self),
            bytes: 0,
        }
    }
}

/// The bytes one message in assembly holds, counted in the gauge until the
/// charge is dropped (the message completed, was aborted or refused, or
/// its link, session or connection went).
#[derive(Debug)]
pub struct AssemblyCharge {
    /// The gauge counting it.
    gauge: Arc<MemoryGauge>,
    /// Bytes counted.
    bytes: u64,
}

impl AssemblyCharge {
    /// Counts the message at `bytes` (what its buffer holds now), unless
    /// that would take the bytes in assembly past the cap: then nothing
    /// changes and the answer is false.
    pub fn resize(&mut self, bytes: u64) -> bool {
        let gauge = &self.gauge;
        if bytes <= self.bytes {
            gauge
                .assembly
                .fetch_sub(self.bytes - bytes, Ordering::Relaxed);
            self.bytes = bytes;
            return true;
        }
        let more = bytes - self.bytes;
        let cap = gauge.assembly_cap();
        let grown = gauge
            .assembly
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                let next = now.saturating_add(more);
                (cap == 0 || next <= cap).then_some(next)
            });
        if grown.is_err() {
            return false;
        }
        self.bytes = bytes;
        true
    }

    /// Bytes counted.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for AssemblyCharge {
    fn drop(&mut self) {
        self.gauge.assembly.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A producer link's share of the room below the mark, counted in the
/// gauge until dropped with the link.
#[derive(Debug)]
pub struct ProducerShare {
    /// The gauge counting it.
    gauge: Arc<MemoryGauge>,
}

impl Drop for ProducerShare {
    fn drop(&mut self) {
        self.gauge.producers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembly_counts_towards_the_level_and_is_capped() {
        let gauge = Arc::new(MemoryGauge::default());
        gauge.set_high_watermark(1000);
        let mut a = gauge.charge();
        let mut b = gauge.charge();
        assert!(a.resize(600));
        assert_eq!(gauge.level(0), MemoryLevel::Normal);
        assert_eq!(gauge.level(400), MemoryLevel::Blocked);
        assert_eq!(gauge.level(650), MemoryLevel::Full);
        // The cap (the mark by default) holds for all charges together.
        assert!(!b.resize(500));
        assert!(b.resize(400));
        assert_eq!(gauge.assembly(), 1000);
        assert!(a.resize(100), "shrinking always fits");
        drop(b);
        assert_eq!(gauge.assembly(), 100);
        drop(a);
        assert_eq!(gauge.assembly(), 0);
        gauge.set_max_assembly(50);
        assert!(!gauge.charge().resize(51));
    }

    #[test]
    fn producer_credit_shrinks_with_the_room_and_the_producers() {
        let gauge = Arc::new(MemoryGauge::default());
        assert_eq!(
            gauge.producer_credit(0, 1000),
            1000,
            "no mark: as configured"
        );
        gauge.set_high_watermark(64 << 20);
        let one = gauge.producer();
        // Nothing seen yet: 64 KiB messages assumed; 8 MiB / 64 KiB.
        assert_eq!(gauge.producer_credit(0, 1000), 128);
        for _ in 0..100 {
            gauge.observe_message(1024);
        }
        assert_eq!(gauge.producer_credit(0, 1000), 1000, "small messages");
        for _ in 0..200 {
            gauge.observe_message(64 * 1024);
        }
        let shares: Vec<_> = (0..15).map(|_| gauge.producer()).collect();
        let each = gauge.producer_credit(0, 1000);
        assert!((7..=9).contains(&each), "16 producers share 8 MiB: {each}");
        assert_eq!(gauge.producer_credit(63 << 20, 1000), 1, "near the mark: 1");
        drop(shares);
        drop(one);
        assert!(gauge.producer_credit(0, 1000) > 100);
    }

    #[test]
    fn no_mark_means_no_level_and_no_cap() {
        let gauge = Arc::new(MemoryGauge::default());
        let mut a = gauge.charge();
        assert!(a.resize(u64::MAX / 2));
        assert_eq!(gauge.level(u64::MAX / 2), MemoryLevel::Normal);
    }
}
