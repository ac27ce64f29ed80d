//! Application error codes on the wire (see `docs/PROTOCOL.md`).

use p2p_router::transport::CloseReason;
use quinn::VarInt;

/// Declares a code space: a `u32` enum and its QUIC varint, so both spaces
/// go on the wire the same way.
macro_rules! code_space {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $code:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u32)]
        pub(crate) enum $name { $($(#[$vdoc])* $variant = $code,)* }

        impl $name {
            pub(crate) fn varint(self) -> VarInt {
                VarInt::from_u32(self as u32)
            }
        }
    };
}

code_space! {
    /// Codes carried by RESET_STREAM and STOP_SENDING on channel streams.
    StreamCode {
        /// The sender abandoned the stream mid-message (a cancelled send, or the
        /// connection is closing); the receiver drops the partial frame.
        Cancelled = 0x01,
        /// The header names a channel not negotiated on this connection.
        UnknownChannel = 0x02,
        /// A stream for a channel and generation already seen.
        DuplicateStream = 0x03,
        /// A frame longer than the channel's maximum message size.
        Oversized = 0x04,
        /// Bytes that do not parse: a bad varint or a frame cut by FIN.
        Malformed = 0x05,
        /// The stream was replaced by a newer generation before it ended.
        Superseded = 0x06,
        /// The header did not arrive in time.
        HeaderTimeout = 0x07,
    }
}

code_space! {
    /// Codes carried by CONNECTION_CLOSE (application variant). The first
    /// five are the [`CloseReason`]s of the same names.
    CloseCode {
        Normal = 0x00,
        Refused = 0x01,
        PeerError = 0x02,
        Replaced = 0x03,
        Shutdown = 0x04,
        /// The peer broke the protocol (ALPN, control stream).
        ProtocolViolation = 0x10,
        /// The peer opened too many bad streams.
        TooManyStreamErrors = 0x11,
    }
}

impl CloseCode {
    /// The reason phrase sent with the code (for humans and logs).
    pub(crate) fn phrase(self) -> &'static [u8] {
        match self {
            CloseCode::Normal => b"normal",
            CloseCode::Refused => b"refused",
            CloseCode::PeerError => b"peer error",
            CloseCode::Replaced => b"replaced",
            CloseCode::Shutdown => b"shutdown",
            CloseCode::ProtocolViolation => b"protocol violation",
            CloseCode::TooManyStreamErrors => b"too many stream errors",
        }
    }
}

impl From<CloseReason> for CloseCode {
    fn from(reason: CloseReason) -> Self {
        match reason {
            CloseReason::Normal => CloseCode::Normal,
            CloseReason::Refused => CloseCode::Refused,
            CloseReason::PeerError => CloseCode::PeerError,
            CloseReason::Replaced => CloseCode::Replaced,
            CloseReason::Shutdown => CloseCode::Shutdown,
            // CloseReason is non-exhaustive.
            _ => CloseCode::Normal,
        }
    }
}
