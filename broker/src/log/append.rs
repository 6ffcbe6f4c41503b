//! Appending to a log: as leader (validate, check producer sequences, assign offsets) and as
//! follower (keep the leader's offsets). Both write through the same runs and rolls, and
//! both keep the leader-epoch cache and producer state in step with what reached the file.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::producer_state::{SequenceCheck, last_sequence};
use super::segment::{AppendFailure, Segment};
use super::{AppendInfo, Log, LogConfig, LogError, LogState};
use crate::record::{self, BatchError, BatchHeader, HEADER_LEN, TimestampType};

/// A batch ready to be written: its header as it will be stored and the rest of its bytes.
struct Staged<'a> {
    header: [u8; HEADER_LEN],
    rest: &'a [u8],
}

/// Batches waiting to be written to the active segment with one vectored write.
#[derive(Default)]
struct Run<'a> {
    batches: Vec<(&'a [u8; HEADER_LEN], &'a [u8])>,
    bytes: u64,
    records: u64,
    /// The log end once the run is written.
    end: i64,
}

/// What a leader does with each batch of a request.
enum Plan {
    Write,
    /// Already in the log (a retry): answer with where it is.
    Duplicate(i64, i64),
}

impl Log {
    /// Validates the batches in `records` as a leader receives them from a producer, checks
    /// idempotent producers' sequences, gives new batches offsets and appends them. Nothing is
    /// written unless every batch is acceptable. Batches already in the log (retries) are
    /// not written again; the answer carries where they are.
    pub fn append_as_leader(
        &self,
        records: &Bytes,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        if self.is_offline() {
            return Err(LogError::Offline {
                partition: self.partition.clone(),
            });
        }
        let config = self.config();
        if records.is_empty() {
            return Err(BatchError::Empty.into());
        }
        let mut batches = Vec::new();
        let mut position = 0;
        while position < records.len() {
            let info = record::validate_produced(&records[position..], config.max_message_bytes)?;
            batches.push((position, info));
            position += info.len;
        }
        let log_append_time =
            (config.timestamp_type == TimestampType::LogAppendTime).then_some(now_ms);
        // LogAppendTime changes bytes the CRC covers, so those batches are copied once.
        let restamped: Vec<Vec<u8>> = match log_append_time {
            Some(time) => batches
                .iter()
                .map(|(at, info)| {
                    let mut copy = records[*at..*at + info.len].to_vec();
                    record::set_log_append_time(&mut copy, time);
                    copy
                })
                .collect(),
            None => Vec::new(),
        };
        let batch_bytes = |i: usize| -> &[u8] {
            match log_append_time {
                Some(_) => &restamped[i],
                None => &records[batches[i].0..batches[i].0 + batches[i].1.len],
            }
        };

        let mut state = self.state.write();
        self.check_writable()?;
        // Decide every batch before writing any.
        let mut pending: HashMap<i64, (i16, i32)> = HashMap::new();
        let mut plans = Vec::with_capacity(batches.len());
        for (_, info) in &batches {
            let last_seq = last_sequence(info.base_sequence, info.records_count);
            let pid = info.producer_id;
            let check = state.producers.check(
                pid,
                info.producer_epoch,
                info.base_sequence,
                last_seq,
                pending.get(&pid).copied(),
            );
            plans.push(match check {
                SequenceCheck::Append => {
                    if pid >= 0 {
                        pending.insert(pid, (info.producer_epoch, last_seq));
                    }
                    Plan::Write
                }
                SequenceCheck::Duplicate {
                    first_offset,
                    last_offset,
                } => Plan::Duplicate(first_offset, last_offset),
                SequenceCheck::DuplicateUnknown => Plan::Duplicate(-1, -1),
                SequenceCheck::OutOfOrder { expected, found } => {
                    return Err(LogError::OutOfOrderSequence {
                        partition: self.partition.clone(),
                        producer_id: pid,
                        expected,
                        found,
                    });
                }
                SequenceCheck::Fenced { current, found } => {
                    return Err(LogError::ProducerFenced {
                        partition: self.partition.clone(),
                        producer_id: pid,
                        current,
                        found,
                    });
                }
            });
        }
        let mut next = state.next_offset;
        let mut staged = Vec::new();
        let mut batch_offsets = Vec::with_capacity(batches.len());
        let (mut records_written, mut bytes_written) = (0u64, 0u64);
        for (i, ((_, info), plan)) in batches.iter().zip(&plans).enumerate() {
            match plan {
                Plan::Write => {
                    let mut header = [0u8; HEADER_LEN];
                    header.copy_from_slice(&batch_bytes(i)[..HEADER_LEN]);
                    record::assign_offset(&mut header, next, leader_epoch);
                    let last = next + i64::from(info.last_offset_delta);
                    batch_offsets.push((next, last));
                    next = last + 1;
                    records_written += info.records_count as u64;
                    bytes_written += info.len as u64;
                    staged.push(Staged {
                        header,
                        rest: &batch_bytes(i)[HEADER_LEN..],
                    });
                }
                Plan::Duplicate(first, last) => batch_offsets.push((*first, *last)),
            }
        }
        self.write_staged(&mut state, &config, &staged, now_ms)?;
        debug_assert_eq!(state.next_offset, next);
        self.apply_flush_policy(&mut state, &config)?;
        Ok(AppendInfo {
            first_offset: batch_offsets.first().map_or(-1, |b| b.0),
            last_offset: batch_offsets.last().map_or(-1, |b| b.1),
            log_append_time,
            records: records_written,
            bytes: bytes_written,
            batch_offsets,
        })
    }

    /// Appends batches copied from the leader, offsets and all. They must continue the log
    /// exactly where it ends, and each must pass its CRC.
    pub fn append_as_follower(&self, records: &Bytes, now_ms: i64) -> Result<AppendInfo, LogError> {
        if self.is_offline() {
            return Err(LogError::Offline {
                partition: self.partition.clone(),
            });
        }
        let config = self.config();
        let mut staged = Vec::new();
        let mut batch_offsets = Vec::new();
        let mut position = 0;
        let (mut count, mut expected) = (0u64, None::<i64>);
        while position < records.len() {
            let header = BatchHeader::parse(&records[position..])?;
            let bytes = header.verify_checksum()?;
            if let Some(expected) = expected
                && header.base_offset() != expected
            {
                return Err(LogError::NotContiguous {
                    partition: self.partition.clone(),
                    expected,
                    found: header.base_offset(),
                });
            }
            expected = Some(header.next_offset());
            batch_offsets.push((header.base_offset(), header.last_offset()));
            count += header.records_count().max(0) as u64;
            staged.push(Staged {
                header: header.header_bytes(),
                rest: &bytes[HEADER_LEN..],
            });
            position += bytes.len();
        }
        let mut state = self.state.write();
        self.check_writable()?;
        if let Some(&(first, _)) = batch_offsets.first()
            && first != state.next_offset
        {
            return Err(LogError::NotContiguous {
                partition: self.partition.clone(),
                expected: state.next_offset,
                found: first,
            });
        }
        self.write_staged(&mut state, &config, &staged, now_ms)?;
        self.apply_flush_policy(&mut state, &config)?;
        Ok(AppendInfo {
            first_offset: batch_offsets.first().map_or(-1, |b| b.0),
            last_offset: batch_offsets.last().map_or(-1, |b| b.1),
            log_append_time: None,
            records: count,
            bytes: records.len() as u64,
            batch_offsets,
        })
    }

    /// Writes staged batches in runs, rolling before any batch that does not belong in the
    /// active segment. The log end (and the epoch cache and producer state) move after each
    /// run that reached the file, so a failure part way leaves them where the data ends.
    fn write_staged(
        &self,
        state: &mut LogState,
        config: &LogConfig,
        staged: &[Staged<'_>],
        now_ms: i64,
    ) -> Result<(), LogError> {
        let mut run = Run::default();
        for batch in staged {
            let header = BatchHeader::parse(&batch.header).map_err(LogError::InvalidBatch)?;
            let len = (HEADER_LEN + batch.rest.len()) as u64;
            if self.should_roll(
                state,
                config,
                run.bytes,
                len,
                header.max_timestamp(),
                header.last_offset(),
            ) {
                self.write_run(state, &mut run, now_ms)?;
                self.roll(state, config, header.base_offset())?;
            }
            run.batches.push((&batch.header, batch.rest));
            run.bytes += len;
            run.records += header.records_count().max(0) as u64;
            run.end = header.next_offset();
        }
        self.write_run(state, &mut run, now_ms)
    }

    fn should_roll(
        &self,
        state: &LogState,
        config: &LogConfig,
        pending: u64,
        batch_len: u64,
        batch_max_ts: i64,
        batch_last_offset: i64,
    ) -> bool {
        let active = state.active();
        let size = active.size() + pending;
        if size == 0 {
            return false;
        }
        let too_big = size + batch_len > config.segment_bytes;
        // As Kafka: segment.ms counts in record time, from the first batch's timestamp.
        let too_old = active
            .first_batch_timestamp()
            .is_some_and(|first| batch_max_ts.saturating_sub(first) > config.segment_ms);
        let offsets_overflow = batch_last_offset - active.base_offset() > i64::from(u32::MAX);
        too_big || too_old || offsets_overflow || active.indexes_full()
    }

    /// Writes the run to the active segment and moves the log end past it.
    fn write_run(
        &self,
        state: &mut LogState,
        run: &mut Run<'_>,
        now_ms: i64,
    ) -> Result<(), LogError> {
        if run.batches.is_empty() {
            return Ok(());
        }
        match state.active().append(&run.batches) {
            Ok(()) => {}
            Err(AppendFailure::RolledBack(source)) => {
                return Err(LogError::Io {
                    partition: self.partition.clone(),
                    op: "append",
                    source,
                });
            }
            Err(AppendFailure::Damaged(source)) => {
                self.offline.store(true, Ordering::Release);
                tracing::error!(partition = %self.partition, error = %source, "append failed and could not be undone; log is offline");
                return Err(LogError::Io {
                    partition: self.partition.clone(),
                    op: "append",
                    source,
                });
            }
        }
        for (header, _) in &run.batches {
            let header = BatchHeader::parse(&header[..]).map_err(LogError::InvalidBatch)?;
            if let Err(error) = state
                .epochs
                .assign(header.partition_leader_epoch(), header.base_offset())
            {
                tracing::warn!(partition = %self.partition, %error, "could not write the leader epoch checkpoint");
            }
            state.producers.record_batch(&header);
        }
        state.next_offset = run.end;
        state.unflushed_messages += run.records;
        state.first_unflushed_ms.get_or_insert(now_ms);
        *run = Run {
            end: run.end,
            ..Run::default()
        };
        Ok(())
    }

    /// fsyncs when flush.messages says so: every segment written since the recovery point.
    fn apply_flush_policy(&self, state: &mut LogState, config: &LogConfig) -> Result<(), LogError> {
        if state.unflushed_messages >= config.flush_messages {
            for segment in state.unflushed_segments() {
                segment.flush().map_err(self.io_error("fsync the log"))?;
            }
            state.recovery_point = state.next_offset;
            state.unflushed_messages = 0;
            state.first_unflushed_ms = None;
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at `base_offset`; the producer state
    /// is snapshotted there, so recovery never reads more than the active segment.
    pub(super) fn roll(
        &self,
        state: &mut LogState,
        config: &LogConfig,
        base_offset: i64,
    ) -> Result<(), LogError> {
        // The new segment first: if it cannot be created the log stays as it was.
        let segment = Segment::create(
            &self.dir,
            base_offset,
            config.segment_index_bytes,
            config.index_interval_bytes,
        )
        .map_err(self.io_error("create a segment"))?;
        if let Err(error) = state.active().seal() {
            let _ = segment.delete();
            return Err(self.io_error("seal a segment")(error));
        }
        state.segments.insert(base_offset, Arc::new(segment));
        self.save_producer_snapshot(state);
        tracing::debug!(partition = %self.partition, base_offset, "rolled to a new segment");
        Ok(())
    }
}
