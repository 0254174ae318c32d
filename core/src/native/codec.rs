//! Frames on the wire: `[u32 length][u32 control length][control][payload]`, decoded
//! sans-IO from whatever bytes have arrived.

use super::{FRAME_HEADER_BYTES, NAME_BYTES_MAX};
use bytes::{Buf, Bytes, BytesMut};
use rkyv::rancor::Error as RkyvError;
use rkyv::util::AlignedVec;

/// Why bytes could not be read as a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length field exceeds the limit.
    #[error("frame of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced size.
        size: u64,
        /// Limit.
        max: u32,
    },
    /// The control length does not fit in the frame.
    #[error("control part of {control} bytes does not fit in a frame of {frame}")]
    BadControlLength {
        /// Announced control length.
        control: u32,
        /// Frame length.
        frame: u32,
    },
    /// The control part failed validation.
    #[error("malformed control message: {0}")]
    Malformed(String),
}

/// A decoded frame: the control message and the payload that came with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<T> {
    /// The control message.
    pub control: T,
    /// Record data (may be empty).
    pub payload: Bytes,
}

/// Takes one whole frame off the front of `buffer`, or returns `None` when more bytes are
/// needed. A length over `frame_bytes_max` is refused before anything is buffered for it.
pub fn decode_frame<T>(
    buffer: &mut BytesMut,
    frame_bytes_max: u32,
) -> Result<Option<Frame<T>>, FrameError>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, RkyvError>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<RkyvError>>,
{
    if buffer.len() < 4 {
        return Ok(None);
    }
    let frame_len = u32::from_be_bytes(buffer[..4].try_into().expect("4 bytes"));
    if frame_len > frame_bytes_max {
        return Err(FrameError::TooLarge {
            size: frame_len as u64,
            max: frame_bytes_max,
        });
    }
    if frame_len < 4 {
        return Err(FrameError::BadControlLength {
            control: 0,
            frame: frame_len,
        });
    }
    if buffer.len() < 4 + frame_len as usize {
        buffer.reserve(4 + frame_len as usize - buffer.len());
        return Ok(None);
    }
    let control_len = u32::from_be_bytes(buffer[4..8].try_into().expect("4 bytes"));
    if control_len > frame_len - 4 {
        return Err(FrameError::BadControlLength {
            control: control_len,
            frame: frame_len,
        });
    }
    buffer.advance(FRAME_HEADER_BYTES);
    let control_bytes = buffer.split_to(control_len as usize);
    let payload = buffer
        .split_to((frame_len - 4 - control_len) as usize)
        .freeze();
    // rkyv needs its root aligned; a copy of a small control part is cheaper than a check.
    let mut aligned = AlignedVec::<16>::with_capacity(control_bytes.len());
    aligned.extend_from_slice(&control_bytes);
    let control = rkyv::from_bytes::<T, RkyvError>(&aligned)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    Ok(Some(Frame { control, payload }))
}

/// Encodes a frame's header and control part; the caller sends `payload_len` payload bytes
/// right after it.
pub fn encode_frame<T>(control: &T, payload_len: usize) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            RkyvError,
        >,
    >,
{
    let archived = rkyv::to_bytes::<RkyvError>(control).expect("serialising to memory cannot fail");
    let frame_len = 4 + archived.len() + payload_len;
    let mut out = Vec::with_capacity(4 + frame_len - payload_len);
    out.extend_from_slice(&(frame_len as u32).to_be_bytes());
    out.extend_from_slice(&(archived.len() as u32).to_be_bytes());
    out.extend_from_slice(&archived);
    out
}

/// Checks a client-chosen name (consumer, subscription): 1 to [`NAME_BYTES_MAX`] bytes of ASCII
/// letters, digits, `.`, `_` and `-` (subscription names become file names).
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Err(format!("{what} name must be 1 to {NAME_BYTES_MAX} bytes"));
    }
    if name == "." || name == ".." || name.starts_with('.') {
        return Err(format!("{what} name must not start with '.'"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(format!(
            "{what} name may contain only ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}
