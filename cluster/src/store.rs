//! The file a single node kept its metadata in before the metadata group existed
//! (`<data>/.oxbow/metadata.json`): read once, to seed the group, then moved aside.

use crate::metadata::Metadata;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why the metadata could not be read or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
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

impl LocalMetadataStore {
    /// The metadata the file holds; `None` when there is no file.
    pub fn load(&self) -> Result<Option<Metadata>, StoreError> {
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

    /// Writes `metadata` to the file, atomically and durably.
    pub fn store(&self, metadata: &Metadata) -> Result<(), StoreError> {
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
    use crate::metadata::{MetadataChange, TopicId, TopicMeta};

    #[test]
    fn stored_metadata_is_read_back_and_damage_is_named() {
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
        let mut metadata = Metadata::default();
        metadata.apply(&MetadataChange::CreateTopic(topic)).unwrap();
        store.store(&metadata).unwrap();
        assert_eq!(store.load().unwrap(), Some(metadata));
        std::fs::write(store.path(), b"{not json").unwrap();
        assert!(matches!(store.load(), Err(StoreError::Damaged { .. })));
    }
}
