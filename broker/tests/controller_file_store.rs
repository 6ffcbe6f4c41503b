//! The controller core's tests (the store suite) over the file store, as a standalone
//! broker and `tributary local up` keep their metadata.

use tributary_broker::controller::FileStore;
use tributary_store_suite::StoreFactory;

/// File stores in one temporary directory.
struct FileStores(tempfile::TempDir);

impl StoreFactory for FileStores {
    type Store = FileStore;

    async fn open(&self) -> FileStore {
        FileStore::open(&self.0.path().join("metadata.json")).expect("the store opens")
    }
}

fn stores() -> FileStores {
    FileStores(tempfile::tempdir().expect("a temporary directory"))
}

tributary_store_suite::metadata_store_suite!(stores());
