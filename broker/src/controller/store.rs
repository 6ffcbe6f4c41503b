//! Where the controller keeps cluster metadata: a key-value store with versioned reads and
//! compare-and-set writes. The Kubernetes API plays this part in a cluster (resourceVersion
//! is the version); a JSON file owned by one controller process does on a single machine.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::log::write_atomically;

/// A value with the version it was read or written at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versioned<T> {
    pub version: u64,
    pub value: T,
}

/// What a compare-and-set write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// The key must not exist.
    Absent,
    /// The key must exist at this version.
    Version(u64),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "metadata key '{key}' changed underneath this controller (expected {expected:?}, found {found:?}); another controller may be running"
    )]
    Conflict {
        key: String,
        expected: Expected,
        found: Option<u64>,
    },
    #[error("metadata store {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error(
        "metadata store {path} is damaged: {reason}; restore it from a backup or remove it to start an empty cluster"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("metadata store {store} is unavailable: {reason}; the controller tries again")]
    Unavailable { store: String, reason: String },
    #[error(
        "metadata store {object} would hold {bytes} bytes, more than the {limit} it can: {advice}"
    )]
    TooLarge {
        object: String,
        bytes: usize,
        limit: usize,
        advice: String,
    },
    #[error(
        "metadata store {0} is in use by another controller (it holds {0}.lock); \
         stop that one or give this one another directory"
    )]
    Locked(PathBuf),
}

/// Versioned reads and compare-and-set writes of JSON values by key.
pub trait MetadataStore: Send + Sync + 'static {
    /// Every key with its value and version.
    fn load_all(
        &self,
    ) -> impl Future<Output = Result<BTreeMap<String, Versioned<Value>>, StoreError>> + Send;
    /// Writes `value` if the key is as `expected`; returns the new version.
    fn put(
        &self,
        key: &str,
        value: Value,
        expected: Expected,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Deletes the key if it is at version `expected`.
    fn delete(
        &self,
        key: &str,
        expected: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileContents {
    /// Last version handed out; versions grow across all keys, like etcd revisions.
    revision: u64,
    records: BTreeMap<String, Versioned<Value>>,
}

/// The whole store in one JSON file, rewritten atomically on every change. A lock file
/// keeps a second controller process away.
pub struct FileStore {
    path: PathBuf,
    contents: Mutex<FileContents>,
    _lock: File,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .finish()
    }
}

impl FileStore {
    /// Opens (or creates) the store at `path` and locks it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let io_err = |what| {
            move |source| StoreError::Io {
                path: path.to_path_buf(),
                what,
                source,
            }
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io_err("cannot create its directory"))?;
        }
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(PathBuf::from(lock_path))
            .map_err(io_err("cannot create its lock file"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StoreError::Locked(path.to_path_buf())),
            Err(TryLockError::Error(e)) => return Err(io_err("cannot lock it")(e)),
        }
        let contents = match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => FileContents::default(),
            Err(e) => return Err(io_err("cannot read it")(e)),
        };
        Ok(Self {
            path: path.to_path_buf(),
            contents: Mutex::new(contents),
            _lock: lock,
        })
    }

    fn change(
        &self,
        key: &str,
        expected: Expected,
        value: Option<Value>,
    ) -> Result<u64, StoreError> {
        let mut contents = self.contents.lock();
        let found = contents.records.get(key).map(|r| r.version);
        let matches = match expected {
            Expected::Absent => found.is_none(),
            Expected::Version(v) => found == Some(v),
        };
        if !matches {
            return Err(StoreError::Conflict {
                key: key.to_string(),
                expected,
                found,
            });
        }
        let version = contents.revision + 1;
        let previous = match value {
            Some(value) => contents
                .records
                .insert(key.to_string(), Versioned { version, value }),
            None => contents.records.remove(key),
        };
        contents.revision = version;
        let written = serde_json::to_vec_pretty(&*contents)
            .map_err(io::Error::other)
            .and_then(|bytes| write_atomically(&self.path, &bytes));
        if let Err(source) = written {
            // Keep memory and disk in agreement.
            contents.revision -= 1;
            match previous {
                Some(previous) => contents.records.insert(key.to_string(), previous),
                None => contents.records.remove(key),
            };
            return Err(StoreError::Io {
                path: self.path.clone(),
                what: "cannot write it",
                source,
            });
        }
        Ok(version)
    }
}

impl MetadataStore for FileStore {
    async fn load_all(&self) -> Result<BTreeMap<String, Versioned<Value>>, StoreError> {
        Ok(self.contents.lock().records.clone())
    }

    async fn put(&self, key: &str, value: Value, expected: Expected) -> Result<u64, StoreError> {
        self.change(key, expected, Some(value))
    }

    async fn delete(&self, key: &str, expected: u64) -> Result<(), StoreError> {
        self.change(key, Expected::Version(expected), None)
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn writes_are_compare_and_set_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.json");
        {
            let store = FileStore::open(&path).unwrap();
            let v1 = store
                .put("topics/a", json!({"p": 1}), Expected::Absent)
                .await
                .unwrap();
            let err = store
                .put("topics/a", json!({"p": 2}), Expected::Absent)
                .await
                .unwrap_err();
            assert!(
                matches!(err, StoreError::Conflict { found: Some(v), .. } if v == v1),
                "{err}"
            );
            let v2 = store
                .put("topics/a", json!({"p": 2}), Expected::Version(v1))
                .await
                .unwrap();
            assert!(v2 > v1);
            let err = store
                .put("topics/a", json!({"p": 3}), Expected::Version(v1))
                .await
                .unwrap_err();
            assert!(err.to_string().contains("another controller"), "{err}");
            store
                .put("topics/b", json!(1), Expected::Absent)
                .await
                .unwrap();
            store.delete("topics/b", v2 + 1).await.unwrap();
        }
        let store = FileStore::open(&path).unwrap();
        let all = store.load_all().await.unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["topics/a"]);
        assert_eq!(all["topics/a"].value, json!({"p": 2}));
        // Versions keep growing after a reopen.
        let v = store
            .put("topics/c", json!(0), Expected::Absent)
            .await
            .unwrap();
        assert!(v > all["topics/a"].version);
    }

    #[test]
    fn a_second_process_cannot_open_the_same_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.json");
        let _first = FileStore::open(&path).unwrap();
        let err = FileStore::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
    }

    #[test]
    fn a_damaged_store_says_how_to_recover() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.json");
        fs::write(&path, "{ not json").unwrap();
        let err = FileStore::open(&path).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
    }
}
