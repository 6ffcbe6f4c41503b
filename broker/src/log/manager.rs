//! All the logs in one data directory: loading them at start-up (trusting them after a
//! clean shutdown, checking their tails after a crash), creating and deleting them, the
//! checkpoint files, and the clean-shutdown marker.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

use super::checkpoint::{OffsetCheckpoint, sync_dir, write_atomically};
use super::{Log, LogConfig, LogError};
use crate::TopicPartition;

const LOCK_FILE: &str = ".lock";
const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
const RECOVERY_POINT_FILE: &str = "recovery-point-offset-checkpoint";
const LOG_START_FILE: &str = "log-start-offset-checkpoint";
const DELETE_SUFFIX: &str = "-delete";

#[derive(Debug, thiserror::Error)]
pub enum LogManagerError {
    #[error("data directory {path}: {what}: {source}")]
    Dir {
        path: PathBuf,
        what: String,
        source: io::Error,
    },
    #[error(
        "data directory {0} is in use by another broker process (it holds {0}/.lock); \
         stop that broker or give this one another --data-dir"
    )]
    Locked(PathBuf),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// What loading the data directory found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadReport {
    pub clean_shutdown: bool,
    pub logs: usize,
    pub segments: usize,
    pub truncated_bytes: u64,
    pub millis: u128,
}

pub struct LogManager {
    data_dir: PathBuf,
    /// Held for the life of the manager: one broker per data directory.
    _lock: File,
    logs: RwLock<BTreeMap<TopicPartition, Arc<Log>>>,
    recovery_points: OffsetCheckpoint,
    log_starts: OffsetCheckpoint,
    /// Serialises checkpoint writes.
    checkpointing: Mutex<()>,
    /// Directories of deleted logs, for the thread that removes them.
    deleter: Mutex<std::sync::mpsc::Sender<PathBuf>>,
    report: LoadReport,
}

impl std::fmt::Debug for LogManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogManager")
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl LogManager {
    /// Opens `data_dir` (creating it if missing), takes its lock and loads every log in it.
    /// `config_for` gives the configuration to open each partition's log with.
    pub fn open(
        data_dir: &Path,
        config_for: impl Fn(&TopicPartition) -> LogConfig + Sync,
    ) -> Result<Self, LogManagerError> {
        let started = Instant::now();
        let dir_error = |what: &str| {
            let path = data_dir.to_path_buf();
            let what = what.to_string();
            move |source| LogManagerError::Dir { path, what, source }
        };
        if data_dir.exists() && !data_dir.is_dir() {
            return Err(LogManagerError::Dir {
                path: data_dir.to_path_buf(),
                what: "exists but is not a directory".into(),
                source: io::Error::new(io::ErrorKind::AlreadyExists, "not a directory"),
            });
        }
        fs::create_dir_all(data_dir).map_err(dir_error("cannot create it"))?;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(data_dir.join(LOCK_FILE))
            .map_err(dir_error("is not writable (cannot create its lock file)"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LogManagerError::Locked(data_dir.to_path_buf()));
            }
            Err(TryLockError::Error(e)) => return Err(dir_error("cannot lock it")(e)),
        }
        // Prove the directory takes writes before anything depends on it.
        write_atomically(&data_dir.join(".write-check"), b"ok")
            .and_then(|()| fs::remove_file(data_dir.join(".write-check")))
            .map_err(dir_error("is not writable"))?;

        let clean_shutdown = data_dir.join(CLEAN_SHUTDOWN_FILE).exists();
        let recovery_points = OffsetCheckpoint::new(data_dir.join(RECOVERY_POINT_FILE));
        let log_starts = OffsetCheckpoint::new(data_dir.join(LOG_START_FILE));
        let read_checkpoint = |checkpoint: &OffsetCheckpoint| {
            checkpoint.read().unwrap_or_else(|error| {
                tracing::warn!(file = %checkpoint.path().display(), %error, "ignoring an unreadable checkpoint; recovery will check more of the log");
                BTreeMap::new()
            })
        };
        let recovery = read_checkpoint(&recovery_points);
        let starts = read_checkpoint(&log_starts);

        let deleter = spawn_deleter().map_err(dir_error(
            "cannot start the thread that removes deleted logs",
        ))?;
        let mut partitions = Vec::new();
        for entry in fs::read_dir(data_dir).map_err(dir_error("cannot list it"))? {
            let entry = entry.map_err(dir_error("cannot list it"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry
                .file_type()
                .map_err(dir_error("cannot list it"))?
                .is_dir()
            {
                continue;
            }
            if name.ends_with(DELETE_SUFFIX) {
                // A topic deletion interrupted by a crash: finish it, in the background.
                let _ = deleter.send(entry.path());
            } else if let Some(tp) = TopicPartition::from_dir_name(&name) {
                partitions.push(tp);
            }
        }

        // Open logs on a few threads: start-up is mostly file opens and small reads.
        let next = AtomicUsize::new(0);
        let results = Mutex::new(Vec::with_capacity(partitions.len()));
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 8);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(tp) = partitions.get(i) else { break };
                        let checkpoints = (recovery.get(tp).copied(), starts.get(tp).copied());
                        let opened = Log::open(
                            &data_dir.join(tp.dir_name()),
                            tp.clone(),
                            config_for(tp),
                            clean_shutdown,
                            checkpoints,
                        );
                        results.lock().push(opened);
                    }
                });
            }
        });
        let mut logs = BTreeMap::new();
        let mut report = LoadReport {
            clean_shutdown,
            logs: 0,
            segments: 0,
            truncated_bytes: 0,
            millis: 0,
        };
        for opened in results.into_inner() {
            let (log, opened) = opened?;
            report.logs += 1;
            report.segments += opened.segments;
            report.truncated_bytes += opened.truncated_bytes;
            logs.insert(log.partition().clone(), Arc::new(log));
        }
        if clean_shutdown {
            fs::remove_file(data_dir.join(CLEAN_SHUTDOWN_FILE))
                .map_err(dir_error("cannot remove the clean-shutdown marker"))?;
            sync_dir(data_dir).map_err(dir_error("cannot sync it"))?;
        }
        report.millis = started.elapsed().as_millis();
        tracing::info!(
            data_dir = %data_dir.display(),
            clean_shutdown,
            logs = report.logs,
            segments = report.segments,
            truncated_bytes = report.truncated_bytes,
            millis = report.millis,
            "loaded logs"
        );
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            _lock: lock,
            logs: RwLock::new(logs),
            recovery_points,
            log_starts,
            checkpointing: Mutex::new(()),
            deleter: Mutex::new(deleter),
            report,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn load_report(&self) -> LoadReport {
        self.report
    }

    pub fn get(&self, tp: &TopicPartition) -> Option<Arc<Log>> {
        self.logs.read().get(tp).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Log>> {
        self.logs.read().values().cloned().collect()
    }

    /// The log of `tp`, created empty if this directory has none.
    pub fn get_or_create(
        &self,
        tp: &TopicPartition,
        config: LogConfig,
    ) -> Result<Arc<Log>, LogError> {
        if let Some(log) = self.get(tp) {
            return Ok(log);
        }
        let mut logs = self.logs.write();
        if let Some(log) = logs.get(tp) {
            return Ok(log.clone());
        }
        let (log, _) = Log::open(
            &self.data_dir.join(tp.dir_name()),
            tp.clone(),
            config,
            true,
            (None, None),
        )?;
        // No fsync of the directory: a partition lost with it in a power failure holds no
        // record that was fsynced, and is created again from the metadata.
        let log = Arc::new(log);
        logs.insert(tp.clone(), log.clone());
        Ok(log)
    }

    /// Deletes the log of `tp`: its directory is renamed out of the way at once (so a new log
    /// of the same name can start) and then removed. Call [`LogManager::checkpoint`] before
    /// creating a log of the same name again, so it cannot inherit this one's offsets.
    pub fn delete(&self, tp: &TopicPartition) -> Result<(), LogError> {
        let Some(log) = self.logs.write().remove(tp) else {
            return Ok(());
        };
        let io_error = |op| {
            move |source| LogError::Io {
                partition: tp.clone(),
                op,
                source,
            }
        };
        log.mark_deleted();
        let doomed = self.data_dir.join(format!(
            "{}.{}{DELETE_SUFFIX}",
            tp.dir_name(),
            uuid::Uuid::new_v4().simple()
        ));
        // Not fsynced: a partition that reappears after a power failure is found stray and
        // deleted again when the metadata is applied.
        fs::rename(log.dir(), &doomed)
            .map_err(io_error("rename the partition directory for deletion"))?;
        if let Err(unsent) = self.deleter.lock().send(doomed) {
            remove_deleted(&unsent.0);
        }
        Ok(())
    }

    /// Writes the recovery point and log start offset of every log.
    pub fn checkpoint(&self) -> Result<(), LogManagerError> {
        let _writing = self.checkpointing.lock();
        let logs = self.all();
        let recovery: BTreeMap<_, _> = logs
            .iter()
            .map(|l| (l.partition().clone(), l.recovery_point()))
            .collect();
        let starts: BTreeMap<_, _> = logs
            .iter()
            .map(|l| (l.partition().clone(), l.log_start_offset()))
            .collect();
        let dir_error = |what: &str| {
            let path = self.data_dir.clone();
            let what = what.to_string();
            move |source| LogManagerError::Dir { path, what, source }
        };
        self.recovery_points
            .write(&recovery)
            .map_err(dir_error("cannot write the recovery point checkpoint"))?;
        self.log_starts
            .write(&starts)
            .map_err(dir_error("cannot write the log start checkpoint"))?;
        Ok(())
    }

    /// Runs the flush policy of every log (rolled segments, flush.ms).
    pub fn flush_due(&self, now_ms: i64) {
        for log in self.all() {
            if let Err(error) = log.flush_if_due(now_ms) {
                tracing::error!(partition = %log.partition(), %error, "scheduled flush failed");
            }
        }
    }

    /// Flushes and closes every log, writes the checkpoints and then the clean-shutdown
    /// marker, so the next start trusts the logs without checking them.
    pub fn shutdown(&self) -> Result<(), LogManagerError> {
        let logs = self.all();
        for log in &logs {
            log.close()?;
        }
        // One sync of the whole file system instead of an fsync per file.
        File::open(&self.data_dir)
            .and_then(|dir| rustix::fs::syncfs(&dir).map_err(std::io::Error::from))
            .map_err(|source| LogManagerError::Dir {
                path: self.data_dir.clone(),
                what: "cannot sync it".into(),
                source,
            })?;
        for log in &logs {
            log.mark_flushed();
        }
        self.checkpoint()?;
        write_atomically(&self.data_dir.join(CLEAN_SHUTDOWN_FILE), b"").map_err(|source| {
            LogManagerError::Dir {
                path: self.data_dir.clone(),
                what: "cannot write the clean-shutdown marker".into(),
                source,
            }
        })?;
        tracing::info!(data_dir = %self.data_dir.display(), "logs flushed and closed cleanly");
        Ok(())
    }
}

/// Starts the thread that removes the directories of deleted logs; it ends with the manager.
fn spawn_deleter() -> io::Result<std::sync::mpsc::Sender<PathBuf>> {
    let (sender, receiver) = std::sync::mpsc::channel::<PathBuf>();
    std::thread::Builder::new()
        .name("log-deleter".into())
        .spawn(move || {
            for dir in receiver {
                remove_deleted(&dir);
            }
        })?;
    Ok(sender)
}

/// Removes a deleted log's directory. Its segment files are emptied first: that frees
/// their page cache here, not in whichever request handler closes the last open handle of
/// a big deleted file (which can take hundreds of milliseconds). Indexes are left whole, as
/// a reader may still have one mapped.
fn remove_deleted(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log")
                && let Ok(file) = OpenOptions::new().write(true).open(&path)
            {
                let _ = file.set_len(0);
            }
        }
    }
    if let Err(error) = fs::remove_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), %error, "could not remove the directory of a deleted log; the next start tries again");
    }
}
