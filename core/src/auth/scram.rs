//! The SCRAM exchange of RFC 5802 / RFC 7677 as Kafka speaks it: no channel binding, an
//! optional `tokenauth=true` extension for delegation tokens, authzid only if equal to the
//! username.
//!
//! ```text
//! client                                   server
//! client-first  n,,n=user,r=CNONCE   --->  ScramServer::client_first
//!                                          ScramServer::server_first(credential)
//! ScramClient::server_first         <---  r=CNONCE+SNONCE,s=SALT,i=ITER
//! client-final  c=biws,r=..,p=PROOF  --->  ScramServer::client_final
//! ScramClient::server_final         <---  v=SERVER_SIGNATURE
//! ```
//!
//! This file holds what both sides share: the error, the bound on a message and the grammar's
//! small pieces. The two state machines are in `scram/server.rs` and `scram/client.rs`.

mod client;
mod server;
#[cfg(test)]
mod tests;

pub use client::ScramClient;
pub use server::{ClientFirst, ScramServer};

/// Most bytes in one SCRAM message. The longest honest one is a client-final with a SHA-512
/// proof, well under 512 bytes; the bound stops a stranger from making the broker scan or
/// keep megabytes before authenticating.
pub const SCRAM_MESSAGE_BYTES_MAX: usize = 4096;

/// Bytes of randomness in a nonce either side draws (RFC 5802 asks for a nonce that is
/// "sufficiently random"; 24 bytes is 192 bits, 32 printable characters in base64).
const NONCE_RANDOM_BYTES: usize = 24;

/// Why a SCRAM exchange failed. Messages say what was wrong but never carry a password, a
/// proof, a signature or a key; after any error the exchange is over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScramError {
    /// The message is longer than [`SCRAM_MESSAGE_BYTES_MAX`].
    #[error("SCRAM message is {bytes} bytes, longer than {SCRAM_MESSAGE_BYTES_MAX}")]
    TooLong {
        /// The message's length.
        bytes: usize,
    },
    /// The message is not UTF-8.
    #[error("SCRAM message is not UTF-8")]
    NotUtf8,
    /// The message does not follow RFC 5802's grammar.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding (`p=`), which Kafka's SCRAM does not offer.
    #[error("SCRAM channel binding is not supported")]
    ChannelBindingUnsupported,
    /// The message carries an `m=` mandatory extension, which RFC 5802 says to refuse.
    #[error("SCRAM mandatory extension (m=) is not supported")]
    MandatoryExtension,
    /// A username or authzid has an `=` not followed by `2C` or `3D`, a NUL, or is empty.
    #[error("invalid SCRAM saslname: {0}")]
    InvalidSaslName(&'static str),
    /// The authzid names someone other than the username, which Kafka does not allow.
    #[error("SCRAM authorization id differs from the username")]
    AuthzidMismatch,
    /// The client-final's `c=` is not the base64 of the client-first's GS2 header.
    #[error("SCRAM channel binding (c=) does not match the client-first GS2 header")]
    ChannelBindingMismatch,
    /// The client-final's nonce is not the one the server sent.
    #[error("SCRAM nonce in the client-final differs from the server-first")]
    NonceMismatch,
    /// The server-first's nonce does not extend the client's nonce.
    #[error("SCRAM server nonce does not start with the client nonce")]
    InvalidServerNonce,
    /// The client's proof is wrong: a wrong password or an unknown user.
    #[error("SCRAM authentication failed: invalid credentials")]
    InvalidProof,
    /// The server's signature is wrong: the server does not hold the credential.
    #[error("SCRAM server signature is invalid")]
    InvalidServerSignature,
    /// The server asked for an iteration count outside [`super::ITERATIONS_MIN`,
    /// `super::ITERATIONS_MAX`].
    #[error(
        "SCRAM iteration count {iterations} is outside the allowed {} to {}",
        super::ITERATIONS_MIN,
        super::ITERATIONS_MAX
    )]
    IterationsOutOfRange {
        /// The count the server sent.
        iterations: u32,
    },
    /// The server ended the exchange with `e=` and this reason.
    #[error("SCRAM server error: {0}")]
    ServerError(String),
    /// A method was called when the exchange was not at that step.
    #[error("SCRAM {step} called out of order: the exchange is {state}")]
    OutOfOrder {
        /// The method that was called.
        step: &'static str,
        /// Where the exchange was.
        state: &'static str,
    },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Rng,
}

/// Checks the size and encoding every SCRAM message shares, before looking inside.
fn message_text(message: &[u8]) -> Result<&str, ScramError> {
    if message.len() > SCRAM_MESSAGE_BYTES_MAX {
        return Err(ScramError::TooLong {
            bytes: message.len(),
        });
    }
    std::str::from_utf8(message).map_err(|_| ScramError::NotUtf8)
}

/// The value of `name=value`, or `what` as the error.
fn attribute<'a>(part: &'a str, name: &str, what: &'static str) -> Result<&'a str, ScramError> {
    part.strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('='))
        .ok_or(ScramError::Malformed(what))
}

/// Checks an extension attribute (`key=value`) and splits it. RFC 5802 allows one letter;
/// Kafka's `tokenauth` needs several, so any run of ASCII letters is a key.
fn extension(part: &str) -> Result<(&str, &str), ScramError> {
    let (key, value) = part
        .split_once('=')
        .ok_or(ScramError::Malformed("extension without '='"))?;
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(ScramError::Malformed("extension name is not letters"));
    }
    if value.is_empty() || value.contains('\0') {
        return Err(ScramError::Malformed("extension value is empty or has NUL"));
    }
    Ok((key, value))
}

/// Whether `nonce` is a valid SCRAM nonce: printable ASCII without ',' (RFC 5802 `printable`).
fn is_printable_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// A fresh random nonce: [`NONCE_RANDOM_BYTES`] in URL-safe base64, so printable and without
/// ','.
fn random_nonce() -> Result<String, ScramError> {
    use base64::Engine;
    let bytes = super::crypto::random_bytes::<NONCE_RANDOM_BYTES>().ok_or(ScramError::Rng)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Decodes a saslname: `=2C` is ',', `=3D` is '=', any other '=' is an error, as are NUL and
/// an empty name.
fn decode_saslname(name: &str) -> Result<String, ScramError> {
    if name.is_empty() {
        return Err(ScramError::InvalidSaslName("empty name"));
    }
    if name.contains('\0') {
        return Err(ScramError::InvalidSaslName("NUL in name"));
    }
    let mut decoded = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        decoded.push_str(&rest[..at]);
        let escape = rest.get(at + 1..at + 3);
        decoded.push(match escape {
            Some("2C") => ',',
            Some("3D") => '=',
            _ => return Err(ScramError::InvalidSaslName("'=' not followed by 2C or 3D")),
        });
        rest = &rest[at + 3..];
    }
    decoded.push_str(rest);
    Ok(decoded)
}

/// Encodes a name as a saslname (the inverse of [`decode_saslname`]).
fn encode_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

#[cfg(test)]
mod grammar_tests {
    use super::*;

    #[test]
    fn saslnames_decode_and_encode() {
        assert_eq!(decode_saslname("user").unwrap(), "user");
        assert_eq!(decode_saslname("a=2Cb=3Dc").unwrap(), "a,b=c");
        assert_eq!(decode_saslname("=3D=2C").unwrap(), "=,");
        assert_eq!(decode_saslname("ü=2C").unwrap(), "ü,");
        for name in ["a,b=c", "==,,", "plain", "ü"] {
            assert_eq!(decode_saslname(&encode_saslname(name)).unwrap(), name);
        }
    }

    #[test]
    fn bad_saslnames_are_refused() {
        for name in ["", "a=", "a=2", "a=2c", "a=41", "=", "a=3Dx=", "a\0b", "=ü"] {
            assert!(
                matches!(decode_saslname(name), Err(ScramError::InvalidSaslName(_))),
                "{name:?}"
            );
        }
    }

    #[test]
    fn nonces_are_printable_without_commas() {
        let nonce = random_nonce().unwrap();
        assert_eq!(nonce.len(), 32);
        assert!(is_printable_nonce(&nonce));
        assert_ne!(nonce, random_nonce().unwrap());
        for bad in ["", "a,b", "a b", "é", "\x7f"] {
            assert!(!is_printable_nonce(bad), "{bad:?}");
        }
    }

    #[test]
    fn messages_are_bounded_and_utf8() {
        let huge = vec![b'a'; SCRAM_MESSAGE_BYTES_MAX + 1];
        assert_eq!(
            message_text(&huge),
            Err(ScramError::TooLong {
                bytes: SCRAM_MESSAGE_BYTES_MAX + 1
            })
        );
        assert_eq!(message_text(b"\xff"), Err(ScramError::NotUtf8));
        assert_eq!(message_text(b""), Ok(""));
    }
}
