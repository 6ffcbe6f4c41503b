//! The log of one partition replica: an ordered set of segments, the last one active.
//!
//! The log validates batches, assigns offsets and appends; it reads whole batches from an
//! offset; it rolls, retains and flushes by its topic's configuration; and on opening it
//! recovers from a crash by checking the tail of the active segment. It knows nothing of
//! networking or replication: callers say up to which offset reads may go.

mod append;
mod checkpoint;
mod config;
mod epoch_cache;
mod index;
mod manager;
mod names;
mod producer_state;
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
pub use epoch_cache::EpochEntry;
pub use manager::{LogManager, LogManagerError};
pub use producer_state::ActiveProducer;

use crate::TopicPartition;
use crate::record::{self, BatchError, BatchHeader, HEADER_LEN};
use epoch_cache::EpochCache;
use producer_state::ProducerState;
use segment::Segment;

/// Idempotent producer state snapshot, in the partition directory.
const PRODUCER_SNAPSHOT: &str = "producer-state";

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
    #[error("{partition} was deleted from this broker")]
    Deleted { partition: TopicPartition },
    #[error(
        "{partition}: producer {producer_id} sent sequence {found} where {expected} comes next; records were lost or reordered on the way"
    )]
    OutOfOrderSequence {
        partition: TopicPartition,
        producer_id: i64,
        expected: i32,
        found: i32,
    },
    #[error(
        "{partition}: producer {producer_id} has epoch {found} but epoch {current} is current; a newer producer with this id took over"
    )]
    ProducerFenced {
        partition: TopicPartition,
        producer_id: i64,
        current: i16,
        found: i16,
    },
    #[error(
        "{partition}: replicated batches start at offset {found} but the log ends at {expected}"
    )]
    NotContiguous {
        partition: TopicPartition,
        expected: i64,
        found: i64,
    },
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record of the first batch.
    pub first_offset: i64,
    /// Offset of the last record of the last batch.
    pub last_offset: i64,
    /// The time stamped on the batches, when the topic uses LogAppendTime.
    pub log_append_time: Option<i64>,
    /// Records and bytes written (batches already in the log are not written again).
    pub records: u64,
    pub bytes: u64,
    /// First and last offset of each batch of the request, in order; (-1, -1) for a retried
    /// batch written too long ago to know where.
    pub batch_offsets: Vec<(i64, i64)>,
}

/// What a read found: batches as stored (`Bytes` in memory, or `Records`), with the log's
/// bounds at the time.
#[derive(Debug, Clone, Default)]
pub struct ReadResult<R = Bytes> {
    pub records: R,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// Batches read from the log: copied into memory, or left in their segment file for the
/// caller to send on without copying them (`sendfile`).
#[derive(Debug, Clone)]
pub enum Records {
    Memory(Bytes),
    File(FileSlice),
}

impl Default for Records {
    fn default() -> Self {
        Self::Memory(Bytes::new())
    }
}

impl Records {
    pub fn len(&self) -> usize {
        match self {
            Self::Memory(bytes) => bytes.len(),
            Self::File(slice) => slice.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes in memory, reading them from the file if they are still there.
    pub fn into_bytes(self) -> io::Result<Bytes> {
        match self {
            Self::Memory(bytes) => Ok(bytes),
            Self::File(slice) => slice.read(),
        }
    }
}

/// A run of bytes in a segment file, starting at a batch. The file stays open while the
/// slice lives, even when retention deletes its segment; a follower truncating its log
/// can shorten it, which `read` reports and a sender must too.
#[derive(Clone)]
pub struct FileSlice {
    segment: Arc<Segment>,
    position: u64,
    len: usize,
}

impl std::fmt::Debug for FileSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSlice")
            .field("segment", &self.segment.base_offset())
            .field("position", &self.position)
            .field("len", &self.len)
            .finish()
    }
}

impl FileSlice {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the slice starts in its file.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The segment file, for `sendfile`.
    pub fn file(&self) -> &fs::File {
        self.segment.file()
    }

    /// Copies the slice into memory.
    pub fn read(&self) -> io::Result<Bytes> {
        self.segment.read(self.position, self.len)
    }
}

/// Where a read starts: the segment and position of the first batch it returns.
struct ReadStart {
    segment: Arc<Segment>,
    position: u64,
    /// The first batch's length: a read returns at least that batch.
    first_len: usize,
    /// Bytes of whole batches from `position` to the segment's end.
    available: usize,
}

impl ReadResult<()> {
    fn with_records<R>(self, records: R) -> ReadResult<R> {
        ReadResult {
            records,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset,
        }
    }
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
    epochs: EpochCache,
    producers: ProducerState,
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

pub struct Log {
    partition: TopicPartition,
    dir: PathBuf,
    config: RwLock<Arc<LogConfig>>,
    state: RwLock<LogState>,
    /// Serialises flushes so two of them never fsync the same data at once.
    flush_lock: Mutex<()>,
    offline: AtomicBool,
    /// Set (under the state lock) when the log is deleted: nothing writes to it after that,
    /// since its directory name may already belong to a new log.
    deleted: AtomicBool,
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
        let mut epochs = EpochCache::open(dir);
        // Epochs past the log end belonged to a tail that recovery cut off.
        epochs
            .truncate_from_end(next_offset)
            .map_err(io_err("update the leader epoch checkpoint"))?;
        let producers = load_producer_state(dir, &segments, next_offset)
            .map_err(io_err("rebuild the producer state"))?;
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
                epochs,
                producers,
            }),
            flush_lock: Mutex::new(()),
            offline: AtomicBool::new(false),
            deleted: AtomicBool::new(false),
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

    /// Whether this log may still change. Called with the state lock held, so that no
    /// change starts after [`Log::mark_deleted`].
    fn check_writable(&self) -> Result<(), LogError> {
        if self.deleted.load(Ordering::Acquire) {
            Err(LogError::Deleted {
                partition: self.partition.clone(),
            })
        } else if self.is_offline() {
            Err(LogError::Offline {
                partition: self.partition.clone(),
            })
        } else {
            Ok(())
        }
    }

    /// Stops every later change to this log (its files are about to go); changes already
    /// under way finish first.
    pub(crate) fn mark_deleted(&self) {
        let _state = self.state.write();
        self.deleted.store(true, Ordering::Release);
    }

    /// The latest leader epoch in this log and where it starts.
    pub fn latest_epoch(&self) -> Option<EpochEntry> {
        self.state.read().epochs.latest()
    }

    /// The largest epoch at or below `epoch` and the offset it ends at (KIP-279).
    pub fn epoch_end_offset(&self, epoch: i32) -> Option<(i32, i64)> {
        let state = self.state.read();
        state.epochs.end_offset_for(epoch, state.next_offset)
    }

    /// Records that this replica leads from the log end on in `epoch`.
    pub fn begin_leader_epoch(&self, epoch: i32) -> Result<(), LogError> {
        let mut state = self.state.write();
        self.check_writable()?;
        let end = state.next_offset;
        state
            .epochs
            .assign(epoch, end)
            .map_err(self.io_error("write the leader epoch checkpoint"))
    }

    /// Writes the producer state snapshot (at checkpoints and shutdown).
    pub fn write_producer_snapshot(&self) {
        let state = self.state.read();
        if self.check_writable().is_ok() {
            self.save_producer_snapshot(&state);
        }
    }

    fn save_producer_snapshot(&self, state: &LogState) {
        let snapshot = state.producers.to_snapshot(state.next_offset);
        if let Err(error) = replace_file(&self.dir.join(PRODUCER_SNAPSHOT), &snapshot) {
            tracing::warn!(partition = %self.partition, %error, "could not write the producer state snapshot");
        }
    }

    fn io_error(&self, op: &'static str) -> impl FnOnce(io::Error) -> LogError + '_ {
        move |source| LogError::Io {
            partition: self.partition.clone(),
            op,
            source,
        }
    }

    /// The idempotent producers with batches in the log, by producer id.
    pub fn active_producers(&self) -> Vec<ActiveProducer> {
        self.state.read().producers.active()
    }

    /// Reads whole batches starting with the one that holds `offset`, up to `max_bytes`
    /// (but always at least one batch), and only batches that end below `max_offset`.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<ReadResult, LogError> {
        let (start, bounds) = self.read_start(offset, max_offset)?;
        let Some(start) = start else {
            return Ok(bounds.with_records(Bytes::new()));
        };
        let len = max_bytes.max(start.first_len).min(start.available);
        let bytes = start
            .segment
            .read(start.position, len)
            .map_err(self.io_error("read"))?;
        let keep = record::batches(&bytes)
            .take_while(|(_, h)| h.last_offset() < max_offset)
            .last()
            .map_or(0, |(at, h)| at + h.total_len());
        Ok(bounds.with_records(bytes.slice(..keep)))
    }

    /// Like `read`, but leaves the batches in their segment file: the slice starts with the
    /// batch that holds `offset`, holds at least that batch, and ends below `max_offset`
    /// and within `max_bytes` otherwise, so its last batch may be cut short, as Kafka's
    /// fetch answers may be (clients drop a partial batch at the end and fetch it again).
    pub fn read_file(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<ReadResult<Records>, LogError> {
        let (start, bounds) = self.read_start(offset, max_offset)?;
        let Some(start) = start else {
            return Ok(bounds.with_records(Records::default()));
        };
        let limit = start.position + start.available as u64;
        let end = match start
            .segment
            .find_batch(max_offset, limit)
            .map_err(self.io_error("read"))?
        {
            Some((position, _)) => position,
            None => limit,
        };
        let below_max = usize::try_from(end - start.position).unwrap_or(usize::MAX);
        let len = max_bytes.max(start.first_len).min(below_max);
        Ok(bounds.with_records(Records::File(FileSlice {
            segment: start.segment,
            position: start.position,
            len,
        })))
    }

    /// Where a read of `offset` starts, or None when there is nothing below `max_offset`
    /// to read; and the log's bounds.
    fn read_start(
        &self,
        offset: i64,
        max_offset: i64,
    ) -> Result<(Option<ReadStart>, ReadResult<()>), LogError> {
        let (candidates, bounds) = {
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
            let bounds = ReadResult {
                records: (),
                log_start_offset: state.log_start_offset,
                log_end_offset: state.next_offset,
            };
            (candidates, bounds)
        };
        if offset >= max_offset.min(bounds.log_end_offset) {
            return Ok((None, bounds));
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
                return Ok((None, bounds));
            }
            let start = ReadStart {
                segment,
                position,
                first_len: first.total_len(),
                available: usize::try_from(limit - position).unwrap_or(usize::MAX),
            };
            return Ok((Some(start), bounds));
        }
        Ok((None, bounds))
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
        self.check_writable()?;
        if offset >= state.next_offset {
            // No record to cut, but an epoch that starts here holds nothing (a leader that
            // never wrote in it): forget it, or the logs would keep diverging there.
            return state
                .epochs
                .truncate_from_end(offset)
                .map_err(self.io_error("update the leader epoch checkpoint"));
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
            state.producers.clear();
            state
                .epochs
                .clear()
                .map_err(self.io_error("update the leader epoch checkpoint"))?;
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
        let end = state.next_offset;
        state.producers.truncate(end);
        state
            .epochs
            .truncate_from_end(end)
            .map_err(self.io_error("update the leader epoch checkpoint"))?;
        self.save_producer_snapshot(&state);
        Ok(())
    }

    /// Empties the log and starts it again at `offset` (a follower behind the leader's log
    /// start, which can only continue from there).
    pub fn reset_to(&self, offset: i64) -> Result<(), LogError> {
        let first_base = *self
            .state
            .read()
            .segments
            .keys()
            .next()
            .expect("a log always has a segment");
        self.truncate_to(first_base.min(offset))?;
        let config = self.config();
        let mut state = self.state.write();
        self.check_writable()?;
        if state.next_offset != offset {
            // The new segment first: if it cannot be created the log stays as it was. The
            // old one is empty now (truncated above) and has another base offset.
            let segment = Segment::create(
                &self.dir,
                offset,
                config.segment_index_bytes,
                config.index_interval_bytes,
            )
            .map_err(self.io_error("create a segment"))?;
            let old = std::mem::replace(
                &mut state.segments,
                BTreeMap::from([(offset, Arc::new(segment))]),
            );
            for segment in old.into_values() {
                if let Err(error) = segment.delete() {
                    // A stray segment below the new log start would come back at restart.
                    self.offline.store(true, Ordering::Release);
                    return Err(self.io_error("delete a segment")(error));
                }
            }
        }
        state.next_offset = offset;
        state.log_start_offset = offset;
        state.recovery_point = offset;
        Ok(())
    }

    /// Base offset of the active segment (the one appended to).
    pub fn active_segment_base(&self) -> i64 {
        self.state.read().active().base_offset()
    }

    /// Moves the log start offset forward to `offset` (never past the log end): records
    /// below it are no longer read, and whole segments below it are deleted by the next
    /// retention pass. Followers call this with their leader's log start.
    pub fn advance_log_start(&self, offset: i64) -> Result<(), LogError> {
        let mut state = self.state.write();
        self.check_writable()?;
        let offset = offset.min(state.next_offset);
        if offset > state.log_start_offset {
            state.log_start_offset = offset;
        }
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
        self.check_writable()?;
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

/// The producer state at the log end: the last snapshot, brought up to date by reading the
/// batches after it. Without a usable snapshot, the active segment is read (a snapshot is
/// taken at every roll, so that holds everything since).
fn load_producer_state(
    dir: &Path,
    segments: &BTreeMap<i64, Arc<Segment>>,
    log_end: i64,
) -> io::Result<ProducerState> {
    let active_base = segments.keys().next_back().copied().unwrap_or(0);
    let first_base = segments.keys().next().copied().unwrap_or(0);
    let snapshot = fs::read(dir.join(PRODUCER_SNAPSHOT))
        .ok()
        .and_then(|bytes| ProducerState::from_snapshot(&bytes));
    let (mut producers, from) = match snapshot {
        Some((state, offset)) if (first_base..=log_end).contains(&offset) => (state, offset),
        _ => (ProducerState::default(), active_base),
    };
    let start = segments
        .range(..=from)
        .next_back()
        .map_or(from, |(base, _)| *base);
    for segment in segments.range(start..).map(|(_, s)| s) {
        segment.visit_headers_from(from, |header| producers.record_batch(header))?;
    }
    Ok(producers)
}

#[cfg(test)]
mod tests;
