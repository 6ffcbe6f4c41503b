//! The log of one partition replica: an ordered set of segments, the last one active.
//!
//! The log validates batches, assigns offsets and appends; it reads whole batches from an
//! offset; it rolls, retains and flushes by its topic's configuration; and on opening it
//! recovers from a crash by checking the tail of the active segment. It knows nothing of
//! networking or replication: callers say up to which offset reads may go.

mod checkpoint;
mod config;
mod index;
mod manager;
mod names;
mod segment;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

pub use checkpoint::{OffsetCheckpoint, replace_file, sync_dir, write_atomically};
pub use config::{DAY_MS, LogConfig};
pub use manager::{LogManager, LogManagerError};

use crate::TopicPartition;
use crate::record::{self, BatchError, BatchHeader, HEADER_LEN, TimestampType};
use segment::{AppendFailure, Segment};

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(
        "offset {requested} is out of range for {partition}: it holds offsets {log_start} to {log_end}"
    )]
    OffsetOutOfRange {
        partition: TopicPartition,
        requested: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("{0}")]
    InvalidBatch(#[from] BatchError),
    #[error("{partition}: {op} failed: {source}")]
    Io {
        partition: TopicPartition,
        op: &'static str,
        source: io::Error,
    },
    #[error(
        "{partition} is offline after a failed write that could not be undone; restart the broker to recover it"
    )]
    Offline { partition: TopicPartition },
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    /// The time stamped on the batches, when the topic uses LogAppendTime.
    pub log_append_time: Option<i64>,
    pub records: u64,
    pub bytes: u64,
}

/// Bytes read from the log: whole batches, as stored.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    pub records: Bytes,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub log_start_offset: i64,
}

/// How the log was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenReport {
    pub segments: usize,
    pub log_end_offset: i64,
    /// Bytes cut off the end of the active segment because they were not whole, valid batches.
    pub truncated_bytes: u64,
}

struct LogState {
    /// By base offset; the last one is active.
    segments: BTreeMap<i64, Arc<Segment>>,
    next_offset: i64,
    log_start_offset: i64,
    /// Offsets below this are known to be fsynced.
    recovery_point: i64,
    unflushed_messages: u64,
    first_unflushed_ms: Option<i64>,
}

impl LogState {
    fn active(&self) -> &Arc<Segment> {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    /// Segments that may hold data written since the recovery point: the one holding it
    /// and every later one.
    fn unflushed_segments(&self) -> Vec<Arc<Segment>> {
        let from = self
            .segments
            .range(..=self.recovery_point)
            .next_back()
            .map_or(0, |(base, _)| *base);
        self.segments
            .range(from..)
            .map(|(_, s)| s.clone())
            .collect()
    }
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

impl<'a> Run<'a> {
    fn push(&mut self, header: &'a [u8; HEADER_LEN], rest: &'a [u8], records: i32) {
        self.batches.push((header, rest));
        self.bytes += (HEADER_LEN + rest.len()) as u64;
        self.records += records as u64;
    }
}

pub struct Log {
    partition: TopicPartition,
    dir: PathBuf,
    config: RwLock<Arc<LogConfig>>,
    state: RwLock<LogState>,
    /// Serialises flushes so two of them never fsync the same data at once.
    flush_lock: Mutex<()>,
    offline: AtomicBool,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("partition", &self.partition)
            .field("dir", &self.dir)
            .finish()
    }
}

impl Log {
    /// Opens (or creates) the log in `dir`. `clean` says the broker shut down cleanly, so the
    /// active segment's tail is trusted; otherwise its batches after the last index entry are
    /// checked and a torn or corrupt tail is cut off. `checkpoints` are the recovery point and
    /// log start offset last written for this log, if any.
    pub fn open(
        dir: &Path,
        partition: TopicPartition,
        config: LogConfig,
        clean: bool,
        checkpoints: (Option<i64>, Option<i64>),
    ) -> Result<(Self, OpenReport), LogError> {
        let io_err = |op| {
            let partition = partition.clone();
            move |source| LogError::Io {
                partition,
                op,
                source,
            }
        };
        fs::create_dir_all(dir).map_err(io_err("create the partition directory"))?;
        let (recovery_checkpoint, start_checkpoint) = checkpoints;
        let mut bases = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err("list the partition directory"))? {
            let entry = entry.map_err(io_err("list the partition directory"))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            match names::parse_segment_file(&name) {
                Some((base, names::LOG_SUFFIX)) => bases.push(base),
                // An index whose log is gone was left by an interrupted delete.
                Some((base, names::INDEX_SUFFIX | names::TIME_INDEX_SUFFIX))
                    if !names::segment_file(dir, base, names::LOG_SUFFIX).exists() =>
                {
                    fs::remove_file(entry.path()).map_err(io_err("remove an orphaned index"))?;
                }
                _ if name.ends_with(".tmp") => {
                    fs::remove_file(entry.path()).map_err(io_err("remove a temporary file"))?;
                }
                _ => {}
            }
        }
        bases.sort_unstable();
        // A log start is always a segment base at or below the active segment's. One beyond
        // it belongs to an earlier log of the same name (deleted and created again before
        // the checkpoint was rewritten) and must not delete anything.
        let start_checkpoint = start_checkpoint.filter(|&start| {
            let plausible = bases.last().is_none_or(|&last| start <= last);
            if !plausible {
                tracing::warn!(partition = %partition, start, "ignoring a log start checkpoint beyond the log");
            }
            plausible
        });
        // Segments wholly below the checkpointed log start were deleted by retention just
        // before a crash: finish the job.
        if let Some(start) = start_checkpoint {
            while bases.len() > 1 && bases[1] <= start {
                let base = bases.remove(0);
                Segment::open_sealed(dir, base, config.index_interval_bytes)
                    .and_then(|s| s.delete())
                    .map_err(io_err("delete a segment below the log start"))?;
            }
        }
        let mut segments = BTreeMap::new();
        let (next_offset, truncated_bytes) = match bases.split_last() {
            None => {
                let base = start_checkpoint.unwrap_or(0).max(0);
                let segment = Segment::create(
                    dir,
                    base,
                    config.segment_index_bytes,
                    config.index_interval_bytes,
                )
                .map_err(io_err("create the first segment"))?;
                segments.insert(base, Arc::new(segment));
                (base, 0)
            }
            Some((&active_base, sealed)) => {
                for &base in sealed {
                    let segment = Segment::open_sealed(dir, base, config.index_interval_bytes)
                        .map_err(io_err("open a segment"))?;
                    segments.insert(base, Arc::new(segment));
                }
                let (active, outcome) = Segment::open_active(
                    dir,
                    active_base,
                    config.segment_index_bytes,
                    config.index_interval_bytes,
                    !clean,
                )
                .map_err(io_err("recover the active segment"))?;
                if outcome.truncated_bytes > 0 {
                    tracing::warn!(
                        partition = %partition,
                        bytes = outcome.truncated_bytes,
                        log_end_offset = outcome.next_offset,
                        "cut a torn or corrupt tail off the log"
                    );
                }
                segments.insert(active_base, Arc::new(active));
                (outcome.next_offset, outcome.truncated_bytes)
            }
        };
        let first_base = *segments.keys().next().expect("at least one segment");
        let log_start_offset = start_checkpoint
            .unwrap_or(first_base)
            .max(first_base)
            .min(next_offset);
        let recovery_point = if clean {
            next_offset
        } else {
            recovery_checkpoint.unwrap_or(0).min(next_offset)
        };
        let report = OpenReport {
            segments: segments.len(),
            log_end_offset: next_offset,
            truncated_bytes,
        };
        let log = Self {
            partition,
            dir: dir.to_path_buf(),
            config: RwLock::new(Arc::new(config)),
            state: RwLock::new(LogState {
                segments,
                next_offset,
                log_start_offset,
                recovery_point,
                unflushed_messages: 0,
                first_unflushed_ms: None,
            }),
            flush_lock: Mutex::new(()),
            offline: AtomicBool::new(false),
        };
        Ok((log, report))
    }

    pub fn partition(&self) -> &TopicPartition {
        &self.partition
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> Arc<LogConfig> {
        self.config.read().clone()
    }

    /// Changes the configuration; size and time limits apply from the next append or
    /// retention pass, index sizes from the next roll.
    pub fn set_config(&self, config: LogConfig) {
        *self.config.write() = Arc::new(config);
    }

    /// The offset the next record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.state.read().next_offset
    }

    pub fn log_start_offset(&self) -> i64 {
        self.state.read().log_start_offset
    }

    pub fn recovery_point(&self) -> i64 {
        self.state.read().recovery_point
    }

    /// Total bytes of all segments.
    pub fn size(&self) -> u64 {
        self.state.read().segments.values().map(|s| s.size()).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.state.read().segments.len()
    }

    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::Acquire)
    }

    fn io_error(&self, op: &'static str) -> impl FnOnce(io::Error) -> LogError + '_ {
        move |source| LogError::Io {
            partition: self.partition.clone(),
            op,
            source,
        }
    }

    /// Validates the batches in `records` as a leader receives them from a producer, gives
    /// them offsets and appends them. Nothing is written unless every batch is valid.
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
        let first_offset = state.next_offset;
        let mut headers = Vec::with_capacity(batches.len());
        let mut next = state.next_offset;
        for (i, (_, info)) in batches.iter().enumerate() {
            let mut header = [0u8; HEADER_LEN];
            header.copy_from_slice(&batch_bytes(i)[..HEADER_LEN]);
            record::assign_offset(&mut header, next, leader_epoch);
            next += i64::from(info.last_offset_delta) + 1;
            headers.push(header);
        }
        // Write in runs, rolling before any batch that does not belong in the active segment.
        // The log end moves after each run that reached the file, so a failure part way
        // (a roll or a write) leaves the log end where the data on disk ends.
        let mut run = Run::default();
        for (i, (_, info)) in batches.iter().enumerate() {
            let header = BatchHeader::parse(&headers[i]).map_err(LogError::InvalidBatch)?;
            if self.should_roll(
                &state,
                &config,
                run.bytes,
                info.len as u64,
                header.max_timestamp(),
                header.last_offset(),
            ) {
                self.write_run(&mut state, &mut run, now_ms)?;
                self.roll(&mut state, &config, header.base_offset())?;
            }
            run.push(
                &headers[i],
                &batch_bytes(i)[HEADER_LEN..],
                info.records_count,
            );
            run.end = header.next_offset();
        }
        self.write_run(&mut state, &mut run, now_ms)?;
        debug_assert_eq!(state.next_offset, next);

        let record_count: u64 = batches
            .iter()
            .map(|(_, info)| info.records_count as u64)
            .sum();
        if state.unflushed_messages >= config.flush_messages {
            for segment in state.unflushed_segments() {
                segment.flush().map_err(self.io_error("fsync the log"))?;
            }
            state.recovery_point = state.next_offset;
            state.unflushed_messages = 0;
            state.first_unflushed_ms = None;
        }
        Ok(AppendInfo {
            first_offset,
            last_offset: next - 1,
            log_append_time,
            records: record_count,
            bytes: batches.iter().map(|(_, info)| info.len as u64).sum(),
        })
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
            Ok(()) => {
                state.next_offset = run.end;
                state.unflushed_messages += run.records;
                state.first_unflushed_ms.get_or_insert(now_ms);
                *run = Run {
                    end: run.end,
                    ..Run::default()
                };
                Ok(())
            }
            Err(AppendFailure::RolledBack(source)) => Err(LogError::Io {
                partition: self.partition.clone(),
                op: "append",
                source,
            }),
            Err(AppendFailure::Damaged(source)) => {
                self.offline.store(true, Ordering::Release);
                tracing::error!(partition = %self.partition, error = %source, "append failed and could not be undone; log is offline");
                Err(LogError::Io {
                    partition: self.partition.clone(),
                    op: "append",
                    source,
                })
            }
        }
    }

    /// Seals the active segment and starts a new one at `base_offset`.
    fn roll(
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
        tracing::debug!(partition = %self.partition, base_offset, "rolled to a new segment");
        Ok(())
    }

    /// Reads whole batches starting with the one that holds `offset`, up to `max_bytes`
    /// (but always at least one batch), and only batches that end below `max_offset`.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<ReadResult, LogError> {
        let (candidates, log_start_offset, log_end_offset) = {
            let state = self.state.read();
            if offset < state.log_start_offset || offset > state.next_offset {
                return Err(LogError::OffsetOutOfRange {
                    partition: self.partition.clone(),
                    requested: offset,
                    log_start: state.log_start_offset,
                    log_end: state.next_offset,
                });
            }
            let from = state
                .segments
                .range(..=offset)
                .next_back()
                .map_or(offset, |(base, _)| *base);
            let candidates: Vec<Arc<Segment>> = state
                .segments
                .range(from..)
                .take(2)
                .map(|(_, s)| s.clone())
                .collect();
            (candidates, state.log_start_offset, state.next_offset)
        };
        let empty = ReadResult {
            records: Bytes::new(),
            log_start_offset,
            log_end_offset,
        };
        if offset >= max_offset.min(log_end_offset) {
            return Ok(empty);
        }
        for segment in candidates {
            let limit = segment.size();
            let Some((position, header)) = segment
                .find_batch(offset, limit)
                .map_err(self.io_error("read"))?
            else {
                continue;
            };
            let first = BatchHeader::parse(&header).map_err(LogError::InvalidBatch)?;
            if first.last_offset() >= max_offset {
                return Ok(empty);
            }
            let available = (limit - position) as usize;
            let len = max_bytes.max(first.total_len()).min(available);
            let bytes = segment.read(position, len).map_err(self.io_error("read"))?;
            let keep = record::batches(&bytes)
                .take_while(|(_, h)| h.last_offset() < max_offset)
                .last()
                .map_or(0, |(at, h)| at + h.total_len());
            return Ok(ReadResult {
                records: bytes.slice(..keep),
                log_start_offset,
                log_end_offset,
            });
        }
        Ok(empty)
    }

    /// The first offset below `max_offset` whose record has a timestamp at or after
    /// `timestamp`, with that record's timestamp; None when there is none.
    pub fn offset_for_timestamp(
        &self,
        timestamp: i64,
        max_offset: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        let segments: Vec<Arc<Segment>> = self.state.read().segments.values().cloned().collect();
        let log_start = self.log_start_offset();
        for segment in segments {
            let newest = segment
                .max_timestamp()
                .map_err(self.io_error("read the time index"))?;
            if newest.is_none_or(|ts| ts < timestamp) {
                continue;
            }
            let limit = segment.size();
            let Some(position) = segment
                .find_by_timestamp(timestamp, limit)
                .map_err(self.io_error("read"))?
            else {
                continue;
            };
            let header = segment
                .read(position, HEADER_LEN)
                .map_err(self.io_error("read"))?;
            let total = BatchHeader::parse(&header)
                .map_err(LogError::InvalidBatch)?
                .total_len();
            let batch = segment
                .read(position, total)
                .map_err(self.io_error("read"))?;
            let mut records = Vec::new();
            record::decode_batch(&batch, log_start, &mut records)?;
            return Ok(records
                .into_iter()
                .filter(|r| r.offset < max_offset)
                .find(|r| r.timestamp >= timestamp)
                .map(|r| (r.offset, r.timestamp)));
        }
        Ok(None)
    }

    /// Removes every record at or after `offset` (a whole batch is removed when `offset`
    /// falls inside it). Used when a replica must match a new leader.
    pub fn truncate_to(&self, offset: i64) -> Result<(), LogError> {
        let config = self.config();
        let mut state = self.state.write();
        if offset >= state.next_offset {
            return Ok(());
        }
        let first_base = *state
            .segments
            .keys()
            .next()
            .expect("a log always has a segment");
        let everything = offset <= first_base;
        let doomed: Vec<i64> = if everything {
            state.segments.keys().copied().collect()
        } else {
            state
                .segments
                .range(offset + 1..)
                .map(|(base, _)| *base)
                .collect()
        };
        // Newest first, so a crash part way leaves a prefix of the old log, never a gap. A
        // segment leaves the map once its files are gone, except the last of a full
        // truncation, which stays until its replacement exists.
        for base in doomed.iter().rev() {
            if let Err(error) = state.segments[base].delete() {
                self.offline.store(true, Ordering::Release);
                return Err(self.io_error("delete a segment")(error));
            }
            if !everything || *base != first_base {
                state.segments.remove(base);
            }
        }
        if everything {
            let start = offset.max(0);
            let segment = Segment::create(
                &self.dir,
                start,
                config.segment_index_bytes,
                config.index_interval_bytes,
            )
            .map_err(|error| {
                self.offline.store(true, Ordering::Release);
                self.io_error("create a segment")(error)
            })?;
            state.segments.clear();
            state.segments.insert(start, Arc::new(segment));
            state.next_offset = start;
            state.log_start_offset = start;
        } else {
            let active = state.active().clone();
            state.next_offset = active
                .truncate_to(offset, config.segment_index_bytes)
                .map_err(self.io_error("truncate a segment"))?;
        }
        state.recovery_point = state.recovery_point.min(state.next_offset);
        state.log_start_offset = state.log_start_offset.min(state.next_offset);
        Ok(())
    }

    /// Deletes sealed segments that retention no longer keeps, oldest first, never touching
    /// records at or above `max_offset` (the high watermark). The active segment is rolled
    /// first when all of it has expired, so a quiet topic's old data goes too.
    pub fn apply_retention(
        &self,
        now_ms: i64,
        max_offset: i64,
    ) -> Result<RetentionOutcome, LogError> {
        let config = self.config();
        let mut state = self.state.write();
        let expired = |segment: &Segment| -> Result<bool, LogError> {
            Ok(config.retention_ms >= 0
                && segment
                    .max_timestamp()
                    .map_err(self.io_error("read the time index"))?
                    .is_some_and(|ts| now_ms.saturating_sub(ts) > config.retention_ms))
        };
        let active = state.active().clone();
        if active.size() > 0 && state.next_offset <= max_offset && expired(&active)? {
            let next = state.next_offset;
            self.roll(&mut state, &config, next)?;
        }
        let mut total: u64 = state.segments.values().map(|s| s.size()).sum();
        let bases: Vec<i64> = state.segments.keys().copied().collect();
        let mut outcome = RetentionOutcome {
            log_start_offset: state.log_start_offset,
            ..Default::default()
        };
        for pair in bases.windows(2) {
            let (base, next_base) = (pair[0], pair[1]);
            let segment = state.segments[&base].clone();
            let below_start = next_base <= state.log_start_offset;
            let over_size = config.retention_bytes >= 0
                && total - segment.size() >= config.retention_bytes as u64;
            if next_base > max_offset || !(below_start || over_size || expired(&segment)?) {
                break;
            }
            state.segments.remove(&base);
            total -= segment.size();
            outcome.segments_deleted += 1;
            outcome.bytes_deleted += segment.size();
            state.log_start_offset = state.log_start_offset.max(next_base);
            if let Err(error) = segment.delete() {
                tracing::warn!(partition = %self.partition, base, %error, "could not delete an expired segment's files");
            }
        }
        outcome.log_start_offset = state.log_start_offset;
        if outcome.segments_deleted > 0 {
            tracing::info!(
                partition = %self.partition,
                segments = outcome.segments_deleted,
                bytes = outcome.bytes_deleted,
                log_start_offset = outcome.log_start_offset,
                "retention deleted old segments"
            );
        }
        Ok(outcome)
    }

    /// fsyncs everything written so far; the recovery point moves to the log end.
    pub fn flush(&self) -> Result<(), LogError> {
        let _flushing = self.flush_lock.lock();
        let (segments, target) = {
            let state = self.state.read();
            (state.unflushed_segments(), state.next_offset)
        };
        for segment in &segments {
            segment.flush().map_err(self.io_error("fsync the log"))?;
        }
        let mut state = self.state.write();
        state.recovery_point = state.recovery_point.max(target);
        if state.next_offset == target {
            state.unflushed_messages = 0;
            state.first_unflushed_ms = None;
        }
        Ok(())
    }

    /// Flushes what the flush policy says is due: segments rolled since the last flush (so
    /// recovery never has to look at them), and, with flush.ms set, writes that old.
    pub fn flush_if_due(&self, now_ms: i64) -> Result<(), LogError> {
        let config = self.config();
        let (rolled, overdue) = {
            let state = self.state.read();
            let rolled = state.recovery_point < state.active().base_offset();
            let overdue = state
                .first_unflushed_ms
                .is_some_and(|first| now_ms.saturating_sub(first) as u64 >= config.flush_ms);
            (rolled, overdue)
        };
        if overdue {
            return self.flush();
        }
        if rolled {
            let _flushing = self.flush_lock.lock();
            let (segments, target) = {
                let state = self.state.read();
                let active_base = state.active().base_offset();
                let mut rolled = state.unflushed_segments();
                rolled.retain(|s| s.base_offset() < active_base);
                (rolled, active_base)
            };
            for segment in &segments {
                segment
                    .flush()
                    .map_err(self.io_error("fsync a rolled segment"))?;
            }
            let mut state = self.state.write();
            state.recovery_point = state.recovery_point.max(target);
        }
        Ok(())
    }

    /// Seals the active segment's indexes (trims them), for a clean shutdown. The caller
    /// makes the data durable and then calls [`Log::mark_flushed`].
    pub fn close(&self) -> Result<(), LogError> {
        let state = self.state.read();
        state
            .active()
            .seal()
            .map_err(self.io_error("seal the active segment"))
    }

    /// Records that everything written so far has reached the disk (the caller synced it).
    pub(crate) fn mark_flushed(&self) {
        let mut state = self.state.write();
        state.recovery_point = state.next_offset;
        state.unflushed_messages = 0;
        state.first_unflushed_ms = None;
    }
}

#[cfg(test)]
mod tests;
