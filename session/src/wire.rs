//! The peer-to-peer wire format: binary, versioned, little-endian, length-checked.
//!
//! Every message starts with the version byte ([`WIRE_VERSION`]) and a kind byte. Each data
//! channel carries its own kinds: `video` carries [`VideoChunk`]s (and the few
//! [`ControlMessage`]s that must not wait behind ordered ones: a restart's `StreamStart`,
//! the pointer's `CursorPosition`; see [`is_video_chunk`]; and viewer to target the `Nack`
//! that asks for lost chunks again, the `Feedback` and, while reconnecting, the `Ping`),
//! `control` carries
//! [`ControlMessage`]s and `input` carries [`InputEvent`]s. Decoding checks every length
//! before reading or allocating, refuses trailing bytes, and turns anything malformed into a
//! [`WireError`]; nothing a peer sends can panic it. The layout is plain enough for a
//! browser's `DataView`.
//!
//! ```text
//! video chunk (46-byte header, then payload):
//!  0 version  1 kind=0x10  2 send seq u32  6 send time us u32 (both stamped as it leaves)
//!  10 stream u16  12 band u8  13 flags u8 (bit 0: keyframe, bit 1: sent again on request)
//!  14 chunk index u16  16 chunk count u16  18 band seq u32  22 frame id u64
//!  30 capture time us u64  38 band payload length u32  42 offset of this chunk u32
//! input: 0 version  1 kind  2 send time us u32 (sender's clock, 0 unknown)  6 the event
//! ```

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use deskwire_capture::CursorImage;

use crate::input::{InputEvent, Key, NamedKey, PointerButton, MAX_TEXT_BYTES};
use deskwire_engine::ColorSpace;

/// The wire version this engine speaks.
pub const WIRE_VERSION: u8 = 1;
/// Bytes before a video chunk's payload.
pub const VIDEO_HEADER_LEN: usize = 46;
/// Largest encoded band (one H.264 access unit) a receiver accepts.
pub const MAX_BAND_BYTES: u32 = 16 * 1024 * 1024;
/// Most chunks one band frame may be split into.
pub const MAX_CHUNKS: u16 = 4096;
/// Longest free-text detail in a bye.
pub const MAX_BYE_DETAIL: usize = 256;
/// Longest grant request or answer (JSON), in bytes.
pub const MAX_GRANT_JSON: usize = 4096;
/// Most bands a stream may declare.
pub const MAX_WIRE_BANDS: usize = 32;

/// Whether a `video`-channel message is a chunk of encoded video, for the decoder. The
/// channel also carries messages the session core reads: a restart's `StreamStart`, which
/// on the control channel can wait seconds behind queued video (SCTP sends unordered
/// messages first) while here it leaves ahead of the chunks it announces, and the
/// pointer's position, which must not wait either.
pub fn is_video_chunk(buf: &[u8]) -> bool {
    matches!(buf, [WIRE_VERSION, kind::VIDEO, ..])
}

mod kind {
    pub(super) const VIDEO: u8 = 0x10;
    pub(super) const STREAM_START: u8 = 0x20;
    pub(super) const KEYFRAME_REQUEST: u8 = 0x21;
    pub(super) const PING: u8 = 0x22;
    pub(super) const PONG: u8 = 0x23;
    pub(super) const RECEIVER_REPORT: u8 = 0x24;
    pub(super) const PERMISSIONS: u8 = 0x25;
    pub(super) const BYE: u8 = 0x26;
    pub(super) const GRANT_REQUEST: u8 = 0x27;
    pub(super) const GRANT_ANSWER: u8 = 0x28;
    pub(super) const FEEDBACK: u8 = 0x29;
    pub(super) const CURSOR_SHAPE: u8 = 0x2a;
    pub(super) const CURSOR_POSITION: u8 = 0x2b;
    pub(super) const NACK: u8 = 0x2c;
    pub(super) const POINTER_MOVE: u8 = 0x30;
    pub(super) const BUTTON: u8 = 0x31;
    pub(super) const WHEEL: u8 = 0x32;
    pub(super) const KEY: u8 = 0x33;
    pub(super) const TEXT: u8 = 0x34;
}

/// Which data channel a message arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Video chunks.
    Video,
    /// Control messages.
    Control,
    /// Input events.
    Input,
}

impl Channel {
    /// All three, in the order the target creates them.
    pub const ALL: [Channel; 3] = [Channel::Video, Channel::Input, Channel::Control];

    /// The data channel's label on the wire.
    pub fn label(self) -> &'static str {
        match self {
            Channel::Video => "video",
            Channel::Input => "input",
            Channel::Control => "control",
        }
    }

    /// The channel a peer's label names, if it is one of ours.
    pub fn from_label(label: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.label() == label)
    }
}

/// Bytes from a peer that are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A zero-length message.
    #[error("empty message")]
    Empty,
    /// A version this engine does not speak.
    #[error("wire version {got} is not supported (this engine speaks {WIRE_VERSION})")]
    Version {
        /// The version byte received.
        got: u8,
    },
    /// A kind this channel does not carry.
    #[error("message kind {kind:#04x} is not valid on the {channel:?} channel")]
    UnknownKind {
        /// The kind byte.
        kind: u8,
        /// Where it arrived.
        channel: Channel,
    },
    /// Shorter than its kind requires.
    #[error("truncated message: need {need} bytes, got {got}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        got: usize,
    },
    /// Longer than its kind allows.
    #[error("{extra} unexpected trailing bytes")]
    Trailing {
        /// Bytes left over.
        extra: usize,
    },
    /// A field out of its range.
    #[error("invalid {field}: {detail}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
}

fn invalid(field: &'static str, detail: impl Into<String>) -> WireError {
    WireError::Invalid {
        field,
        detail: detail.into(),
    }
}

/// What the viewer's video channel delivered over one interval. Every field is the
/// viewer's claim: the target clamps and checks them before they steer anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Feedback {
    /// How long the interval was, microseconds on the viewer's clock.
    pub interval_us: u32,
    /// Video bytes received in it.
    pub bytes: u32,
    /// Video messages received in it.
    pub received: u32,
    /// Video messages missing from the sequence in it.
    pub lost: u32,
    /// How much later than the fastest recent message the interval's messages arrived, on
    /// average, microseconds: the queue building up on the path.
    pub queue_delay_us: u32,
    /// The highest transport sequence number seen so far.
    pub highest_seq: u32,
    /// The viewer's latest round trip to the target, microseconds; 0 before the first.
    pub rtt_us: u32,
}

/// Why a peer is leaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByeReason {
    /// The user or the application ended the session.
    Ended,
    /// The peer hit an error it cannot recover from.
    Error,
    /// A reason code from a newer peer.
    Other(u8),
}

impl ByeReason {
    fn wire(self) -> u8 {
        match self {
            ByeReason::Ended => 0,
            ByeReason::Error => 1,
            ByeReason::Other(n) => n,
        }
    }

    fn from_wire(v: u8) -> Self {
        match v {
            0 => ByeReason::Ended,
            1 => ByeReason::Error,
            n => ByeReason::Other(n),
        }
    }
}

/// Messages on the reliable, ordered `control` channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    /// Target -> viewer: a stream starts; decoders are set up from this.
    StreamStart {
        /// Stream generation carried by its video chunks.
        stream: u16,
        /// Frame width.
        width: u16,
        /// Frame height.
        height: u16,
        /// Colour matrix and range of the stream.
        color: ColorSpace,
        /// First row of each band.
        tops: Vec<u32>,
    },
    /// Viewer -> target: send keyframes for these bands (bit i = band i).
    KeyframeRequest {
        /// Stream the request is about.
        stream: u16,
        /// Band bitmask.
        bands: u32,
    },
    /// Viewer -> target: clock probe; also the heartbeat.
    Ping {
        /// Matches the pong.
        nonce: u32,
        /// Viewer clock at sending, microseconds.
        sent_us: u64,
    },
    /// Target -> viewer: the answer to a ping.
    Pong {
        /// The ping's nonce.
        nonce: u32,
        /// The ping's `sent_us`.
        echo_us: u64,
        /// Target session clock on receipt, microseconds.
        target_us: u64,
    },
    /// Viewer -> target: what the viewer saw over the last period.
    ReceiverReport {
        /// Frames decoded in the period.
        frames: u32,
        /// Median capture->decoded latency, microseconds.
        latency_p50_us: u32,
        /// 99th percentile latency, microseconds.
        latency_p99_us: u32,
        /// Keyframe requests made in the period.
        keyframe_requests: u32,
    },
    /// Viewer -> target, about ten times a second while video flows: what the video
    /// channel delivered since the last one, the input of the target's rate control.
    Feedback(Feedback),
    /// Target -> viewer: what the viewer may do now.
    Permissions {
        /// Keyboard and mouse are injected.
        control: bool,
    },
    /// Viewer -> target: the technician asks for unattended access (a
    /// `deskwire_signal::grant::GrantRequest` as JSON); answered by `GrantAnswer`.
    GrantRequest {
        /// Matches the answer.
        id: u32,
        /// The request, JSON.
        request: String,
    },
    /// Target -> viewer: the customer's answer to a `GrantRequest`.
    GrantAnswer {
        /// The request's id.
        id: u32,
        /// Approved: `detail` is the grant as JSON. Refused: `detail` says why.
        approved: bool,
        /// The grant, or the reason.
        detail: String,
    },
    /// Target -> viewer: the pointer's new shape, once per change (`wire::cursor`).
    CursorShape(Arc<CursorImage>),
    /// Target -> viewer, on the video channel: where the pointer is (`wire::cursor`).
    CursorPosition(CursorPosition),
    /// Viewer -> target: video messages that did not arrive, to send again (`wire::nack`).
    Nack(Vec<NackRange>),
    /// Either way: the sender is leaving.
    Bye {
        /// Why.
        reason: ByeReason,
        /// A sentence for logs and users.
        detail: String,
    },
}

impl ControlMessage {
    /// Append this message to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(WIRE_VERSION);
        match self {
            ControlMessage::StreamStart {
                stream,
                width,
                height,
                color,
                tops,
            } => {
                out.put_u8(kind::STREAM_START);
                out.put_u16_le(*stream);
                out.put_u16_le(*width);
                out.put_u16_le(*height);
                out.put_u8(color_wire(*color));
                // Tops beyond the limit cannot be sent; a valid layout never has them.
                let n = tops.len().min(MAX_WIRE_BANDS);
                out.put_u8(n as u8);
                for &t in &tops[..n] {
                    out.put_u16_le(u16::try_from(t).unwrap_or(u16::MAX));
                }
            }
            ControlMessage::KeyframeRequest { stream, bands } => {
                out.put_u8(kind::KEYFRAME_REQUEST);
                out.put_u16_le(*stream);
                out.put_u32_le(*bands);
            }
            ControlMessage::Ping { nonce, sent_us } => {
                out.put_u8(kind::PING);
                out.put_u32_le(*nonce);
                out.put_u64_le(*sent_us);
            }
            ControlMessage::Pong {
                nonce,
                echo_us,
                target_us,
            } => {
                out.put_u8(kind::PONG);
                out.put_u32_le(*nonce);
                out.put_u64_le(*echo_us);
                out.put_u64_le(*target_us);
            }
            ControlMessage::ReceiverReport {
                frames,
                latency_p50_us,
                latency_p99_us,
                keyframe_requests,
            } => {
                out.put_u8(kind::RECEIVER_REPORT);
                out.put_u32_le(*frames);
                out.put_u32_le(*latency_p50_us);
                out.put_u32_le(*latency_p99_us);
                out.put_u32_le(*keyframe_requests);
            }
            ControlMessage::Feedback(f) => {
                out.put_u8(kind::FEEDBACK);
                for v in [
                    f.interval_us,
                    f.bytes,
                    f.received,
                    f.lost,
                    f.queue_delay_us,
                    f.highest_seq,
                    f.rtt_us,
                ] {
                    out.put_u32_le(v);
                }
            }
            ControlMessage::Permissions { control } => {
                out.put_u8(kind::PERMISSIONS);
                out.put_u8(u8::from(*control));
            }
            ControlMessage::GrantRequest { id, request } => {
                out.put_u8(kind::GRANT_REQUEST);
                out.put_u32_le(*id);
                let request = truncate_utf8(request, MAX_GRANT_JSON);
                out.put_u16_le(request.len() as u16);
                out.put_slice(request.as_bytes());
            }
            ControlMessage::GrantAnswer {
                id,
                approved,
                detail,
            } => {
                out.put_u8(kind::GRANT_ANSWER);
                out.put_u32_le(*id);
                out.put_u8(u8::from(*approved));
                let detail = truncate_utf8(detail, MAX_GRANT_JSON);
                out.put_u16_le(detail.len() as u16);
                out.put_slice(detail.as_bytes());
            }
            ControlMessage::CursorShape(c) => cursor::encode_shape(c, out),
            ControlMessage::CursorPosition(p) => cursor::encode_position(p, out),
            ControlMessage::Nack(ranges) => nack::encode(ranges, out),
            ControlMessage::Bye { reason, detail } => {
                out.put_u8(kind::BYE);
                out.put_u8(reason.wire());
                let detail = truncate_utf8(detail, MAX_BYE_DETAIL);
                out.put_u16_le(detail.len() as u16);
                out.put_slice(detail.as_bytes());
            }
        }
    }
}

/// Parse a message from the `control` channel.
pub fn decode_control(buf: &[u8]) -> Result<ControlMessage, WireError> {
    let mut r = Reader::open(buf, Channel::Control)?;
    let msg = match r.kind {
        kind::STREAM_START => {
            let stream = r.u16()?;
            let width = r.u16()?;
            let height = r.u16()?;
            let color = color_from_wire(r.u8()?)?;
            let n = usize::from(r.u8()?);
            if n == 0 || n > MAX_WIRE_BANDS {
                return Err(invalid(
                    "band count",
                    format!("{n} (expected 1..={MAX_WIRE_BANDS})"),
                ));
            }
            r.need(n * 2)?;
            let mut tops = Vec::with_capacity(n);
            for _ in 0..n {
                tops.push(u32::from(r.u16()?));
            }
            ControlMessage::StreamStart {
                stream,
                width,
                height,
                color,
                tops,
            }
        }
        kind::KEYFRAME_REQUEST => ControlMessage::KeyframeRequest {
            stream: r.u16()?,
            bands: r.u32()?,
        },
        kind::PING => ControlMessage::Ping {
            nonce: r.u32()?,
            sent_us: r.u64()?,
        },
        kind::PONG => ControlMessage::Pong {
            nonce: r.u32()?,
            echo_us: r.u64()?,
            target_us: r.u64()?,
        },
        kind::RECEIVER_REPORT => ControlMessage::ReceiverReport {
            frames: r.u32()?,
            latency_p50_us: r.u32()?,
            latency_p99_us: r.u32()?,
            keyframe_requests: r.u32()?,
        },
        kind::FEEDBACK => ControlMessage::Feedback(Feedback {
            interval_us: r.u32()?,
            bytes: r.u32()?,
            received: r.u32()?,
            lost: r.u32()?,
            queue_delay_us: r.u32()?,
            highest_seq: r.u32()?,
            rtt_us: r.u32()?,
        }),
        kind::PERMISSIONS => ControlMessage::Permissions {
            control: r.bool("control")?,
        },
        kind::GRANT_REQUEST => {
            let id = r.u32()?;
            let request = r.text(MAX_GRANT_JSON, "grant request")?;
            ControlMessage::GrantRequest { id, request }
        }
        kind::GRANT_ANSWER => {
            let id = r.u32()?;
            let approved = r.bool("approved")?;
            let detail = r.text(MAX_GRANT_JSON, "grant answer")?;
            ControlMessage::GrantAnswer {
                id,
                approved,
                detail,
            }
        }
        kind::CURSOR_SHAPE => ControlMessage::CursorShape(cursor::decode_shape(&mut r)?),
        kind::CURSOR_POSITION => ControlMessage::CursorPosition(cursor::decode_position(&mut r)?),
        kind::NACK => ControlMessage::Nack(nack::decode(&mut r)?),
        kind::BYE => {
            let reason = ByeReason::from_wire(r.u8()?);
            let len = usize::from(r.u16()?);
            if len > MAX_BYE_DETAIL {
                return Err(invalid(
                    "bye detail",
                    format!("{len} bytes (max {MAX_BYE_DETAIL})"),
                ));
            }
            let detail = r.utf8(len, "bye detail")?;
            ControlMessage::Bye { reason, detail }
        }
        _ => return Err(r.unknown()),
    };
    r.finish()?;
    Ok(msg)
}

impl InputEvent {
    /// Append this event to `out`, sent at an unknown time.
    pub fn encode(&self, out: &mut BytesMut) {
        self.encode_at(out, 0);
    }

    /// Append this event to `out`, stamped with when it was sent: microseconds on the
    /// sender's session clock, wrapping; 0 for unknown. The target refuses presses that
    /// arrive much later than the sender's messages usually do.
    pub fn encode_at(&self, out: &mut BytesMut, sent_us: u32) {
        out.put_u8(WIRE_VERSION);
        match self {
            InputEvent::PointerMove { x, y } => {
                out.put_u8(kind::POINTER_MOVE);
                out.put_u32_le(sent_us);
                out.put_i32_le(*x);
                out.put_i32_le(*y);
            }
            InputEvent::Button { button, down } => {
                out.put_u8(kind::BUTTON);
                out.put_u32_le(sent_us);
                out.put_u8(button.wire());
                out.put_u8(u8::from(*down));
            }
            InputEvent::Wheel { dx, dy } => {
                out.put_u8(kind::WHEEL);
                out.put_u32_le(sent_us);
                out.put_i16_le(*dx);
                out.put_i16_le(*dy);
            }
            InputEvent::Key { key, down } => {
                out.put_u8(kind::KEY);
                out.put_u32_le(sent_us);
                match key {
                    Key::Char(c) => {
                        out.put_u8(0);
                        out.put_u32_le(u32::from(*c));
                    }
                    Key::Named(n) => {
                        out.put_u8(1);
                        out.put_u32_le(*n as u32);
                    }
                }
                out.put_u8(u8::from(*down));
            }
            InputEvent::Text(text) => {
                out.put_u8(kind::TEXT);
                out.put_u32_le(sent_us);
                let text = truncate_utf8(text, MAX_TEXT_BYTES);
                out.put_u16_le(text.len() as u16);
                out.put_slice(text.as_bytes());
            }
        }
    }
}

/// Parse a message from the `input` channel.
pub fn decode_input(buf: &[u8]) -> Result<InputEvent, WireError> {
    decode_input_at(buf).map(|(event, _)| event)
}

/// Parse a message from the `input` channel with its send stamp (0: unknown).
pub fn decode_input_at(buf: &[u8]) -> Result<(InputEvent, u32), WireError> {
    let mut r = Reader::open(buf, Channel::Input)?;
    if !matches!(
        r.kind,
        kind::POINTER_MOVE | kind::BUTTON | kind::WHEEL | kind::KEY | kind::TEXT
    ) {
        return Err(r.unknown());
    }
    let sent_us = r.u32()?;
    let event = match r.kind {
        kind::POINTER_MOVE => InputEvent::PointerMove {
            x: r.i32()?,
            y: r.i32()?,
        },
        kind::BUTTON => {
            let b = r.u8()?;
            let button = PointerButton::from_wire(b)
                .ok_or_else(|| invalid("button", format!("{b} (expected 0..=4)")))?;
            InputEvent::Button {
                button,
                down: r.bool("button state")?,
            }
        }
        kind::WHEEL => InputEvent::Wheel {
            dx: r.i16()?,
            dy: r.i16()?,
        },
        kind::KEY => {
            let class = r.u8()?;
            let value = r.u32()?;
            let key = match class {
                0 => Key::Char(
                    char::from_u32(value)
                        .ok_or_else(|| invalid("key", format!("{value:#x} is not a character")))?,
                ),
                1 => Key::Named(
                    NamedKey::from_wire(value)
                        .ok_or_else(|| invalid("key", format!("unknown named key {value}")))?,
                ),
                c => return Err(invalid("key class", format!("{c} (expected 0 or 1)"))),
            };
            InputEvent::Key {
                key,
                down: r.bool("key state")?,
            }
        }
        kind::TEXT => {
            let len = usize::from(r.u16()?);
            if len > MAX_TEXT_BYTES {
                return Err(invalid(
                    "text",
                    format!("{len} bytes (max {MAX_TEXT_BYTES})"),
                ));
            }
            InputEvent::Text(r.utf8(len, "text")?)
        }
        _ => return Err(r.unknown()),
    };
    r.finish()?;
    Ok((event, sent_us))
}

fn color_wire(c: ColorSpace) -> u8 {
    match c {
        ColorSpace::Bt709Limited => 0,
        ColorSpace::Bt709Full => 1,
        ColorSpace::Bt601Limited => 2,
    }
}

fn color_from_wire(v: u8) -> Result<ColorSpace, WireError> {
    Ok(match v {
        0 => ColorSpace::Bt709Limited,
        1 => ColorSpace::Bt709Full,
        2 => ColorSpace::Bt601Limited,
        _ => return Err(invalid("color space", format!("{v} (expected 0..=2)"))),
    })
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A bounds-checked cursor: every read says how many bytes it needed.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    kind: u8,
    channel: Channel,
}

impl<'a> Reader<'a> {
    fn open(buf: &'a [u8], channel: Channel) -> Result<Self, WireError> {
        match buf {
            [] => Err(WireError::Empty),
            [v, ..] if *v != WIRE_VERSION => Err(WireError::Version { got: *v }),
            [_] => Err(WireError::Truncated { need: 2, got: 1 }),
            [_, kind, ..] => Ok(Self {
                buf,
                pos: 2,
                kind: *kind,
                channel,
            }),
        }
    }

    fn unknown(&self) -> WireError {
        WireError::UnknownKind {
            kind: self.kind,
            channel: self.channel,
        }
    }

    fn need(&self, n: usize) -> Result<(), WireError> {
        if self.buf.len() - self.pos < n {
            return Err(WireError::Truncated {
                need: self.pos + n,
                got: self.buf.len(),
            });
        }
        Ok(())
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        self.need(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    fn i16(&mut self) -> Result<i16, WireError> {
        Ok(i16::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32, WireError> {
        Ok(i32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(invalid(field, format!("{v} (expected 0 or 1)"))),
        }
    }

    /// A u16 length, checked against `max` before reading, then that much UTF-8.
    fn text(&mut self, max: usize, field: &'static str) -> Result<String, WireError> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(invalid(field, format!("{len} bytes (max {max})")));
        }
        self.utf8(len, field)
    }

    fn utf8(&mut self, len: usize, field: &'static str) -> Result<String, WireError> {
        self.need(len)?;
        let bytes = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| invalid(field, e.to_string()))
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        self.need(n)?;
        let b = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    fn rest(&mut self) -> &'a [u8] {
        let r = &self.buf[self.pos..];
        self.pos = self.buf.len();
        r
    }

    fn finish(self) -> Result<(), WireError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            extra => Err(WireError::Trailing { extra }),
        }
    }
}

mod cursor;
mod nack;
mod video;

pub use cursor::CursorPosition;
pub use nack::{nack_ranges, NackRange, MAX_NACK_RANGES};
pub use video::{decode_video, is_resent, mark_resent, stamp_video, video_stamp, VideoChunk};

#[cfg(test)]
mod tests;
