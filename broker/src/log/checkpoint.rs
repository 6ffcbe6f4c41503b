//! Files that must never be seen half-written: written to a temporary file, fsynced, renamed
//! over the old one, and the directory fsynced.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::TopicPartition;

/// Replaces `path` with `contents` so that a crash, even of the machine, leaves either the
/// old or the new file: written to a temporary file, fsynced, renamed, directory fsynced.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    replace(path, contents, true)
}

/// Replaces `path` with `contents` so that a crash of the process leaves either the old or
/// the new file, without waiting for the disk: for files that can be rebuilt if a power
/// loss takes them.
pub fn replace_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    replace(path, contents, false)
}

fn replace(path: &Path, contents: &[u8], durable: bool) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut file = File::create(&tmp)?;
        file.write_all(contents)?;
        if durable {
            file.sync_all()?;
        }
    }
    fs::rename(&tmp, path)?;
    if durable {
        sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

/// Makes a directory's entries (created, renamed or removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

const VERSION: u32 = 0;

/// A per-directory table of one offset per partition, in Kafka's checkpoint format:
/// a version line, a count line, then `topic partition offset` lines.
#[derive(Debug, Clone)]
pub struct OffsetCheckpoint {
    path: PathBuf,
}

impl OffsetCheckpoint {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&self, offsets: &BTreeMap<TopicPartition, i64>) -> io::Result<()> {
        let mut out = format!("{VERSION}\n{}\n", offsets.len());
        for (tp, offset) in offsets {
            out.push_str(&format!("{} {} {}\n", tp.topic, tp.partition, offset));
        }
        write_atomically(&self.path, out.as_bytes())
    }

    /// Reads the table; a missing file is an empty table.
    pub fn read(&self) -> io::Result<BTreeMap<TopicPartition, i64>> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(e),
        };
        let malformed = |line: usize, why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} line {line}: {why}", self.path.display()),
            )
        };
        let mut lines = text.lines();
        match lines.next().map(str::trim) {
            Some(v) if v == VERSION.to_string() => {}
            other => return Err(malformed(1, &format!("unsupported version {other:?}"))),
        }
        let count: usize = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| malformed(2, "expected an entry count"))?;
        let mut offsets = BTreeMap::new();
        for (i, line) in lines.enumerate() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let entry = match fields.as_slice() {
                [topic, partition, offset] => partition
                    .parse()
                    .ok()
                    .zip(offset.parse().ok())
                    .map(|(p, o)| (TopicPartition::new(*topic, p), o)),
                _ => None,
            };
            let (tp, offset) =
                entry.ok_or_else(|| malformed(i + 3, "expected `topic partition offset`"))?;
            offsets.insert(tp, offset);
        }
        if offsets.len() != count {
            return Err(malformed(
                2,
                &format!("says {count} entries but holds {}", offsets.len()),
            ));
        }
        Ok(offsets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = OffsetCheckpoint::new(dir.path().join("recovery-point-offset-checkpoint"));
        assert!(checkpoint.read().unwrap().is_empty());
        let offsets = BTreeMap::from([
            (TopicPartition::new("a-b", 0), 10),
            (TopicPartition::new("c", 7), 0),
        ]);
        checkpoint.write(&offsets).unwrap();
        assert_eq!(checkpoint.read().unwrap(), offsets);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["recovery-point-offset-checkpoint"]);
    }

    #[test]
    fn a_damaged_checkpoint_is_an_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp");
        fs::write(&path, "0\n2\na 0 5\nb zero 6\n").unwrap();
        let err = OffsetCheckpoint::new(path.clone()).read().unwrap_err();
        assert!(err.to_string().contains("line 4"), "{err}");
        fs::write(&path, "0\n3\na 0 5\n").unwrap();
        let err = OffsetCheckpoint::new(path).read().unwrap_err();
        assert!(err.to_string().contains("says 3 entries"), "{err}");
    }
}
