//! The first users of a broker that requires authentication, created with the broker stopped
//! (`oxbow user create --data-dir`), as Kafka's `kafka-storage format --add-scram` does: the
//! salted credentials wait in `<data_dir>/.oxbow/bootstrap-users.json` until the node next
//! starts, which commits them to the metadata and then removes the file. Committing one again
//! after a crash before the removal sets the same credential twice, which changes nothing.

use crate::shard::Shard;
use oxbow_cluster::MetadataChange;
use oxbow_core::auth::{Mechanism, ScramCredential};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One waiting credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootstrapUser {
    /// User name.
    pub user: String,
    /// The mechanism.
    pub mechanism: Mechanism,
    /// Salt, iterations and derived keys.
    pub credential: ScramCredential,
}

fn file(data_dir: &Path) -> PathBuf {
    data_dir.join(".oxbow").join("bootstrap-users.json")
}

fn read(path: &Path) -> Result<Vec<BootstrapUser>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{path:?}: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{path:?}: {e}")),
    }
}

/// Adds (or replaces) a user's credential for the next start of the broker on `data_dir`,
/// which must not be running: its lock is taken for the write.
pub fn add(data_dir: &Path, waiting: BootstrapUser) -> Result<(), String> {
    let _lock = super::guards::lock_data_dir(data_dir).map_err(|e| e.to_string())?;
    let path = file(data_dir);
    let mut users = read(&path)?;
    users.retain(|u| (u.user.as_str(), u.mechanism) != (waiting.user.as_str(), waiting.mechanism));
    users.push(waiting);
    let json = serde_json::to_vec_pretty(&users).map_err(|e| e.to_string())?;
    // Written aside, synced and renamed: a crash leaves the old file or the new one.
    let staged = path.with_extension("json.new");
    let io = |e: std::io::Error| format!("{path:?}: {e}");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut out = (std::fs::OpenOptions::new())
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&staged)
            .map_err(io)?;
        out.write_all(&json)
            .and_then(|()| out.sync_all())
            .map_err(io)?;
    }
    std::fs::rename(&staged, &path).map_err(io)?;
    std::fs::File::open(path.parent().expect("in .oxbow"))
        .and_then(|dir| dir.sync_all())
        .map_err(io)
}

/// Commits the waiting credentials, then removes the file. Shard 0 only.
pub(super) async fn apply(shard: &Shard) -> Result<(), String> {
    let path = file(&shard.config.data_dir);
    let users = read(&path)?;
    if users.is_empty() {
        return Ok(());
    }
    for waiting in users {
        let user = waiting.user.clone();
        let change = MetadataChange::SetScramCredential {
            user: waiting.user,
            mechanism: waiting.mechanism,
            credential: waiting.credential,
        };
        (shard.change_cluster(change).await)
            .map_err(|e| format!("creating user {user} from {path:?}: {e}"))?;
        tracing::info!(%user, mechanism = waiting.mechanism.name(), "user created from the data directory");
    }
    std::fs::remove_file(&path).map_err(|e| format!("{path:?}: {e}"))
}
