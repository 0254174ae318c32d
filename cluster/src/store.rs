//! Where the metadata is kept: a seam with one implementation per deployment. A single node
//! keeps it in a local file; the Raft metadata group will implement the same trait.

use crate::metadata::{Metadata, MetadataChange, MetadataError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why the metadata could not be read or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The change does not apply to the current metadata.
    #[error(transparent)]
    Refused(#[from] MetadataError),
    /// The stored metadata cannot be read.
    #[error("metadata file {path:?} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("metadata file {path:?}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Keeps the metadata. Called on the shard that hosts the store (shard 0), one change at a
/// time; a change is durable when `commit` returns.
pub trait MetadataStore {
    /// The metadata as last committed; `None` when none was ever stored.
    fn load(&self) -> Result<Option<Metadata>, StoreError>;
    /// Applies `change` to `current` and makes the result durable; returns it.
    fn commit(&self, current: &Metadata, change: &MetadataChange) -> Result<Metadata, StoreError>;
    /// Stores `metadata` as it is (the first time, or after rebuilding it).
    fn store(&self, metadata: &Metadata) -> Result<(), StoreError>;
}

/// The metadata of a single node in `<data>/.oxbow/metadata.json`, replaced atomically and
/// durably (temporary file, fdatasync, rename, directory fsync) on every change.
pub struct LocalMetadataStore {
    path: PathBuf,
}

impl LocalMetadataStore {
    /// The store of the node whose data directory is `data_dir`.
    pub fn new(data_dir: &Path) -> LocalMetadataStore {
        LocalMetadataStore {
            path: data_dir.join(".oxbow").join("metadata.json"),
        }
    }

    /// The file it keeps.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

impl MetadataStore for LocalMetadataStore {
    fn load(&self) -> Result<Option<Metadata>, StoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Damaged {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    fn commit(&self, current: &Metadata, change: &MetadataChange) -> Result<Metadata, StoreError> {
        let mut next = current.clone();
        next.apply(change)?;
        self.store(&next)?;
        Ok(next)
    }

    fn store(&self, metadata: &Metadata) -> Result<(), StoreError> {
        let dir = self.path.parent().expect("the file lives in a directory");
        std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        let text = serde_json::to_vec_pretty(metadata).expect("metadata serialises");
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&text)?;
            file.sync_data()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{TopicId, TopicMeta};

    #[test]
    fn committed_changes_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalMetadataStore::new(dir.path());
        assert!(store.load().unwrap().is_none());
        let topic = TopicMeta::on_one_broker(
            "orders".into(),
            TopicId([9; 16]),
            4,
            0,
            [("retention.ms".to_string(), "1000".to_string())].into(),
        );
        let created = store
            .commit(&Metadata::default(), &MetadataChange::CreateTopic(topic))
            .unwrap();
        assert_eq!(store.load().unwrap(), Some(created.clone()));
        let refused = store.commit(&created, &MetadataChange::DeleteTopic { name: "x".into() });
        assert!(matches!(refused, Err(StoreError::Refused(_))));
        assert_eq!(store.load().unwrap(), Some(created));
        std::fs::write(store.path(), b"{not json").unwrap();
        assert!(matches!(store.load(), Err(StoreError::Damaged { .. })));
    }
}
