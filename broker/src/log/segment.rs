//! A segment: one `.log` file of whole batches with its offset and time indexes.
//!
//! Sealed segments open their indexes on first use and check them then (an index that does
//! not fit its log is rebuilt); the active segment keeps them mapped writable.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use super::index::{OffsetIndex, TimeIndex};
use super::names::{INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, segment_file};
use crate::record::{BatchHeader, HEADER_LEN};

pub(crate) const NO_TIMESTAMP: i64 = i64::MIN;
/// How much log a walk over batches reads at a time.
const WALK_CHUNK: usize = 64 * 1024;

struct Indexes {
    offset: OffsetIndex,
    time: TimeIndex,
}

impl Indexes {
    fn open_writable(dir: &Path, base_offset: i64, max_bytes: u64) -> io::Result<Self> {
        Ok(Self {
            offset: OffsetIndex::open_writable(
                &segment_file(dir, base_offset, INDEX_SUFFIX),
                base_offset,
                max_bytes as usize,
            )?,
            time: TimeIndex::open_writable(
                &segment_file(dir, base_offset, TIME_INDEX_SUFFIX),
                base_offset,
                max_bytes as usize,
            )?,
        })
    }

    fn is_full(&self) -> bool {
        self.offset.is_full() || self.time.is_full()
    }
}

/// What the writer keeps between appends; a scan of the log rebuilds it.
#[derive(Debug, Clone, Copy)]
struct AppendState {
    bytes_since_index: u64,
    last_batch_offset: i64,
    /// Largest timestamp so far.
    max_timestamp: i64,
    /// Max timestamp of the first batch: segment.ms counts from it.
    first_batch_timestamp: i64,
}

impl AppendState {
    fn empty(base_offset: i64) -> Self {
        Self {
            bytes_since_index: 0,
            last_batch_offset: base_offset,
            max_timestamp: NO_TIMESTAMP,
            first_batch_timestamp: NO_TIMESTAMP,
        }
    }
}

/// What opening the active segment found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanOutcome {
    /// Offset after the last whole, valid batch.
    pub next_offset: i64,
    /// Bytes cut off the end because they were not a whole, valid batch.
    pub truncated_bytes: u64,
}

pub(crate) struct Segment {
    base_offset: i64,
    dir: PathBuf,
    file: File,
    /// Bytes of whole batches; readers never read past it.
    size: AtomicU64,
    /// Largest record timestamp, or NO_TIMESTAMP when not known (empty, or sealed and not
    /// loaded yet).
    max_timestamp: AtomicI64,
    indexes: RwLock<Option<Indexes>>,
    append: Mutex<AppendState>,
    index_interval: u64,
}

impl Segment {
    fn path(&self, suffix: &str) -> PathBuf {
        segment_file(&self.dir, self.base_offset, suffix)
    }

    fn open_log(dir: &Path, base_offset: i64) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(segment_file(dir, base_offset, LOG_SUFFIX))
    }

    fn new(
        dir: &Path,
        base_offset: i64,
        file: File,
        size: u64,
        indexes: Option<Indexes>,
        index_interval: u64,
    ) -> Self {
        Self {
            base_offset,
            dir: dir.to_path_buf(),
            file,
            size: AtomicU64::new(size),
            max_timestamp: AtomicI64::new(NO_TIMESTAMP),
            indexes: RwLock::new(indexes),
            append: Mutex::new(AppendState::empty(base_offset)),
            index_interval,
        }
    }

    /// Creates a new, empty active segment, replacing any files left at that name.
    pub fn create(
        dir: &Path,
        base_offset: i64,
        index_bytes: u64,
        index_interval: u64,
    ) -> io::Result<Self> {
        let file = Self::open_log(dir, base_offset)?;
        file.set_len(0)?;
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            remove_if_present(&segment_file(dir, base_offset, suffix))?;
        }
        let indexes = Indexes::open_writable(dir, base_offset, index_bytes)?;
        Ok(Self::new(
            dir,
            base_offset,
            file,
            0,
            Some(indexes),
            index_interval,
        ))
    }

    /// Opens a sealed segment without touching its indexes.
    pub fn open_sealed(dir: &Path, base_offset: i64, index_interval: u64) -> io::Result<Self> {
        let file = Self::open_log(dir, base_offset)?;
        let size = file.metadata()?.len();
        Ok(Self::new(
            dir,
            base_offset,
            file,
            size,
            None,
            index_interval,
        ))
    }

    /// Opens the active segment: maps its indexes writable and walks the batches after the
    /// last index entry to find the log end. With `verify` (after a crash), each of those
    /// batches must pass its CRC, and everything after the last good one is cut off.
    pub fn open_active(
        dir: &Path,
        base_offset: i64,
        index_bytes: u64,
        index_interval: u64,
        verify: bool,
    ) -> io::Result<(Self, ScanOutcome)> {
        let file = Self::open_log(dir, base_offset)?;
        let size = file.metadata()?.len();
        let indexes = Indexes::open_writable(dir, base_offset, index_bytes)?;
        let segment = Self::new(dir, base_offset, file, size, Some(indexes), index_interval);
        let outcome = segment.recover_tail(verify)?;
        Ok((segment, outcome))
    }

    /// Finds where the valid batches end, starting at the last index entry that points at a
    /// batch with its offset; cuts the file there and rebuilds what follows in the indexes.
    fn recover_tail(&self, verify: bool) -> io::Result<ScanOutcome> {
        let file_size = self.size();
        let mut guard = self.indexes.write();
        let indexes = guard
            .as_mut()
            .ok_or_else(|| io::Error::other("active segment without indexes"))?;
        let mut start = (self.base_offset, 0u32);
        while let Some((offset, position)) = indexes.offset.last() {
            let points_at_batch = self
                .read_header(u64::from(position), file_size)?
                .is_some_and(|h| BatchHeader::parse(&h).is_ok_and(|h| h.base_offset() == offset));
            if points_at_batch {
                start = (offset, position);
                break;
            }
            indexes.offset.truncate_to(offset)?;
        }
        indexes.time.truncate_to(start.0 + 1)?;
        let mut state = AppendState::empty(self.base_offset);
        state.max_timestamp = indexes.time.last().map_or(NO_TIMESTAMP, |(ts, _)| ts);
        if start.1 > 0 {
            state.first_batch_timestamp = self.first_batch_max_timestamp(file_size)?;
        }
        let mut next_offset = start.0;
        let end = self.walk(u64::from(start.1), file_size, verify, |position, bytes| {
            let Ok(header) = BatchHeader::parse(bytes) else {
                return false;
            };
            // Batches in a log are contiguous: a batch that does not start where the last one
            // ended is damaged (the base offset is not covered by the CRC).
            if header.base_offset() != next_offset || (verify && header.verify_checksum().is_err())
            {
                return false;
            }
            self.index_batch(indexes, &mut state, &header, position);
            next_offset = header.next_offset();
            true
        })?;
        let truncated_bytes = file_size - end;
        if truncated_bytes > 0 {
            self.file.set_len(end)?;
            self.file.sync_data()?;
            indexes.offset.truncate_to(next_offset)?;
            indexes.time.truncate_to(next_offset)?;
        }
        self.size.store(end, Ordering::Release);
        self.max_timestamp
            .store(state.max_timestamp, Ordering::Release);
        *self.append.lock() = state;
        Ok(ScanOutcome {
            next_offset,
            truncated_bytes,
        })
    }

    fn first_batch_max_timestamp(&self, limit: u64) -> io::Result<i64> {
        Ok(self
            .read_header(0, limit)?
            .and_then(|h| BatchHeader::parse(&h).ok().map(|h| h.max_timestamp()))
            .unwrap_or(NO_TIMESTAMP))
    }

    /// Index bookkeeping for one batch at `position`, shared by appends and scans so that
    /// both build the same indexes.
    fn index_batch(
        &self,
        indexes: &mut Indexes,
        state: &mut AppendState,
        header: &BatchHeader<'_>,
        position: u64,
    ) {
        if position == 0 {
            state.first_batch_timestamp = header.max_timestamp();
        }
        state.max_timestamp = state.max_timestamp.max(header.max_timestamp());
        if position > 0 && state.bytes_since_index > self.index_interval && !indexes.is_full() {
            indexes.offset.append(header.base_offset(), position as u32);
            indexes
                .time
                .maybe_append(state.max_timestamp, header.base_offset());
            state.bytes_since_index = 0;
        }
        state.bytes_since_index += header.total_len() as u64;
        state.last_batch_offset = header.base_offset();
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// The `.log` file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// True when another index entry may not fit: time to roll.
    pub fn indexes_full(&self) -> bool {
        self.indexes.read().as_ref().is_some_and(Indexes::is_full)
    }

    /// Max timestamp of the first batch, for segment.ms; None when empty.
    pub fn first_batch_timestamp(&self) -> Option<i64> {
        Some(self.append.lock().first_batch_timestamp).filter(|&ts| ts != NO_TIMESTAMP)
    }

    /// Appends batches, each given as its (possibly rewritten) header and the rest of its
    /// bytes, with one vectored write. On failure the file is cut back to where it was;
    /// if even that fails the error says so and the caller must stop writing.
    pub fn append(&self, batches: &[(&[u8; HEADER_LEN], &[u8])]) -> Result<(), AppendFailure> {
        let start = self.size();
        let mut slices: Vec<IoSlice<'_>> = batches
            .iter()
            .flat_map(|(h, rest)| [IoSlice::new(&h[..]), IoSlice::new(rest)])
            .collect();
        if let Err(error) = write_all_vectored(&self.file, &mut slices) {
            return Err(match self.file.set_len(start) {
                Ok(()) => AppendFailure::RolledBack(error),
                Err(_) => AppendFailure::Damaged(error),
            });
        }
        let mut guard = self.indexes.write();
        let Some(indexes) = guard.as_mut() else {
            return Err(AppendFailure::Damaged(io::Error::other(
                "append to a sealed segment",
            )));
        };
        let mut state = self.append.lock();
        let mut position = start;
        for (header, _) in batches {
            let header = BatchHeader::parse(&header[..])
                .map_err(|e| AppendFailure::Damaged(io::Error::other(e)))?;
            self.index_batch(indexes, &mut state, &header, position);
            position += header.total_len() as u64;
        }
        self.max_timestamp
            .store(state.max_timestamp, Ordering::Release);
        self.size.store(position, Ordering::Release);
        Ok(())
    }

    fn read_header(&self, position: u64, limit: u64) -> io::Result<Option<[u8; HEADER_LEN]>> {
        if position + HEADER_LEN as u64 > limit {
            return Ok(None);
        }
        let mut header = [0u8; HEADER_LEN];
        self.file.read_exact_at(&mut header, position)?;
        Ok(Some(header))
    }

    /// Calls `visit(position, bytes)` for each batch from `position` up to `limit`, where
    /// `bytes` is the whole batch when `whole` is set and at least its header otherwise.
    /// Stops at the first batch that does not parse or fit, or when `visit` returns false,
    /// and returns the position it stopped at.
    fn walk(
        &self,
        mut position: u64,
        limit: u64,
        whole: bool,
        mut visit: impl FnMut(u64, &[u8]) -> bool,
    ) -> io::Result<u64> {
        let mut buf: Vec<u8> = Vec::new();
        let mut buf_start = position;
        let fill =
            |buf: &mut Vec<u8>, buf_start: &mut u64, at: u64, need: usize| -> io::Result<()> {
                if at >= *buf_start && at + need as u64 <= *buf_start + buf.len() as u64 {
                    return Ok(());
                }
                let len = need.max(WALK_CHUNK).min((limit - at) as usize);
                buf.resize(len, 0);
                self.file.read_exact_at(buf, at)?;
                *buf_start = at;
                Ok(())
            };
        while position + HEADER_LEN as u64 <= limit {
            fill(&mut buf, &mut buf_start, position, HEADER_LEN)?;
            let total = match BatchHeader::parse(&buf[(position - buf_start) as usize..]) {
                Ok(header) => header.total_len(),
                Err(_) => break,
            };
            if position + total as u64 > limit {
                break;
            }
            let need = if whole { total } else { HEADER_LEN };
            fill(&mut buf, &mut buf_start, position, need)?;
            let at = (position - buf_start) as usize;
            let end = if whole {
                at + total
            } else {
                buf.len().min(at + total)
            };
            if !visit(position, &buf[at..end]) {
                break;
            }
            position += total as u64;
        }
        Ok(position)
    }

    /// Opens and checks the indexes of a sealed segment on first use.
    fn with_indexes<T>(&self, f: impl FnOnce(&Indexes) -> T) -> io::Result<T> {
        {
            let guard = self.indexes.read();
            if let Some(indexes) = guard.as_ref() {
                return Ok(f(indexes));
            }
        }
        let mut guard = self.indexes.write();
        if guard.is_none() {
            *guard = Some(self.load_sealed_indexes()?);
        }
        Ok(f(guard
            .as_ref()
            .ok_or_else(|| io::Error::other("indexes vanished"))?))
    }

    fn load_sealed_indexes(&self) -> io::Result<Indexes> {
        let size = self.size();
        let loaded = OffsetIndex::open_read_only(&self.path(INDEX_SUFFIX), self.base_offset)
            .and_then(|offset| {
                Ok(Indexes {
                    offset,
                    time: TimeIndex::open_read_only(
                        &self.path(TIME_INDEX_SUFFIX),
                        self.base_offset,
                    )?,
                })
            });
        match loaded {
            Ok(indexes) if indexes.offset.is_consistent_with(size) => {
                // The time index may lack its final entry (full, or a crash during a roll):
                // the batches after the last offset index entry are read to be sure.
                let (_, tail) = indexes.offset.last().unwrap_or((self.base_offset, 0));
                let indexed = indexes.time.last().map_or(NO_TIMESTAMP, |(ts, _)| ts);
                let max_timestamp = indexed.max(self.scan_max_timestamp(u64::from(tail))?);
                self.max_timestamp.store(max_timestamp, Ordering::Release);
                Ok(indexes)
            }
            Ok(_) => {
                tracing::warn!(segment = %self.path(LOG_SUFFIX).display(), "index does not match its log; rebuilding it");
                self.rebuild_sealed_indexes()
            }
            Err(error) => {
                tracing::warn!(segment = %self.path(LOG_SUFFIX).display(), %error, "index unreadable; rebuilding it");
                self.rebuild_sealed_indexes()
            }
        }
    }

    /// Rebuilds both indexes of a sealed segment from its log.
    fn rebuild_sealed_indexes(&self) -> io::Result<Indexes> {
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            remove_if_present(&self.path(suffix))?;
        }
        // One entry per index interval at most, plus the final time entry.
        let max_bytes = (self.size() / self.index_interval.max(1) + 2) * 12;
        let mut indexes = Indexes::open_writable(&self.dir, self.base_offset, max_bytes)?;
        let mut state = AppendState::empty(self.base_offset);
        self.walk(
            0,
            self.size(),
            false,
            |position, bytes| match BatchHeader::parse(bytes) {
                Ok(header) => {
                    self.index_batch(&mut indexes, &mut state, &header, position);
                    true
                }
                Err(_) => false,
            },
        )?;
        indexes
            .time
            .maybe_append(state.max_timestamp, state.last_batch_offset);
        indexes.offset.seal()?;
        indexes.time.seal()?;
        self.max_timestamp
            .store(state.max_timestamp, Ordering::Release);
        Ok(indexes)
    }

    /// The largest batch timestamp from `position` to the end.
    fn scan_max_timestamp(&self, position: u64) -> io::Result<i64> {
        let mut max = NO_TIMESTAMP;
        self.walk(
            position,
            self.size(),
            false,
            |_, bytes| match BatchHeader::parse(bytes) {
                Ok(header) => {
                    max = max.max(header.max_timestamp());
                    true
                }
                Err(_) => false,
            },
        )?;
        Ok(max)
    }

    /// The position and header of the first batch holding offsets at or after `target`,
    /// looking no further than `limit` bytes.
    pub fn find_batch(
        &self,
        target: i64,
        limit: u64,
    ) -> io::Result<Option<(u64, [u8; HEADER_LEN])>> {
        let (_, start) = self.with_indexes(|i| i.offset.lookup(target))?;
        self.find_from(u64::from(start), limit, |h| h.last_offset() >= target)
    }

    /// The position of the first batch holding a record with a timestamp at or after
    /// `timestamp`, looking no further than `limit` bytes.
    pub fn find_by_timestamp(&self, timestamp: i64, limit: u64) -> io::Result<Option<u64>> {
        let (_, start) = self.with_indexes(|i| i.offset.lookup(i.time.lookup(timestamp)))?;
        let found = self.find_from(u64::from(start), limit, |h| h.max_timestamp() >= timestamp)?;
        Ok(found.map(|(position, _)| position))
    }

    /// The first batch from `start` that `wanted` accepts, with its position and header.
    /// Bytes that are not a whole batch before `limit` are reported as damage.
    fn find_from(
        &self,
        start: u64,
        limit: u64,
        wanted: impl Fn(&BatchHeader<'_>) -> bool,
    ) -> io::Result<Option<(u64, [u8; HEADER_LEN])>> {
        let mut found = None;
        let stopped = self.walk(
            start,
            limit,
            false,
            |position, bytes| match BatchHeader::parse(bytes) {
                Ok(header) if wanted(&header) => {
                    found = Some((position, header.header_bytes()));
                    false
                }
                Ok(_) => true,
                Err(_) => false,
            },
        )?;
        if found.is_none() && stopped < limit {
            return Err(self.damaged_at(stopped));
        }
        Ok(found)
    }

    /// Calls `visit` with the header of every batch holding offsets at or after `offset`.
    pub fn visit_headers_from(
        &self,
        offset: i64,
        mut visit: impl FnMut(&BatchHeader<'_>),
    ) -> io::Result<()> {
        let (_, start) = self.with_indexes(|i| i.offset.lookup(offset))?;
        let limit = self.size();
        let stopped = self.walk(
            u64::from(start),
            limit,
            false,
            |_, bytes| match BatchHeader::parse(bytes) {
                Ok(header) => {
                    if header.last_offset() >= offset {
                        visit(&header);
                    }
                    true
                }
                Err(_) => false,
            },
        )?;
        if stopped < limit {
            Err(self.damaged_at(stopped))
        } else {
            Ok(())
        }
    }

    /// The error for bytes at `position` that are not a whole batch although the segment
    /// says they are.
    fn damaged_at(&self, position: u64) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is damaged at byte {position}: no whole record batch there",
                self.path(LOG_SUFFIX).display()
            ),
        )
    }

    /// Largest record timestamp in the segment, or None when it is empty.
    pub fn max_timestamp(&self) -> io::Result<Option<i64>> {
        if self.max_timestamp.load(Ordering::Acquire) == NO_TIMESTAMP && self.size() > 0 {
            self.with_indexes(|_| ())?;
        }
        Ok(Some(self.max_timestamp.load(Ordering::Acquire)).filter(|&ts| ts != NO_TIMESTAMP))
    }

    /// Reads `len` bytes at `position`.
    pub fn read(&self, position: u64, len: usize) -> io::Result<Bytes> {
        // Read straight into unfilled memory: zeroing it first would cost a pass over the
        // bytes for nothing on the fetch path.
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            let at = position + buf.len() as u64;
            let read = rustix::io::pread(&self.file, rustix::buffer::spare_capacity(&mut buf), at)?;
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "segment ended early",
                ));
            }
        }
        buf.truncate(len);
        Ok(Bytes::from(buf))
    }

    /// fsyncs the log data.
    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Stops taking appends: the time index gets a final entry for the largest timestamp,
    /// and both indexes are trimmed to their real size and mapped read-only.
    pub fn seal(&self) -> io::Result<()> {
        let mut guard = self.indexes.write();
        if let Some(indexes) = guard.as_mut() {
            let state = *self.append.lock();
            if !indexes.time.is_full() {
                indexes
                    .time
                    .maybe_append(state.max_timestamp, state.last_batch_offset);
            }
            indexes.offset.seal()?;
            indexes.time.seal()?;
        }
        // The maps are reloaded when a read needs them; until then a sealed segment costs
        // one file descriptor and no mappings. The largest timestamp stays known.
        *guard = None;
        Ok(())
    }

    /// Removes the batch holding `offset` and everything after it, and makes the segment
    /// writable again. Returns the offset the segment now ends at.
    pub fn truncate_to(&self, offset: i64, index_bytes: u64) -> io::Result<i64> {
        let found = self.find_batch(offset, self.size())?;
        {
            let mut guard = self.indexes.write();
            if guard.is_none() {
                *guard = Some(self.load_sealed_indexes()?);
            }
            let indexes = guard
                .as_mut()
                .ok_or_else(|| io::Error::other("indexes vanished"))?;
            if let Some((position, header)) = found {
                let cut_offset = BatchHeader::parse(&header)
                    .map_err(io::Error::other)?
                    .base_offset();
                indexes.offset.truncate_to(cut_offset)?;
                indexes.time.truncate_to(cut_offset)?;
                self.file.set_len(position)?;
                self.size.store(position, Ordering::Release);
            }
            indexes.offset.unseal(index_bytes as usize)?;
            indexes.time.unseal(index_bytes as usize)?;
        }
        Ok(self.recover_tail(false)?.next_offset)
    }

    /// Deletes the segment's files. Readers holding the segment keep reading the open file.
    pub fn delete(&self) -> io::Result<()> {
        for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            remove_if_present(&self.path(suffix))?;
        }
        Ok(())
    }
}

/// How an append failed.
#[derive(Debug)]
pub(crate) enum AppendFailure {
    /// Nothing was written; the log is as it was.
    RolledBack(io::Error),
    /// Part of a batch may be on disk and could not be removed.
    Damaged(io::Error),
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn write_all_vectored(mut file: &File, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the disk accepted no bytes",
                ));
            }
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
