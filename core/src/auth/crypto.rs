//! The SCRAM primitives of RFC 5802 section 3 (Hi, HMAC, H, XOR) over ring, for one
//! [`Mechanism`], and the two things that need care around them: constant-time comparison and
//! random bytes.

use std::num::NonZeroU32;

use ring::rand::SecureRandom;
use ring::{digest, hmac, pbkdf2};

use super::Mechanism;

fn digest_algorithm(mechanism: Mechanism) -> &'static digest::Algorithm {
    match mechanism {
        Mechanism::ScramSha256 => &digest::SHA256,
        Mechanism::ScramSha512 => &digest::SHA512,
    }
}

fn hmac_algorithm(mechanism: Mechanism) -> hmac::Algorithm {
    match mechanism {
        Mechanism::ScramSha256 => hmac::HMAC_SHA256,
        Mechanism::ScramSha512 => hmac::HMAC_SHA512,
    }
}

fn pbkdf2_algorithm(mechanism: Mechanism) -> pbkdf2::Algorithm {
    match mechanism {
        Mechanism::ScramSha256 => pbkdf2::PBKDF2_HMAC_SHA256,
        Mechanism::ScramSha512 => pbkdf2::PBKDF2_HMAC_SHA512,
    }
}

/// Bytes in the mechanism's hash output: the length of every key, proof and signature.
pub(crate) fn output_bytes(mechanism: Mechanism) -> usize {
    digest_algorithm(mechanism).output_len()
}

/// `SaltedPassword := Hi(Normalize(password), salt, i)`. Passwords are used as given: Kafka's
/// clients do not apply SASLprep either, so normalizing here would lock out non-ASCII users.
pub(crate) fn salted_password(
    mechanism: Mechanism,
    password: &[u8],
    salt: &[u8],
    iterations: NonZeroU32,
) -> Vec<u8> {
    let mut out = vec![0; output_bytes(mechanism)];
    pbkdf2::derive(
        pbkdf2_algorithm(mechanism),
        iterations,
        salt,
        password,
        &mut out,
    );
    out
}

/// `HMAC(key, data)`.
pub(crate) fn hmac(mechanism: Mechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac_algorithm(mechanism), key);
    hmac::sign(&key, data).as_ref().to_vec()
}

/// `H(data)`.
pub(crate) fn hash(mechanism: Mechanism, data: &[u8]) -> Vec<u8> {
    digest::digest(digest_algorithm(mechanism), data)
        .as_ref()
        .to_vec()
}

/// `ClientKey := HMAC(SaltedPassword, "Client Key")`.
pub(crate) fn client_key(mechanism: Mechanism, salted_password: &[u8]) -> Vec<u8> {
    hmac(mechanism, salted_password, b"Client Key")
}

/// `ServerKey := HMAC(SaltedPassword, "Server Key")`.
pub(crate) fn server_key(mechanism: Mechanism, salted_password: &[u8]) -> Vec<u8> {
    hmac(mechanism, salted_password, b"Server Key")
}

/// Byte-wise XOR of two equally long strings (callers check the lengths first; a shorter one
/// would silently truncate the result, which can only make a comparison fail).
pub(crate) fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// Whether two secrets are equal, in time that does not depend on where they differ, so a
/// peer cannot learn a stored key byte by byte from response times.
///
/// ring 0.17.14 marks `constant_time` deprecated ("internal, will be removed"); it is still
/// ring's own comparison (the one its HMAC verification uses), and this is the only place that
/// calls it, so a future ring only needs a change here.
pub(crate) fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    #[allow(deprecated)]
    let equal = ring::constant_time::verify_slices_are_equal(a, b).is_ok();
    equal
}

/// `N` bytes from the operating system's CSPRNG; `None` only if the system RNG fails.
pub(crate) fn random_bytes<const N: usize>() -> Option<[u8; N]> {
    let mut bytes = [0; N];
    ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
    Some(bytes)
}
