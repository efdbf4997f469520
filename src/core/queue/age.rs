//! The age of a queue's oldest waiting message, without a timestamp in
//! every entry: the queue samples (arrival order, time) at most once a
//! second as messages arrive, so a message's arrival is known to within the
//! sampling gap. The samples older than every live message are forgotten;
//! if many remain, every other one is, coarsening old arrivals only.

use std::collections::VecDeque;

use super::QueueState;

/// Samples kept before the oldest are pruned or thinned.
const MAX_SAMPLES: usize = 256;
/// Time between samples (ms).
const SAMPLE_EVERY: u64 = 1_000;

/// Arrival samples: (arrival order, ms since the epoch), both increasing.
#[derive(Debug, Default)]
pub(super) struct Arrivals {
    samples: VecDeque<(u64, u64)>,
}

impl Arrivals {
    /// Message `seq` arrives at `now`. Returns true when the samples need
    /// pruning (see [`QueueState::prune_arrivals`]).
    pub(super) fn note(&mut self, seq: u64, now: u64) -> bool {
        match self.samples.back() {
            Some(&(last_seq, at)) if now < at + SAMPLE_EVERY || seq <= last_seq => false,
            _ => {
                self.samples.push_back((seq, now));
                self.samples.len() > MAX_SAMPLES
            }
        }
    }

    /// When message `seq` arrived, at the latest: the time of the last
    /// sample at or before it.
    pub(super) fn arrived(&self, seq: u64) -> Option<u64> {
        let after = self.samples.partition_point(|&(s, _)| s <= seq);
        match after {
            0 => self.samples.front().map(|&(_, at)| at),
            n => Some(self.samples[n - 1].1),
        }
    }

    /// Forgets samples no message at or after `oldest` needs; thins the
    /// rest if there are still too many.
    fn prune(&mut self, oldest: Option<u64>) {
        match oldest {
            None => self.samples.clear(),
            Some(oldest) => {
                while self.samples.len() >= 2 && self.samples[1].0 <= oldest {
                    self.samples.pop_front();
                }
            }
        }
        if self.samples.len() > MAX_SAMPLES / 2 {
            let kept: VecDeque<(u64, u64)> = self
                .samples
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 2 == 0 || *i + 1 == self.samples.len())
                .map(|(_, s)| *s)
                .collect();
            self.samples = kept;
        }
    }
}

impl QueueState {
    /// Records that message `seq` arrived now.
    pub(super) fn note_arrival(&mut self, seq: u64) {
        if self.arrivals.note(seq, self.now) {
            self.prune_arrivals();
        }
    }

    /// Forgets arrival samples older than every message still here
    /// (waiting, scheduled or being delivered).
    fn prune_arrivals(&mut self) {
        let oldest = self.oldest_seq();
        self.arrivals.prune(oldest);
    }

    /// The arrival order of the oldest message still here.
    fn oldest_seq(&self) -> Option<u64> {
        let waiting = self.oldest_waiting_seq();
        let unacked = self.unacked.values().map(|u| u.entry.seq).min();
        let scheduled = self.schedule.waiting.keys().map(|&(_, seq)| seq).min();
        [waiting, unacked, scheduled].into_iter().flatten().min()
    }

    /// The arrival order of the oldest message waiting for a consumer.
    fn oldest_waiting_seq(&self) -> Option<u64> {
        self.oldest().map(|(key, _)| key.1)
    }

    /// How long the oldest message waiting for a consumer (not being
    /// delivered, not scheduled for later) has been in the queue, in ms.
    pub fn oldest_age(&self) -> Option<u64> {
        let seq = self.oldest_waiting_seq()?;
        self.arrivals
            .arrived(seq)
            .map(|at| self.now.saturating_sub(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_arrival_is_the_sample_at_or_before_it() {
        let mut a = Arrivals::default();
        a.note(0, 10_000);
        a.note(1, 10_500); // within the second: no sample
        a.note(2, 11_200);
        a.note(3, 13_000);
        assert_eq!(a.arrived(0), Some(10_000));
        assert_eq!(a.arrived(1), Some(10_000));
        assert_eq!(a.arrived(2), Some(11_200));
        assert_eq!(a.arrived(9), Some(13_000));
    }

    #[test]
    fn pruning_keeps_what_live_messages_need_and_bounds_the_samples() {
        let mut a = Arrivals::default();
        for i in 0..1000u64 {
            if a.note(i, i * 1000) {
                a.prune(Some(0));
            }
        }
        assert!(a.samples.len() <= MAX_SAMPLES);
        // The oldest message's arrival is still exact; later ones coarsen.
        assert_eq!(a.arrived(0), Some(0));
        assert!(a.arrived(999).unwrap() <= 999_000);
        a.prune(Some(990));
        assert!(a.arrived(995).unwrap() <= 995_000);
        a.prune(None);
        assert_eq!(a.arrived(5), None);
    }
}
