//! Idempotent producers of a partition: for each producer id, its epoch and the sequence
//! numbers of its recent batches. A leader uses it to drop a batch it already has (a retry
//! after a lost answer or a leader change) and answer with the offsets it got, and to refuse
//! a batch that would leave a gap; every replica keeps it as it appends, so a new leader
//! knows what the old one had.
//!
//! Snapshots (`producer-state` in the partition directory) are written at rolls, checkpoints
//! and shutdown; at start-up the batches after the snapshot are read to bring it up to date.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Batches remembered per producer: more than one request's worth of retries.
pub const RECENT_BATCHES: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BatchSequence {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProducerEntry {
    pub epoch: i16,
    pub recent: VecDeque<BatchSequence>,
    /// The largest timestamp of the producer's last batch; -1 when not known (snapshots
    /// written before it was kept).
    #[serde(default = "no_timestamp")]
    pub last_timestamp: i64,
}

fn no_timestamp() -> i64 {
    -1
}

/// A producer with batches in the log, as DescribeProducers shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp: i64,
}

/// What a leader does with a producer's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceCheck {
    Append,
    /// Already in the log at these offsets.
    Duplicate {
        first_offset: i64,
        last_offset: i64,
    },
    /// Already in the log, too long ago to know where.
    DuplicateUnknown,
    OutOfOrder {
        expected: i32,
        found: i32,
    },
    Fenced {
        current: i16,
        found: i16,
    },
}

/// The sequence after `seq`; sequences wrap from i32::MAX to 0.
pub(crate) fn next_sequence(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

/// The last sequence of a batch of `count` records starting at `first`.
pub(crate) fn last_sequence(first: i32, count: i32) -> i32 {
    ((i64::from(first) + i64::from(count) - 1) % (i64::from(i32::MAX) + 1)) as i32
}

/// True when `seq` comes at or before `last` (within half the sequence space).
fn at_or_before(seq: i32, last: i32) -> bool {
    (i64::from(last) - i64::from(seq)).rem_euclid(i64::from(i32::MAX) + 1) < (1 << 30)
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    /// The state covers batches below this offset.
    offset: i64,
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerState {
    /// Checks a batch against what the producer sent before. `pending` is what earlier
    /// batches of the same request will record: (epoch, last sequence).
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
        pending: Option<(i16, i32)>,
    ) -> SequenceCheck {
        if producer_id < 0 {
            return SequenceCheck::Append;
        }
        let entry = self.producers.get(&producer_id);
        let known =
            pending.or_else(|| entry.and_then(|e| e.recent.back().map(|b| (e.epoch, b.last_seq))));
        let Some((current_epoch, last)) = known else {
            // A producer we know nothing of (new, or its state was lost): start tracking.
            return SequenceCheck::Append;
        };
        if epoch < current_epoch {
            return SequenceCheck::Fenced {
                current: current_epoch,
                found: epoch,
            };
        }
        if epoch > current_epoch {
            return if first_seq == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::OutOfOrder {
                    expected: 0,
                    found: first_seq,
                }
            };
        }
        if pending.is_none()
            && let Some(batch) = entry.and_then(|e| {
                e.recent
                    .iter()
                    .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
            })
        {
            return SequenceCheck::Duplicate {
                first_offset: batch.first_offset,
                last_offset: batch.last_offset,
            };
        }
        let expected = next_sequence(last);
        if first_seq == expected {
            SequenceCheck::Append
        } else if pending.is_none() && at_or_before(first_seq, last) {
            SequenceCheck::DuplicateUnknown
        } else {
            SequenceCheck::OutOfOrder {
                expected,
                found: first_seq,
            }
        }
    }

    /// Records the appended batch `header` describes (with its offsets assigned).
    pub fn record_batch(&mut self, header: &crate::record::BatchHeader<'_>) {
        self.record_at(
            header.max_timestamp(),
            header.producer_id(),
            header.producer_epoch(),
            BatchSequence {
                first_seq: header.base_sequence(),
                last_seq: last_sequence(header.base_sequence(), header.records_count()),
                first_offset: header.base_offset(),
                last_offset: header.last_offset(),
            },
        );
    }

    /// Records an appended batch (leaders after checking, followers as they copy).
    #[cfg(test)]
    pub fn record(&mut self, producer_id: i64, epoch: i16, batch: BatchSequence) {
        self.record_at(-1, producer_id, epoch, batch);
    }

    /// Records an appended batch whose largest timestamp is `timestamp`.
    fn record_at(&mut self, timestamp: i64, producer_id: i64, epoch: i16, batch: BatchSequence) {
        if producer_id < 0 {
            return;
        }
        let entry = self.producers.entry(producer_id).or_default();
        entry.last_timestamp = timestamp;
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.recent.clear();
        }
        if entry.recent.len() == RECENT_BATCHES {
            entry.recent.pop_front();
        }
        entry.recent.push_back(batch);
    }

    /// Forgets batches at or after `end_offset` (the log was truncated there). A producer
    /// left with none is forgotten: unknown is safer than wrong.
    pub fn truncate(&mut self, end_offset: i64) {
        self.producers.retain(|_, entry| {
            entry.recent.retain(|b| b.first_offset < end_offset);
            !entry.recent.is_empty()
        });
    }

    /// The producers with batches in the log, by producer id.
    pub fn active(&self) -> Vec<ActiveProducer> {
        let mut active: Vec<ActiveProducer> = self
            .producers
            .iter()
            .filter_map(|(&producer_id, entry)| {
                Some(ActiveProducer {
                    producer_id,
                    epoch: entry.epoch,
                    last_sequence: entry.recent.back()?.last_seq,
                    last_timestamp: entry.last_timestamp,
                })
            })
            .collect();
        active.sort_by_key(|p| p.producer_id);
        active
    }

    pub fn clear(&mut self) {
        self.producers.clear();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn to_snapshot(&self, offset: i64) -> Vec<u8> {
        serde_json::to_vec(&Snapshot {
            offset,
            producers: self.producers.clone(),
        })
        .unwrap_or_default()
    }

    /// A snapshot's state and the offset it covers up to.
    pub fn from_snapshot(bytes: &[u8]) -> Option<(Self, i64)> {
        let snapshot: Snapshot = serde_json::from_slice(bytes).ok()?;
        Some((
            Self {
                producers: snapshot.producers,
            },
            snapshot.offset,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first_seq: i32, last_seq: i32, first_offset: i64) -> BatchSequence {
        BatchSequence {
            first_seq,
            last_seq,
            first_offset,
            last_offset: first_offset + i64::from(last_seq - first_seq),
        }
    }

    #[test]
    fn sequences_continue_retries_are_recognised_and_gaps_refused() {
        let mut state = ProducerState::default();
        assert_eq!(state.check(7, 0, 0, 9, None), SequenceCheck::Append);
        state.record(7, 0, batch(0, 9, 100));
        assert_eq!(state.check(7, 0, 10, 19, None), SequenceCheck::Append);
        state.record(7, 0, batch(10, 19, 110));
        assert_eq!(
            state.check(7, 0, 10, 19, None),
            SequenceCheck::Duplicate {
                first_offset: 110,
                last_offset: 119
            }
        );
        assert_eq!(
            state.check(7, 0, 0, 9, None),
            SequenceCheck::Duplicate {
                first_offset: 100,
                last_offset: 109
            }
        );
        assert_eq!(
            state.check(7, 0, 25, 30, None),
            SequenceCheck::OutOfOrder {
                expected: 20,
                found: 25
            }
        );
        assert_eq!(
            state.check(7, 0, 20, 29, Some((0, 29))),
            SequenceCheck::OutOfOrder {
                expected: 30,
                found: 20
            }
        );
        assert_eq!(
            state.check(7, 0, 30, 39, Some((0, 29))),
            SequenceCheck::Append
        );
    }

    #[test]
    fn older_epochs_are_fenced_and_a_new_epoch_starts_at_zero() {
        let mut state = ProducerState::default();
        state.record(7, 3, batch(0, 4, 0));
        assert_eq!(
            state.check(7, 2, 5, 9, None),
            SequenceCheck::Fenced {
                current: 3,
                found: 2
            }
        );
        assert_eq!(
            state.check(7, 4, 5, 9, None),
            SequenceCheck::OutOfOrder {
                expected: 0,
                found: 5
            }
        );
        assert_eq!(state.check(7, 4, 0, 4, None), SequenceCheck::Append);
    }

    #[test]
    fn batches_older_than_what_is_remembered_are_duplicates_without_offsets() {
        let mut state = ProducerState::default();
        for i in 0..(RECENT_BATCHES as i32 + 10) {
            state.record(1, 0, batch(i * 10, i * 10 + 9, i64::from(i) * 10));
        }
        assert_eq!(
            state.check(1, 0, 0, 9, None),
            SequenceCheck::DuplicateUnknown
        );
    }

    #[test]
    fn sequences_wrap_around() {
        assert_eq!(next_sequence(i32::MAX), 0);
        assert_eq!(last_sequence(i32::MAX - 1, 3), 0);
        let mut state = ProducerState::default();
        state.record(
            1,
            0,
            BatchSequence {
                first_seq: i32::MAX - 4,
                last_seq: i32::MAX,
                first_offset: 0,
                last_offset: 4,
            },
        );
        assert_eq!(state.check(1, 0, 0, 9, None), SequenceCheck::Append);
        assert_eq!(
            state.check(1, 0, i32::MAX - 2, i32::MAX, None),
            SequenceCheck::DuplicateUnknown
        );
    }

    #[test]
    fn unknown_producers_and_non_idempotent_batches_are_appended() {
        let state = ProducerState::default();
        assert_eq!(state.check(-1, -1, -1, -1, None), SequenceCheck::Append);
        assert_eq!(state.check(99, 0, 500, 509, None), SequenceCheck::Append);
    }

    #[test]
    fn truncation_forgets_later_batches_and_empty_producers() {
        let mut state = ProducerState::default();
        state.record(1, 0, batch(0, 9, 0));
        state.record(1, 0, batch(10, 19, 10));
        state.record(2, 0, batch(0, 9, 20));
        state.truncate(10);
        assert_eq!(state.check(1, 0, 10, 19, None), SequenceCheck::Append);
        assert_eq!(state.len(), 1);
        let (restored, offset) = ProducerState::from_snapshot(&state.to_snapshot(10)).unwrap();
        assert_eq!((restored, offset), (state, 10));
    }

    #[test]
    fn active_producers_show_their_epoch_last_sequence_and_time() {
        let mut state = ProducerState::default();
        state.record_at(1_000, 9, 0, batch(0, 9, 0));
        state.record_at(2_000, 4, 1, batch(0, 4, 10));
        state.record_at(3_000, 9, 0, batch(10, 19, 15));
        let active = |producer_id, epoch, last_sequence, last_timestamp| ActiveProducer {
            producer_id,
            epoch,
            last_sequence,
            last_timestamp,
        };
        assert_eq!(
            state.active(),
            [active(4, 1, 4, 2_000), active(9, 0, 19, 3_000)]
        );
        let (restored, _) = ProducerState::from_snapshot(&state.to_snapshot(25)).unwrap();
        assert_eq!(restored.active(), state.active());
    }

    #[test]
    fn snapshots_from_before_producer_times_were_kept_still_load() {
        let old = br#"{"offset":20,"producers":{"7":{"epoch":2,"recent":[{"first_seq":0,"last_seq":9,"first_offset":10,"last_offset":19}]}}}"#;
        let (state, offset) = ProducerState::from_snapshot(old).unwrap();
        assert_eq!(offset, 20);
        assert_eq!(state.active()[0].last_timestamp, -1);
        assert_eq!(state.check(7, 2, 10, 12, None), SequenceCheck::Append);
    }
}
