//! SASL/SCRAM users (Kafka's SCRAM credentials): what a user authenticates with, kept in the
//! metadata so that every node of a cluster accepts the same users. Only salted credentials
//! are kept (RFC 5802's StoredKey and ServerKey), never a password.

use super::{Metadata, MetadataError};
use oxbow_core::auth::{Mechanism, ScramCredential};
use std::collections::BTreeMap;

/// Longest user name (Kafka bounds it by its request format; this keeps metadata small).
pub const USER_NAME_BYTES_MAX: usize = 256;

/// Each user's credentials, one per mechanism.
pub type Users = BTreeMap<String, BTreeMap<Mechanism, ScramCredential>>;

impl Metadata {
    /// `user`'s credential for `mechanism`, if it has one.
    pub fn scram_credential(&self, user: &str, mechanism: Mechanism) -> Option<&ScramCredential> {
        self.users.get(user)?.get(&mechanism)
    }

    pub(super) fn set_scram_credential(
        &mut self,
        user: &str,
        mechanism: Mechanism,
        credential: &ScramCredential,
    ) -> Result<(), MetadataError> {
        if user.is_empty() || user.len() > USER_NAME_BYTES_MAX {
            return Err(MetadataError::Invalid(format!(
                "a user name is 1 to {USER_NAME_BYTES_MAX} bytes"
            )));
        }
        oxbow_core::auth::validate_iterations(credential.iterations)
            .map_err(|e| MetadataError::Invalid(e.to_string()))?;
        (self.users.entry(user.to_string()).or_default()).insert(mechanism, credential.clone());
        Ok(())
    }

    pub(super) fn delete_scram_credential(
        &mut self,
        user: &str,
        mechanism: Mechanism,
    ) -> Result<(), MetadataError> {
        let Some(credentials) = self.users.get_mut(user) else {
            return Err(MetadataError::Invalid(format!("no user {user}")));
        };
        if credentials.remove(&mechanism).is_none() {
            return Err(MetadataError::Invalid(format!(
                "user {user} has no {} credential",
                mechanism.name()
            )));
        }
        if credentials.is_empty() {
            self.users.remove(user);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetadataChange;

    fn set(user: &str, mechanism: Mechanism, iterations: u32) -> MetadataChange {
        let credential = ScramCredential::generate(mechanism, b"pw", 4096).unwrap();
        MetadataChange::SetScramCredential {
            user: user.into(),
            mechanism,
            credential: ScramCredential {
                iterations,
                ..credential
            },
        }
    }

    #[test]
    fn credentials_are_set_replaced_and_deleted_per_mechanism() {
        let mut metadata = Metadata::default();
        metadata
            .apply(&set("alice", Mechanism::ScramSha256, 4096))
            .unwrap();
        metadata
            .apply(&set("alice", Mechanism::ScramSha512, 8192))
            .unwrap();
        metadata
            .apply(&set("alice", Mechanism::ScramSha512, 4096))
            .unwrap();
        let sha512 = metadata.scram_credential("alice", Mechanism::ScramSha512);
        assert_eq!(sha512.map(|c| c.iterations), Some(4096));
        let delete = |mechanism| MetadataChange::DeleteScramCredential {
            user: "alice".into(),
            mechanism,
        };
        metadata.apply(&delete(Mechanism::ScramSha256)).unwrap();
        assert!(metadata.apply(&delete(Mechanism::ScramSha256)).is_err());
        metadata.apply(&delete(Mechanism::ScramSha512)).unwrap();
        assert!(
            metadata.users.is_empty(),
            "a user without credentials is gone"
        );
        let version = metadata.version;
        assert!(metadata
            .apply(&set("", Mechanism::ScramSha256, 4096))
            .is_err());
        assert!(metadata
            .apply(&set("bob", Mechanism::ScramSha256, 100))
            .is_err());
        assert_eq!(
            metadata.version, version,
            "a refused change changes nothing"
        );
        // Kept across a snapshot (JSON), as every node must accept the same users.
        metadata
            .apply(&set("carol", Mechanism::ScramSha256, 4096))
            .unwrap();
        let json = serde_json::to_string(&metadata).unwrap();
        assert_eq!(serde_json::from_str::<Metadata>(&json).unwrap(), metadata);
    }
}
