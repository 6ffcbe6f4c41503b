//! The sparse indexes of a segment, as memory-mapped files of fixed-size big-endian entries.
//!
//! - Offset index: `relative offset u32 | file position u32`, one entry every
//!   `index.interval.bytes` of log, pointing at the start of a batch.
//! - Time index: `timestamp i64 | relative offset u32`: the largest timestamp seen up to and
//!   including the batch at that offset, added when it grows.
//!
//! The active segment's index files are preallocated and mapped writable; on roll they are
//! sealed: truncated to their real length and mapped read-only. Neither index ever
//! holds an entry for the first batch of a segment (position 0), so an entry that is all
//! zeros marks the end of the written entries, which is how a preallocated file left by a
//! crash is read back.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use memmap2::{Advice, Mmap, MmapMut, MmapOptions};

enum Map {
    /// A sealed file with no entries (an empty file cannot be mapped).
    Empty,
    ReadOnly(Mmap),
    Writable(MmapMut),
}

impl Map {
    fn bytes(&self) -> &[u8] {
        match self {
            Map::Empty => &[],
            Map::ReadOnly(map) => map,
            Map::Writable(map) => map,
        }
    }
}

/// Maps `len` bytes of `file`.
#[allow(unsafe_code)]
fn map(file: &File, len: usize, writable: bool) -> io::Result<Map> {
    if len == 0 {
        return Ok(Map::Empty);
    }
    let options = {
        let mut options = MmapOptions::new();
        options.len(len);
        options
    };
    // SAFETY: index files belong to this broker process: it holds the data directory lock,
    // so no other process modifies them. This module shrinks a file only below entries it
    // has already forgotten, so no read through a mapping reaches past the end of its file.
    // The mapping is private to the owning index value.
    let map = unsafe {
        if writable {
            Map::Writable(options.map_mut(file)?)
        } else {
            Map::ReadOnly(options.map(file)?)
        }
    };
    // Lookups touch a few scattered entries: readahead would only zero-fill and read pages
    // of the (mostly sparse) file that nobody looks at.
    match &map {
        Map::Writable(m) => m.advise(Advice::Random)?,
        Map::ReadOnly(m) => m.advise(Advice::Random)?,
        Map::Empty => {}
    }
    Ok(map)
}

/// A file of fixed-size entries, `E` bytes each. No descriptor is kept open: a mapping
/// needs none, and the few operations that change the file's length reopen it.
struct IndexFile<const E: usize> {
    path: PathBuf,
    map: Map,
    entries: usize,
}

fn open_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

impl<const E: usize> IndexFile<E> {
    /// Opens `path` for appending (creating it), preallocated to `max_bytes`.
    fn open_writable(
        path: &Path,
        max_bytes: usize,
        filled: impl Fn(&[u8]) -> bool,
    ) -> io::Result<Self> {
        let file = open_file(path)?;
        let existing = file.metadata()?.len() as usize / E * E;
        let capacity = (max_bytes / E * E).max(existing).max(E);
        file.set_len(capacity as u64)?;
        let map = map(&file, capacity, true)?;
        let mut index = Self {
            path: path.to_path_buf(),
            map,
            entries: 0,
        };
        // A file that was empty holds no entries. Any other is searched, even when its
        // length looks trimmed: it may have been preallocated at a smaller size. The search
        // touches a few pages (no readahead, see `map`); in a new sparse file each would
        // become a page of zeros in memory, some 50 KiB per index.
        if existing > 0 {
            index.entries = index.count_filled(filled);
        }
        Ok(index)
    }

    /// Opens a sealed index read-only.
    fn open_read_only(path: &Path, filled: impl Fn(&[u8]) -> bool) -> io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len() as usize / E * E;
        let map = map(&file, len, false)?;
        let mut index = Self {
            path: path.to_path_buf(),
            map,
            entries: 0,
        };
        index.entries = index.count_filled(filled);
        Ok(index)
    }

    fn count_filled(&self, filled: impl Fn(&[u8]) -> bool) -> usize {
        let capacity = self.map.bytes().len() / E;
        let (mut low, mut high) = (0, capacity);
        while low < high {
            let mid = (low + high) / 2;
            if filled(self.entry(mid)) {
                low = mid + 1
            } else {
                high = mid
            }
        }
        low
    }

    fn entry(&self, i: usize) -> &[u8] {
        &self.map.bytes()[i * E..(i + 1) * E]
    }

    fn is_full(&self) -> bool {
        match &self.map {
            Map::Writable(map) => (self.entries + 1) * E > map.len(),
            _ => true,
        }
    }

    fn push(&mut self, entry: [u8; E]) {
        let at = self.entries * E;
        match &mut self.map {
            Map::Writable(map) if at + E <= map.len() => {
                map[at..at + E].copy_from_slice(&entry);
                self.entries += 1;
            }
            _ => unreachable!("push on a full or sealed index; callers check is_full"),
        }
    }

    /// Resizes the file to `len` bytes and maps it again. The old map is replaced only once
    /// the new one exists, so a failure leaves a usable index; a shrink never cuts below
    /// `entries`, so what the old map may still be asked for stays inside the file.
    fn remap(&mut self, len: usize, writable: bool) -> io::Result<()> {
        let file = open_file(&self.path)?;
        file.set_len(len as u64)?;
        self.map = map(&file, len, writable)?;
        Ok(())
    }

    /// Keeps the first `n` entries; the rest are zeroed so a crash cannot revive them.
    fn truncate_entries(&mut self, n: usize) -> io::Result<()> {
        if n >= self.entries {
            return Ok(());
        }
        if let Map::Writable(map) = &mut self.map {
            map[n * E..self.entries * E].fill(0);
            self.entries = n;
            Ok(())
        } else {
            // A sealed file: forget the entries first, then cut the file and map what is left.
            self.entries = n;
            self.remap(n * E, false)
        }
    }

    /// Truncates the file to its entries and maps it read-only. Nothing is forced to disk:
    /// an index is rebuilt from its log if a crash leaves it wrong, and a clean shutdown
    /// syncs the whole file system once.
    fn seal(&mut self) -> io::Result<()> {
        self.remap(self.entries * E, false)
    }

    /// Maps the file writable again at `max_bytes` (a sealed segment becoming active again
    /// after truncation).
    fn unseal(&mut self, max_bytes: usize) -> io::Result<()> {
        if matches!(self.map, Map::Writable(_)) {
            return Ok(());
        }
        self.remap((max_bytes / E * E).max((self.entries + 1) * E), true)
    }
}

fn u32_at(entry: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([entry[at], entry[at + 1], entry[at + 2], entry[at + 3]])
}

/// Offset -> file position, sparse.
pub(crate) struct OffsetIndex {
    base_offset: i64,
    file: IndexFile<8>,
}

fn offset_entry_filled(entry: &[u8]) -> bool {
    u32_at(entry, 4) != 0
}

impl OffsetIndex {
    pub fn open_writable(path: &Path, base_offset: i64, max_bytes: usize) -> io::Result<Self> {
        Ok(Self {
            base_offset,
            file: IndexFile::open_writable(path, max_bytes, offset_entry_filled)?,
        })
    }

    pub fn open_read_only(path: &Path, base_offset: i64) -> io::Result<Self> {
        Ok(Self {
            base_offset,
            file: IndexFile::open_read_only(path, offset_entry_filled)?,
        })
    }

    pub fn len(&self) -> usize {
        self.file.entries
    }

    pub fn is_full(&self) -> bool {
        self.file.is_full()
    }

    fn decode(&self, i: usize) -> (i64, u32) {
        let entry = self.file.entry(i);
        (
            self.base_offset + i64::from(u32_at(entry, 0)),
            u32_at(entry, 4),
        )
    }

    pub fn last(&self) -> Option<(i64, u32)> {
        self.len().checked_sub(1).map(|i| self.decode(i))
    }

    /// Adds an entry for the batch starting at `position`. Entries must grow in both offset
    /// and position; position 0 is never indexed (the segment start is implied).
    pub fn append(&mut self, offset: i64, position: u32) {
        debug_assert!(position > 0 && self.last().is_none_or(|(o, p)| o < offset && p < position));
        let mut entry = [0u8; 8];
        entry[..4].copy_from_slice(&((offset - self.base_offset) as u32).to_be_bytes());
        entry[4..].copy_from_slice(&position.to_be_bytes());
        self.file.push(entry);
    }

    /// The largest entry at or below `target`, or the segment start.
    pub fn lookup(&self, target: i64) -> (i64, u32) {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = (low + high) / 2;
            if self.decode(mid).0 <= target {
                low = mid + 1
            } else {
                high = mid
            }
        }
        if low == 0 {
            (self.base_offset, 0)
        } else {
            self.decode(low - 1)
        }
    }

    /// Drops entries for offsets at or above `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> io::Result<()> {
        let keep = (0..self.len())
            .take_while(|&i| self.decode(i).0 < offset)
            .count();
        self.file.truncate_entries(keep)
    }

    /// Entries pointing at or past `size` bytes are impossible for a log of that size.
    pub fn is_consistent_with(&self, log_size: u64) -> bool {
        self.last().is_none_or(|(offset, position)| {
            offset > self.base_offset && u64::from(position) < log_size
        })
    }

    pub fn seal(&mut self) -> io::Result<()> {
        self.file.seal()
    }

    pub fn unseal(&mut self, max_bytes: usize) -> io::Result<()> {
        self.file.unseal(max_bytes)
    }
}

/// Timestamp -> offset, sparse.
pub(crate) struct TimeIndex {
    base_offset: i64,
    file: IndexFile<12>,
}

fn time_entry_filled(entry: &[u8]) -> bool {
    u32_at(entry, 8) != 0
}

impl TimeIndex {
    pub fn open_writable(path: &Path, base_offset: i64, max_bytes: usize) -> io::Result<Self> {
        Ok(Self {
            base_offset,
            file: IndexFile::open_writable(path, max_bytes, time_entry_filled)?,
        })
    }

    pub fn open_read_only(path: &Path, base_offset: i64) -> io::Result<Self> {
        Ok(Self {
            base_offset,
            file: IndexFile::open_read_only(path, time_entry_filled)?,
        })
    }

    pub fn len(&self) -> usize {
        self.file.entries
    }

    pub fn is_full(&self) -> bool {
        self.file.is_full()
    }

    fn decode(&self, i: usize) -> (i64, i64) {
        let entry = self.file.entry(i);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&entry[..8]);
        (
            i64::from_be_bytes(ts),
            self.base_offset + i64::from(u32_at(entry, 8)),
        )
    }

    /// (timestamp, offset) of the last entry.
    pub fn last(&self) -> Option<(i64, i64)> {
        self.len().checked_sub(1).map(|i| self.decode(i))
    }

    /// Records that the largest timestamp up to and including the batch at `offset` is
    /// `timestamp`. Only grows: an entry that would not raise the timestamp is skipped.
    pub fn maybe_append(&mut self, timestamp: i64, offset: i64) {
        if self
            .last()
            .is_some_and(|(ts, o)| ts >= timestamp || o >= offset)
            || offset <= self.base_offset
        {
            return;
        }
        let mut entry = [0u8; 12];
        entry[..8].copy_from_slice(&timestamp.to_be_bytes());
        entry[8..].copy_from_slice(&((offset - self.base_offset) as u32).to_be_bytes());
        self.file.push(entry);
    }

    /// An offset from which scanning finds the first record with a timestamp at or after
    /// `timestamp`: every record before it is older.
    pub fn lookup(&self, timestamp: i64) -> i64 {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = (low + high) / 2;
            if self.decode(mid).0 < timestamp {
                low = mid + 1
            } else {
                high = mid
            }
        }
        if low == 0 {
            self.base_offset
        } else {
            self.decode(low - 1).1
        }
    }

    pub fn truncate_to(&mut self, offset: i64) -> io::Result<()> {
        let keep = (0..self.len())
            .take_while(|&i| self.decode(i).1 < offset)
            .count();
        self.file.truncate_entries(keep)
    }

    pub fn seal(&mut self) -> io::Result<()> {
        self.file.seal()
    }

    pub fn unseal(&mut self, max_bytes: usize) -> io::Result<()> {
        self.file.unseal(max_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookups_find_the_largest_entry_at_or_below_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = OffsetIndex::open_writable(&dir.path().join("i"), 100, 1024).unwrap();
        assert_eq!(index.lookup(150), (100, 0));
        index.append(110, 4000);
        index.append(120, 8000);
        index.append(130, 12000);
        assert_eq!(index.lookup(99), (100, 0));
        assert_eq!(index.lookup(109), (100, 0));
        assert_eq!(index.lookup(110), (110, 4000));
        assert_eq!(index.lookup(125), (120, 8000));
        assert_eq!(index.lookup(1_000_000), (130, 12000));
    }

    #[test]
    fn a_preallocated_index_left_by_a_crash_reopens_with_its_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i");
        {
            let mut index = OffsetIndex::open_writable(&path, 0, 800).unwrap();
            index.append(5, 100);
            index.append(9, 200);
            // Dropped without sealing, as a crash would leave it.
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 800);
        let index = OffsetIndex::open_writable(&path, 0, 800).unwrap();
        assert_eq!((index.len(), index.last()), (2, Some((9, 200))));
        let index = OffsetIndex::open_read_only(&path, 0).unwrap();
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn sealing_trims_the_file_and_reopening_grows_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i");
        let mut index = OffsetIndex::open_writable(&path, 0, 800).unwrap();
        index.append(5, 100);
        index.seal().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8);
        assert_eq!(index.lookup(7), (5, 100));
        index.unseal(800).unwrap();
        index.append(8, 300);
        assert_eq!(index.lookup(9), (8, 300));
        drop(index);
        let index = OffsetIndex::open_writable(&path, 0, 800).unwrap();
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn an_empty_sealed_index_opens_and_answers_the_segment_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i");
        OffsetIndex::open_writable(&path, 40, 800)
            .unwrap()
            .seal()
            .unwrap();
        let index = OffsetIndex::open_read_only(&path, 40).unwrap();
        assert_eq!((index.len(), index.lookup(45)), (0, (40, 0)));
    }

    #[test]
    fn truncation_forgets_entries_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i");
        let mut index = OffsetIndex::open_writable(&path, 0, 800).unwrap();
        for i in 1..=5 {
            index.append(i * 10, (i * 100) as u32);
        }
        index.truncate_to(30).unwrap();
        assert_eq!(index.last(), Some((20, 200)));
        drop(index);
        let mut index = OffsetIndex::open_writable(&path, 0, 800).unwrap();
        assert_eq!(index.last(), Some((20, 200)));
        index.seal().unwrap();
        index.truncate_to(15).unwrap();
        assert_eq!(index.last(), Some((10, 100)));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8);
    }

    #[test]
    fn a_full_index_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = OffsetIndex::open_writable(&dir.path().join("i"), 0, 16).unwrap();
        assert!(!index.is_full());
        index.append(1, 10);
        assert!(!index.is_full());
        index.append(2, 20);
        assert!(index.is_full());
    }

    #[test]
    fn time_lookups_point_before_the_first_record_at_or_after_the_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = TimeIndex::open_writable(&dir.path().join("t"), 0, 1200).unwrap();
        index.maybe_append(1000, 10);
        index.maybe_append(900, 20); // not larger: skipped
        index.maybe_append(2000, 30);
        assert_eq!(index.len(), 2);
        assert_eq!(index.lookup(500), 0);
        assert_eq!(index.lookup(1000), 0);
        assert_eq!(index.lookup(1001), 10);
        assert_eq!(index.lookup(2500), 30);
        index.truncate_to(30).unwrap();
        assert_eq!(index.last(), Some((1000, 10)));
    }
}
