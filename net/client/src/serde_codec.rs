//! How keys and values become bytes and back: the [`Serializer`] and [`Deserializer`] traits
//! a typed producer and a typed consumer use, with implementations for raw bytes
//! ([`RawBytes`]), UTF-8 text ([`Utf8`]) and JSON through serde ([`Json`]). An application
//! with another format implements the traits for its own type.

use bytes::Bytes;
use std::marker::PhantomData;

/// Why bytes could not become a value, or a value bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

/// Turns the bytes of a key or a value into the application's type.
pub trait Deserializer<T>: Send + Sync {
    /// Decodes `bytes`, which came from `topic`.
    fn deserialize(&self, topic: &str, bytes: &Bytes) -> Result<T, CodecError>;
}

/// Turns the application's key or value into bytes.
pub trait Serializer<T: ?Sized>: Send + Sync {
    /// Encodes `value`, bound for `topic`.
    fn serialize(&self, topic: &str, value: &T) -> Result<Vec<u8>, CodecError>;
}

/// The bytes as they are (no copy when deserializing: they share the frame's buffer).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawBytes;

impl Deserializer<Bytes> for RawBytes {
    fn deserialize(&self, _: &str, bytes: &Bytes) -> Result<Bytes, CodecError> {
        Ok(bytes.clone())
    }
}

impl Serializer<[u8]> for RawBytes {
    fn serialize(&self, _: &str, value: &[u8]) -> Result<Vec<u8>, CodecError> {
        Ok(value.to_vec())
    }
}

impl Serializer<Bytes> for RawBytes {
    fn serialize(&self, _: &str, value: &Bytes) -> Result<Vec<u8>, CodecError> {
        Ok(value.to_vec())
    }
}

/// UTF-8 text; bytes that are not UTF-8 fail to deserialize.
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8;

impl Deserializer<String> for Utf8 {
    fn deserialize(&self, _: &str, bytes: &Bytes) -> Result<String, CodecError> {
        String::from_utf8(bytes.to_vec()).map_err(|e| CodecError(format!("not UTF-8: {e}")))
    }
}

impl Serializer<str> for Utf8 {
    fn serialize(&self, _: &str, value: &str) -> Result<Vec<u8>, CodecError> {
        Ok(value.as_bytes().to_vec())
    }
}

impl Serializer<String> for Utf8 {
    fn serialize(&self, _: &str, value: &String) -> Result<Vec<u8>, CodecError> {
        Ok(value.as_bytes().to_vec())
    }
}

/// JSON through serde, for any type that derives `Serialize` and `Deserialize`.
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T> Json<T> {
    /// JSON of `T`.
    pub fn new() -> Json<T> {
        Json(PhantomData)
    }
}

impl<T> Default for Json<T> {
    fn default() -> Json<T> {
        Json::new()
    }
}

impl<T> Clone for Json<T> {
    fn clone(&self) -> Json<T> {
        Json::new()
    }
}

impl<T> std::fmt::Debug for Json<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Json<{}>", std::any::type_name::<T>())
    }
}

impl<T: serde::de::DeserializeOwned> Deserializer<T> for Json<T> {
    fn deserialize(&self, _: &str, bytes: &Bytes) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError(format!("not JSON of the type: {e}")))
    }
}

impl<T: serde::Serialize> Serializer<T> for Json<T> {
    fn serialize(&self, _: &str, value: &T) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(value).map_err(|e| CodecError(format!("cannot be JSON: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Order {
        id: u32,
        item: String,
    }

    #[test]
    fn each_format_round_trips_and_refuses_what_it_cannot_read() {
        let order = Order {
            id: 7,
            item: "tea".into(),
        };
        let json = Json::<Order>::new();
        let bytes = Bytes::from(json.serialize("t", &order).unwrap());
        assert_eq!(json.deserialize("t", &bytes).unwrap(), order);
        assert!(json
            .deserialize("t", &Bytes::from_static(b"{\"id\":"))
            .is_err());

        let text = Bytes::from(Utf8.serialize("t", "héllo").unwrap());
        assert_eq!(Utf8.deserialize("t", &text).unwrap(), "héllo");
        assert!(Utf8
            .deserialize("t", &Bytes::from_static(&[0xff, 0xfe]))
            .is_err());

        let raw = Bytes::from_static(&[0, 1, 255]);
        assert_eq!(RawBytes.deserialize("t", &raw).unwrap(), raw);
    }
}
