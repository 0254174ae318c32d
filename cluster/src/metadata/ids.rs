//! Ids the cluster hands out: a topic's (Kafka's topic UUID) and the cluster's own.

use serde::{Deserialize, Serialize};

/// A topic's 128-bit id (Kafka's topic UUID): names can be reused after a delete, ids never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct TopicId(pub [u8; 16]);

impl TopicId {
    /// A random id, never the nil id Kafka reserves for "unknown".
    pub fn random(rng: &mut fastrand::Rng) -> TopicId {
        loop {
            let mut bytes = [0u8; 16];
            rng.fill(&mut bytes);
            // The shape of a version-4 UUID, as Kafka's own ids are.
            bytes[6] = (bytes[6] & 0x0f) | 0x40;
            bytes[8] = (bytes[8] & 0x3f) | 0x80;
            if bytes != [0; 16] {
                return TopicId(bytes);
            }
        }
    }
}

impl From<TopicId> for String {
    fn from(id: TopicId) -> String {
        id.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl TryFrom<String> for TopicId {
    type Error = String;
    fn try_from(text: String) -> Result<TopicId, String> {
        if text.len() != 32 {
            return Err(format!("topic id {text:?} is not 32 hex digits"));
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| format!("topic id {text:?} is not hexadecimal"))?;
        }
        Ok(TopicId(bytes))
    }
}

/// A new cluster id in Kafka's form: a random UUID as 22 characters of URL-safe base64.
pub fn random_cluster_id(rng: &mut fastrand::Rng) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits = u128::from_be_bytes(TopicId::random(rng).0);
    // Six bits per digit from the top; the 22nd digit holds the last two bits, then zeros.
    (0..22u32)
        .map(|i| {
            let digit = match 6 * i {
                at if at + 6 <= 128 => bits >> (122 - at),
                at => bits << (at + 6 - 128),
            };
            ALPHABET[(digit & 63) as usize] as char
        })
        .collect()
}
