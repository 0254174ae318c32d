//! The SASL/PLAIN message (RFC 4616): `[authzid] NUL authcid NUL passwd`, sent once by the
//! client. The password is checked by the caller against the user's SCRAM credential
//! ([`super::ScramCredential::verify_password`]).

use std::fmt;

/// Most bytes in each of the three fields. Real names and passwords are far shorter; the bound
/// keeps a stranger from making the broker hash megabytes before authenticating.
pub const PLAIN_FIELD_BYTES_MAX: usize = 1024;

/// Most bytes in a whole PLAIN message: three full fields and two separators.
const PLAIN_MESSAGE_BYTES_MAX: usize = 3 * PLAIN_FIELD_BYTES_MAX + 2;

/// The identities and password of a SASL/PLAIN message.
///
/// `Debug` never prints the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainCredentials {
    /// The identity to act as, if the client sent one; always equal to `username`.
    pub authzid: Option<String>,
    /// The identity whose password this is.
    pub username: String,
    /// The password, as sent (not required to be UTF-8: it is only ever hashed).
    pub password: Vec<u8>,
}

impl fmt::Debug for PlainCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainCredentials")
            .field("authzid", &self.authzid)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why a SASL/PLAIN message was refused. Messages name the field, never its contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlainError {
    /// The message or one field is longer than [`PLAIN_FIELD_BYTES_MAX`] allows.
    #[error("SASL/PLAIN {field} is longer than {PLAIN_FIELD_BYTES_MAX} bytes")]
    TooLong {
        /// `"message"`, `"authzid"`, `"username"` or `"password"`.
        field: &'static str,
    },
    /// The message does not have exactly three NUL-separated fields.
    #[error("SASL/PLAIN message has {fields} NUL-separated fields, expected 3")]
    WrongFieldCount {
        /// How many fields it has.
        fields: usize,
    },
    /// The username is empty.
    #[error("SASL/PLAIN username is empty")]
    EmptyUsername,
    /// The password is empty.
    #[error("SASL/PLAIN password is empty")]
    EmptyPassword,
    /// A name is not UTF-8.
    #[error("SASL/PLAIN {field} is not UTF-8")]
    NotUtf8 {
        /// `"authzid"` or `"username"`.
        field: &'static str,
    },
    /// The client asked to act as someone other than itself, which Kafka does not allow.
    #[error("SASL/PLAIN authorization id differs from the username")]
    AuthzidMismatch,
}

/// Parses a SASL/PLAIN message: exactly three NUL-separated fields, a non-empty UTF-8
/// username, a non-empty password, and an authzid that is empty or equal to the username.
pub fn parse_plain(message: &[u8]) -> Result<PlainCredentials, PlainError> {
    if message.len() > PLAIN_MESSAGE_BYTES_MAX {
        return Err(PlainError::TooLong { field: "message" });
    }
    let fields: Vec<&[u8]> = message.split(|&byte| byte == 0).collect();
    let [authzid, username, password] = fields[..] else {
        return Err(PlainError::WrongFieldCount {
            fields: fields.len(),
        });
    };
    for (field, bytes) in [
        ("authzid", authzid),
        ("username", username),
        ("password", password),
    ] {
        if bytes.len() > PLAIN_FIELD_BYTES_MAX {
            return Err(PlainError::TooLong { field });
        }
    }
    let utf8 = |field, bytes| {
        String::from_utf8(Vec::from(bytes)).map_err(|_| PlainError::NotUtf8 { field })
    };
    let username = utf8("username", username)?;
    if username.is_empty() {
        return Err(PlainError::EmptyUsername);
    }
    if password.is_empty() {
        return Err(PlainError::EmptyPassword);
    }
    let authzid = match authzid {
        [] => None,
        bytes => Some(utf8("authzid", bytes)?),
    };
    if authzid.as_ref().is_some_and(|authzid| *authzid != username) {
        return Err(PlainError::AuthzidMismatch);
    }
    Ok(PlainCredentials {
        authzid,
        username,
        password: password.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(1024)
    }

    #[test]
    fn parses_with_and_without_authzid() {
        let plain = parse_plain(b"\0alice\0s3cret").unwrap();
        assert_eq!(plain.authzid, None);
        assert_eq!(plain.username, "alice");
        assert_eq!(plain.password, b"s3cret");

        let plain = parse_plain(b"alice\0alice\0\xffbytes").unwrap();
        assert_eq!(plain.authzid.as_deref(), Some("alice"));
        assert_eq!(plain.password, b"\xffbytes");
    }

    #[test]
    fn refuses_bad_messages() {
        let cases: [(&[u8], PlainError); 8] = [
            (b"", PlainError::WrongFieldCount { fields: 1 }),
            (b"\0alice", PlainError::WrongFieldCount { fields: 2 }),
            (b"\0a\0b\0c", PlainError::WrongFieldCount { fields: 4 }),
            (b"\0\0pw", PlainError::EmptyUsername),
            (b"\0alice\0", PlainError::EmptyPassword),
            (b"bob\0alice\0pw", PlainError::AuthzidMismatch),
            (b"\0\xff\0pw", PlainError::NotUtf8 { field: "username" }),
            (b"\xff\0alice\0pw", PlainError::NotUtf8 { field: "authzid" }),
        ];
        for (message, expected) in cases {
            assert_eq!(parse_plain(message), Err(expected), "{message:?}");
        }
    }

    #[test]
    fn refuses_long_fields() {
        let long = vec![b'a'; PLAIN_FIELD_BYTES_MAX + 1];
        let mut message = b"\0".to_vec();
        message.extend_from_slice(&long);
        message.extend_from_slice(b"\0pw");
        assert_eq!(
            parse_plain(&message),
            Err(PlainError::TooLong { field: "username" })
        );
        let huge = vec![0u8; 1 << 20];
        assert_eq!(
            parse_plain(&huge),
            Err(PlainError::TooLong { field: "message" })
        );
        let mut longest = vec![b'a'; PLAIN_FIELD_BYTES_MAX];
        longest.push(0);
        longest.extend_from_slice(&[b'a'; PLAIN_FIELD_BYTES_MAX]);
        longest.push(0);
        longest.extend_from_slice(&[b'p'; PLAIN_FIELD_BYTES_MAX]);
        assert!(parse_plain(&longest).is_ok());
    }

    #[test]
    fn debug_hides_the_password() {
        let plain = parse_plain(b"\0alice\0hunter2").unwrap();
        let debug = format!("{plain:?}");
        assert!(
            debug.contains("alice") && !debug.contains("hunter2"),
            "{debug}"
        );
        assert!(!debug.contains(&format!("{:?}", b"hunter2")), "{debug}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(plain) = parse_plain(&bytes) {
                prop_assert!(!plain.username.is_empty() && !plain.password.is_empty());
            }
        }

        #[test]
        fn three_arbitrary_fields_never_panic(
            authzid in proptest::collection::vec(any::<u8>(), 0..20),
            username in proptest::collection::vec(any::<u8>(), 0..20),
            password in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let message = [authzid, username, password].join(&0);
            let _ = parse_plain(&message);
        }
    }
}
