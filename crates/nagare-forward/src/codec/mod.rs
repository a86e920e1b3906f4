//! The forward protocol codec: pure, synchronous, no I/O.
//!
//! * [`Framer`] cuts a byte stream into whole msgpack objects. A frame split at any byte
//!   boundary decodes the same; "incomplete" is `Ok(None)`; declared lengths are checked
//!   against the frame limit before anything is allocated.
//! * [`parse_message`] turns one frame into a [`Parsed`] message: Message, Forward,
//!   PackedForward or CompressedPackedForward, with the `chunk`, `compressed` and
//!   `fluent_signal` options. Records stay zero-copy slices of the frame.
//! * [`encode`] writes every mode, acks and entries; [`handshake`] does HELO/PING/PONG.
//!
//! What happens to each malformed input (vectors M01-M19 of `shared/forward-protocol.md`) is
//! decided here: an error whose [`DecodeError::can_continue`] is false means "close the
//! connection without acking"; a [`Parsed::Rejected`] message is counted and, when it carried a
//! `chunk`, acked, because resending it can never succeed.

pub mod compress;
pub mod decode;
pub mod encode;
pub mod handshake;
pub mod time;

pub use decode::{parse_message, Framer, Message, Parsed};
pub use encode::{EntryWriter, Options};

use thiserror::Error;

/// Default cap on one msgpack frame (`chunk_size_limit`): 32 MiB covers fluentd's 8 MiB
/// memory chunks and Fluent Bit's 6 MB frames with room to spare.
pub const DEFAULT_MAX_FRAME: usize = 32 * 1024 * 1024;
/// Default cap on the decompressed size of one message (`decompression_size_limit`).
pub const DEFAULT_MAX_DECOMPRESSED: usize = 64 * 1024 * 1024;

/// Limits and switches that decide how input is parsed.
#[derive(Debug, Clone)]
pub struct DecodeLimits {
    /// Largest msgpack frame accepted; larger declared or actual frames close the connection.
    pub max_frame: usize,
    /// Largest decompressed payload of one message.
    pub max_decompressed: usize,
    /// Drop invalid events (bad time, non-map record) and keep the rest of the message (true,
    /// as Fluentd >= 1.19), or refuse the whole message and close (false).
    pub skip_invalid_event: bool,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_frame: DEFAULT_MAX_FRAME,
            max_decompressed: DEFAULT_MAX_DECOMPRESSED,
            skip_invalid_event: true,
        }
    }
}

/// Input the connection cannot go on from: the caller closes it and sends no ack.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Bytes that are not msgpack (reserved 0xc1, truncated inner stream, ...).
    #[error("malformed msgpack: {0}")]
    Malformed(&'static str),
    /// A frame larger than `chunk_size_limit`, by declared or actual length.
    #[error("frame of at least {needed} bytes exceeds chunk_size_limit {limit}")]
    FrameTooLarge { needed: u64, limit: usize },
    /// Nested deeper than the codec allows.
    #[error("msgpack nested too deeply")]
    TooDeep,
    /// The decompressed payload passed `decompression_size_limit` (a gzip bomb, M13).
    #[error("decompressed payload exceeds decompression_size_limit {limit}")]
    DecompressedTooLarge { limit: usize },
    /// `compressed: gzip` (or gzip magic) but the payload does not gunzip (M12).
    #[error("payload does not decompress: {0}")]
    BadCompression(String),
    /// A `compressed` value we do not know.
    #[error("unsupported compression {0:?}")]
    UnknownCompression(String),
    /// A time that is an ext type other than EventTime (0) or Timestamp (-1) (M05).
    #[error("unknown ext type {0} as event time")]
    UnknownExtType(i8),
    /// Ext type 0 whose length is not 8 (M06).
    #[error("EventTime ext with length {0}, expected 8")]
    BadEventTime(u32),
    /// An invalid event while `skip_invalid_event` is false.
    #[error("invalid event: {0}")]
    InvalidEvent(&'static str),
}

impl DecodeError {
    /// Whether the connection may keep reading after this error. Every variant closes today:
    /// after a framing or decompression error the stream position can no longer be trusted.
    pub fn can_continue(&self) -> bool {
        false
    }

    /// A stable metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Malformed(_) => "malformed",
            DecodeError::FrameTooLarge { .. } => "frame_too_large",
            DecodeError::TooDeep => "too_deep",
            DecodeError::DecompressedTooLarge { .. } => "decompressed_too_large",
            DecodeError::BadCompression(_) => "bad_compression",
            DecodeError::UnknownCompression(_) => "unknown_compression",
            DecodeError::UnknownExtType(_) => "unknown_ext_type",
            DecodeError::BadEventTime(_) => "bad_event_time",
            DecodeError::InvalidEvent(_) => "invalid_event",
        }
    }
}

impl From<nagare_core::msgpack::ScanError> for DecodeError {
    fn from(e: nagare_core::msgpack::ScanError) -> Self {
        use nagare_core::msgpack::ScanError;
        match e {
            ScanError::Invalid(m) => DecodeError::Malformed(m),
            ScanError::TooLarge { needed, limit } => DecodeError::FrameTooLarge { needed, limit },
            ScanError::TooDeep(_) => DecodeError::TooDeep,
        }
    }
}
