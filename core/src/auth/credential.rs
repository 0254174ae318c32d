//! What the broker stores per user and mechanism instead of a password (RFC 5802 section 3):
//! the salt, the iteration count, StoredKey and ServerKey.

use std::fmt;
use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{crypto, Mechanism};

/// Fewest PBKDF2 iterations a credential may use (Kafka's bound for both mechanisms).
pub const ITERATIONS_MIN: u32 = 4096;
/// Most PBKDF2 iterations a credential may use (Kafka's bound): each login costs the client
/// this many HMACs, so a larger count is refused rather than honoured.
pub const ITERATIONS_MAX: u32 = 16384;
/// Bytes of random salt [`ScramCredential::generate`] draws.
pub const GENERATED_SALT_BYTES: usize = 32;

const _: () = assert!(0 < ITERATIONS_MIN && ITERATIONS_MIN <= ITERATIONS_MAX);

/// Why a credential could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The iteration count is outside [`ITERATIONS_MIN`, `ITERATIONS_MAX`].
    #[error("{iterations} iterations is outside the allowed {ITERATIONS_MIN} to {ITERATIONS_MAX}")]
    IterationsOutOfRange {
        /// The count that was asked for.
        iterations: u32,
    },
    /// The salt is empty (Kafka refuses it too: an empty salt defeats its purpose).
    #[error("the salt is empty")]
    EmptySalt,
    /// The salted password is empty.
    #[error("the salted password is empty")]
    EmptySaltedPassword,
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Rng,
}

/// Checks that an iteration count is within Kafka's bounds, and returns it in the non-zero
/// form PBKDF2 takes.
pub fn validate_iterations(iterations: u32) -> Result<NonZeroU32, CredentialError> {
    if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
        return Err(CredentialError::IterationsOutOfRange { iterations });
    }
    NonZeroU32::new(iterations).ok_or(CredentialError::IterationsOutOfRange { iterations })
}

/// RFC 5802's SaltedPassword: what Kafka's AlterUserScramCredentials carries instead of the
/// password (a client computes it with a salt of its choosing).
pub fn salted_password(
    mechanism: Mechanism,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Result<Vec<u8>, CredentialError> {
    let iterations = validate_iterations(iterations)?;
    if salt.is_empty() {
        return Err(CredentialError::EmptySalt);
    }
    Ok(crypto::salted_password(
        mechanism, password, salt, iterations,
    ))
}

/// A user's SCRAM credential for one mechanism: enough to check a login, not enough to log in
/// (StoredKey is a hash of the key a client proves it holds).
///
/// Serialized with the byte fields as base64 strings, so credential files stay readable.
/// `Debug` prints the salt and iteration count but never the keys. The mechanism is not stored
/// here: the store keys credentials by (user, mechanism).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScramCredential {
    /// The salt given to PBKDF2.
    #[serde(with = "base64_bytes")]
    pub salt: Vec<u8>,
    /// PBKDF2's iteration count.
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    #[serde(with = "base64_bytes")]
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    #[serde(with = "base64_bytes")]
    pub server_key: Vec<u8>,
}

impl ScramCredential {
    /// Derives the credential of `password` with the given salt and iteration count.
    pub fn from_password(
        mechanism: Mechanism,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Result<Self, CredentialError> {
        let rounds = validate_iterations(iterations)?;
        if salt.is_empty() {
            return Err(CredentialError::EmptySalt);
        }
        let salted = crypto::salted_password(mechanism, password, salt, rounds);
        Self::from_salted_password(mechanism, &salted, salt, iterations)
    }

    /// Builds the credential from an already salted password, `Hi(password, salt, iterations)`:
    /// what Kafka's AlterUserScramCredentials request carries, so the broker never sees the
    /// password itself.
    pub fn from_salted_password(
        mechanism: Mechanism,
        salted_password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Result<Self, CredentialError> {
        validate_iterations(iterations)?;
        if salt.is_empty() {
            return Err(CredentialError::EmptySalt);
        }
        if salted_password.is_empty() {
            return Err(CredentialError::EmptySaltedPassword);
        }
        let client_key = crypto::client_key(mechanism, salted_password);
        Ok(ScramCredential {
            salt: salt.to_vec(),
            iterations,
            stored_key: crypto::hash(mechanism, &client_key),
            server_key: crypto::server_key(mechanism, salted_password),
        })
    }

    /// A credential for a user that does not exist, so that a stranger cannot tell unknown
    /// users from wrong passwords (RFC 5802 section 5.1): the same salt for the same name
    /// every time (derived from a secret drawn once per process), [`ITERATIONS_MIN`]
    /// iterations, and keys no password derives.
    pub fn decoy(mechanism: Mechanism, username: &str) -> ScramCredential {
        static SECRET: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
        // Without the system RNG the decoy is still a credential nobody can prove; only its
        // salt becomes predictable.
        let secret = SECRET.get_or_init(|| crypto::random_bytes::<32>().unwrap_or([7; 32]));
        let derive = |label: &str| {
            let mut input = label.as_bytes().to_vec();
            input.extend_from_slice(username.as_bytes());
            crypto::hmac(mechanism, secret, &input)
        };
        let mut salt = derive("salt");
        salt.truncate(GENERATED_SALT_BYTES);
        ScramCredential {
            salt,
            iterations: ITERATIONS_MIN,
            stored_key: derive("stored key"),
            server_key: derive("server key"),
        }
    }

    /// Derives the credential of `password` with a fresh random salt of
    /// [`GENERATED_SALT_BYTES`]; fails only on a bad iteration count or if the system RNG fails.
    pub fn generate(
        mechanism: Mechanism,
        password: &[u8],
        iterations: u32,
    ) -> Result<Self, CredentialError> {
        let salt = crypto::random_bytes::<GENERATED_SALT_BYTES>().ok_or(CredentialError::Rng)?;
        Self::from_password(mechanism, password, &salt, iterations)
    }

    /// Whether `password` is the one this credential was derived from: recomputes
    /// SaltedPassword, ClientKey and StoredKey and compares in constant time. This is how
    /// SASL/PLAIN logins are checked without storing passwords; it costs one PBKDF2.
    ///
    /// A credential with zero iterations (only possible if built by hand) matches nothing.
    pub fn verify_password(&self, mechanism: Mechanism, password: &[u8]) -> bool {
        let Some(rounds) = NonZeroU32::new(self.iterations) else {
            return false;
        };
        let salted = crypto::salted_password(mechanism, password, &self.salt, rounds);
        let client_key = crypto::client_key(mechanism, &salted);
        crypto::secrets_equal(&crypto::hash(mechanism, &client_key), &self.stored_key)
    }
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("salt", &BASE64.encode(&self.salt))
            .field("iterations", &self.iterations)
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

/// Serde adapter: `Vec<u8>` as a standard base64 string.
mod base64_bytes {
    use super::{Engine, BASE64};
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        // The decoder's own message quotes the offending byte, which may be part of a key.
        BASE64
            .decode(text)
            .map_err(|_| D::Error::custom("expected standard base64 (with padding)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_password_accepts_only_the_password() {
        for mechanism in Mechanism::ALL {
            let credential = ScramCredential::generate(mechanism, b"pencil", 4096).unwrap();
            assert_eq!(credential.salt.len(), GENERATED_SALT_BYTES);
            assert!(credential.verify_password(mechanism, b"pencil"));
            assert!(!credential.verify_password(mechanism, b"pencil "));
            assert!(!credential.verify_password(mechanism, b""));
        }
    }

    #[test]
    fn verify_password_is_tied_to_the_mechanism() {
        let credential =
            ScramCredential::generate(Mechanism::ScramSha256, b"pencil", 4096).unwrap();
        assert!(!credential.verify_password(Mechanism::ScramSha512, b"pencil"));
    }

    #[test]
    fn salted_password_gives_the_same_credential() {
        for mechanism in Mechanism::ALL {
            let salt = b"NaCl salt";
            let rounds = validate_iterations(4096).unwrap();
            let salted = crypto::salted_password(mechanism, b"pencil", salt, rounds);
            let from_salted =
                ScramCredential::from_salted_password(mechanism, &salted, salt, 4096).unwrap();
            let from_password =
                ScramCredential::from_password(mechanism, b"pencil", salt, 4096).unwrap();
            assert_eq!(from_salted, from_password);
            assert_eq!(
                from_password.stored_key.len(),
                crypto::output_bytes(mechanism)
            );
        }
    }

    #[test]
    fn bounds_are_enforced() {
        let sha = Mechanism::ScramSha256;
        for iterations in [0, 1, ITERATIONS_MIN - 1, ITERATIONS_MAX + 1, u32::MAX] {
            let error = ScramCredential::from_password(sha, b"p", b"salt", iterations);
            assert_eq!(
                error,
                Err(CredentialError::IterationsOutOfRange { iterations })
            );
        }
        assert_eq!(
            ScramCredential::from_password(sha, b"p", b"", 4096),
            Err(CredentialError::EmptySalt)
        );
        assert_eq!(
            ScramCredential::from_salted_password(sha, b"", b"salt", 4096),
            Err(CredentialError::EmptySaltedPassword)
        );
        assert!(validate_iterations(ITERATIONS_MIN).is_ok());
        assert!(validate_iterations(ITERATIONS_MAX).is_ok());
    }

    #[test]
    fn zero_iterations_never_verify() {
        let mut credential =
            ScramCredential::from_password(Mechanism::ScramSha256, b"p", b"salt", 4096).unwrap();
        credential.iterations = 0;
        assert!(!credential.verify_password(Mechanism::ScramSha256, b"p"));
    }

    #[test]
    fn serde_round_trip_with_base64_fields() {
        let credential =
            ScramCredential::from_password(Mechanism::ScramSha512, b"pencil", b"salt", 4096)
                .unwrap();
        let json = serde_json::to_string(&credential).unwrap();
        assert!(json.contains(r#""salt":"c2FsdA==""#), "{json}");
        assert!(json.contains(r#""iterations":4096"#), "{json}");
        let back: ScramCredential = serde_json::from_str(&json).unwrap();
        assert_eq!(back, credential);

        let bad = json.replace("c2FsdA==", "not base64!");
        let error = serde_json::from_str::<ScramCredential>(&bad).unwrap_err();
        assert!(error.to_string().contains("base64"), "{error}");
    }

    #[test]
    fn debug_hides_the_keys() {
        let credential =
            ScramCredential::from_password(Mechanism::ScramSha256, b"pencil", b"salt", 4096)
                .unwrap();
        let debug = format!("{credential:?}");
        assert!(
            debug.contains("4096") && debug.contains("<redacted>"),
            "{debug}"
        );
        for key in [&credential.stored_key, &credential.server_key] {
            assert!(!debug.contains(&BASE64.encode(key)), "{debug}");
            assert!(!debug.contains(&format!("{key:?}")), "{debug}");
        }
    }
}
