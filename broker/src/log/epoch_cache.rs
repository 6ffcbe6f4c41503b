//! The leader-epoch cache of a partition replica: the offset at which each leader epoch
//! started (KIP-101/279). A replica that follows a new leader uses it to find where its log
//! and the leader's diverge, and truncates there before fetching.
//!
//! Kept in `leader-epoch-checkpoint` in the partition directory, in Kafka's format: a version
//! line, a count line, then `epoch start_offset` lines.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::checkpoint::write_atomically;

const FILE: &str = "leader-epoch-checkpoint";
const VERSION: u32 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

#[derive(Debug)]
pub(crate) struct EpochCache {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    /// Loads the cache of the partition in `dir`; a missing or unreadable file is an empty
    /// cache (it is rebuilt as batches are appended).
    pub fn open(dir: &Path) -> Self {
        let path = dir.join(FILE);
        let entries = fs::read_to_string(&path)
            .ok()
            .and_then(|text| parse(&text))
            .unwrap_or_default();
        Self { path, entries }
    }

    #[cfg(test)]
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start_offset`, if it is newer than every epoch known.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> io::Result<()> {
        if epoch < 0 || self.latest().is_some_and(|latest| latest.epoch >= epoch) {
            return Ok(());
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.write()
    }

    /// The largest epoch at or below `requested` and the offset where it ends (where the
    /// next epoch starts, or `log_end_offset` for the latest); None when no epoch that old
    /// is known.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        let at = self.entries.iter().rposition(|e| e.epoch <= requested)?;
        let end = self
            .entries
            .get(at + 1)
            .map_or(log_end_offset, |next| next.start_offset);
        Some((self.entries[at].epoch, end))
    }

    /// Forgets epochs starting at or after `end_offset` (the log was truncated there).
    pub fn truncate_from_end(&mut self, end_offset: i64) -> io::Result<()> {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        if self.entries.len() != before {
            self.write()
        } else {
            Ok(())
        }
    }

    /// Forgets everything: the log starts again empty.
    pub fn clear(&mut self) -> io::Result<()> {
        self.entries.clear();
        self.write()
    }

    fn write(&self) -> io::Result<()> {
        let mut text = format!("{VERSION}\n{}\n", self.entries.len());
        for entry in &self.entries {
            text.push_str(&format!("{} {}\n", entry.epoch, entry.start_offset));
        }
        write_atomically(&self.path, text.as_bytes())
    }
}

fn parse(text: &str) -> Option<Vec<EpochEntry>> {
    let mut lines = text.lines();
    if lines.next()?.trim() != VERSION.to_string() {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let entries: Vec<EpochEntry> = lines
        .map(|line| {
            let (epoch, offset) = line.trim().split_once(' ')?;
            Some(EpochEntry {
                epoch: epoch.parse().ok()?,
                start_offset: offset.parse().ok()?,
            })
        })
        .collect::<Option<_>>()?;
    (entries.len() == count).then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_recorded_once_in_order_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = EpochCache::open(dir.path());
        cache.assign(0, 0).unwrap();
        cache.assign(0, 10).unwrap(); // same epoch: ignored
        cache.assign(2, 50).unwrap();
        cache.assign(1, 60).unwrap(); // older: ignored
        let expected = [
            EpochEntry {
                epoch: 0,
                start_offset: 0,
            },
            EpochEntry {
                epoch: 2,
                start_offset: 50,
            },
        ];
        assert_eq!(cache.entries(), expected);
        assert_eq!(EpochCache::open(dir.path()).entries(), expected);
    }

    #[test]
    fn end_offsets_are_where_the_next_epoch_starts() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = EpochCache::open(dir.path());
        cache.assign(1, 0).unwrap();
        cache.assign(3, 40).unwrap();
        cache.assign(4, 90).unwrap();
        assert_eq!(cache.end_offset_for(1, 120), Some((1, 40)));
        assert_eq!(
            cache.end_offset_for(2, 120),
            Some((1, 40)),
            "epoch 2 never led: the one before it"
        );
        assert_eq!(cache.end_offset_for(3, 120), Some((3, 90)));
        assert_eq!(cache.end_offset_for(7, 120), Some((4, 120)));
        assert_eq!(cache.end_offset_for(0, 120), None);
    }

    #[test]
    fn truncation_forgets_later_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = EpochCache::open(dir.path());
        cache.assign(1, 0).unwrap();
        cache.assign(2, 40).unwrap();
        cache.truncate_from_end(40).unwrap();
        assert_eq!(
            cache.latest(),
            Some(EpochEntry {
                epoch: 1,
                start_offset: 0
            })
        );
        cache.clear().unwrap();
        assert_eq!(EpochCache::open(dir.path()).latest(), None);
    }

    #[test]
    fn a_damaged_file_is_an_empty_cache() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), "0\n3\n1 0\n").unwrap();
        assert!(EpochCache::open(dir.path()).entries().is_empty());
    }
}
