//! SASL authentication as Kafka speaks it, sans-IO: SCRAM-SHA-256 and SCRAM-SHA-512
//! (RFC 5802, RFC 7677, without channel binding) and the SASL/PLAIN message (RFC 4616).
//!
//! Nothing here reads a socket or a clock. A connection's task owns one [`ScramServer`] per
//! authentication attempt, feeds it the client's SASL bytes in the order the methods are
//! listed, and writes back what it returns; the credential store hands it the
//! [`ScramCredential`] of the user named in [`ClientFirst`]. Passwords are never stored:
//! SASL/PLAIN logins are checked against the same SCRAM credentials with
//! [`ScramCredential::verify_password`].
//!
//! ```
//! use oxbow_core::auth::{Mechanism, ScramClient, ScramCredential, ScramServer};
//!
//! let mechanism = Mechanism::ScramSha256;
//! let credential = ScramCredential::generate(mechanism, b"pencil", 4096).unwrap();
//! let mut client = ScramClient::new(mechanism, "user", b"pencil").unwrap();
//! let mut server = ScramServer::new(mechanism).unwrap();
//!
//! let first = server.client_first(&client.client_first()).unwrap();
//! assert_eq!(first.username, "user");
//! let server_first = server.server_first(&credential).unwrap();
//! let client_final = client.server_first(&server_first).unwrap();
//! let server_final = server.client_final(&client_final).unwrap();
//! client.server_final(&server_final).unwrap();
//! ```

use std::fmt;
use std::str::FromStr;

mod credential;
mod crypto;
mod plain;
mod scram;

pub use credential::{
    salted_password, validate_iterations, CredentialError, ScramCredential, GENERATED_SALT_BYTES,
    ITERATIONS_MAX, ITERATIONS_MIN,
};
pub use plain::{parse_plain, PlainCredentials, PlainError, PLAIN_FIELD_BYTES_MAX};
pub use scram::{ClientFirst, ScramClient, ScramError, ScramServer, SCRAM_MESSAGE_BYTES_MAX};

/// A SCRAM mechanism: which hash the exchange and the stored credential use.
///
/// Serialized (in configuration and credential files) as its Kafka name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mechanism {
    /// `SCRAM-SHA-256`: HMAC-SHA-256 and PBKDF2-HMAC-SHA-256.
    ScramSha256,
    /// `SCRAM-SHA-512`: HMAC-SHA-512 and PBKDF2-HMAC-SHA-512.
    ScramSha512,
}

impl Mechanism {
    /// Every mechanism, in the order the broker advertises them.
    pub const ALL: [Mechanism; 2] = [Mechanism::ScramSha256, Mechanism::ScramSha512];

    /// The mechanism's name in Kafka's SaslHandshake and in credential commands.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A mechanism name that is not one of [`Mechanism::ALL`] (names are case-sensitive, as in
/// Kafka).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported SASL mechanism {name:?} (supported: SCRAM-SHA-256, SCRAM-SHA-512)")]
pub struct UnknownMechanism {
    /// The name that was asked for.
    pub name: String,
}

impl FromStr for Mechanism {
    type Err = UnknownMechanism;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Mechanism::ALL
            .into_iter()
            .find(|mechanism| mechanism.name() == name)
            .ok_or_else(|| UnknownMechanism {
                name: name.to_string(),
            })
    }
}

impl serde::Serialize for Mechanism {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Mechanism {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for mechanism in Mechanism::ALL {
            assert_eq!(mechanism.name().parse::<Mechanism>(), Ok(mechanism));
            assert_eq!(mechanism.to_string(), mechanism.name());
        }
    }

    #[test]
    fn names_are_exact() {
        for name in [
            "scram-sha-256",
            "SCRAM-SHA-1",
            "PLAIN",
            "",
            "SCRAM-SHA-256 ",
        ] {
            let error = name.parse::<Mechanism>().unwrap_err();
            assert_eq!(error.name, name);
        }
    }

    #[test]
    fn serde_uses_the_kafka_name() {
        let json = serde_json::to_string(&Mechanism::ALL).unwrap();
        assert_eq!(json, r#"["SCRAM-SHA-256","SCRAM-SHA-512"]"#);
        let back: Vec<Mechanism> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Mechanism::ALL);
        assert!(serde_json::from_str::<Mechanism>(r#""ScramSha256""#).is_err());
    }
}
