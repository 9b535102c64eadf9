//! WebSocket framing (RFC 6455, section 5) on the relay's own sockets: [`Reader`] reads the
//! client's frames into messages, [`Writer`] puts the relay's frames in the socket's write buffer
//! (`transport::listener`), and [`put_header`] frames them, for the hub's direct writes too.
//!
//! The point is what an idle connection holds: nothing here. A WebSocket library keeps a read
//! buffer and a write buffer per connection at the largest size they ever needed, wraps the
//! socket once more per direction, and shares its state between a reading and a writing half;
//! with thousands of idle watchers that was about a third of the relay's memory per connection
//! (docs/benchmarks.md). Here a frame's bytes are held only while the frame is incomplete, and
//! the writer is the socket itself.
//!
//! What the reader enforces, as a server must: every client frame is masked; no reserved bits
//! (no extension is negotiated) and no reserved opcodes; control frames are whole and at most 125
//! bytes; continuations only inside a fragmented message, and no new message inside one; frames
//! and messages up to the reader's limit, checked from the header before any payload is read;
//! text and close reasons in UTF-8; close codes that a peer may send. Each violation is an error
//! whose [`ReadError::close_code`] tells the connection how to close.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::Bytes;
use futures_util::{Sink, Stream};
use runwire_protocol::CloseCode;
use tokio::io::{AsyncRead, ReadBuf};

use crate::transport::listener::Socket;

const OP_CONTINUATION: u8 = 0x0;
/// A text frame's opcode.
pub const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

/// Largest payload of a control frame (ping, pong, close).
const MAX_CONTROL: usize = 125;
/// Most bytes read at a time, on the stack: the usual client frame (an `auth` is a few hundred
/// bytes) in one read.
const READ_CHUNK: usize = 4096;

/// Appends a final frame's header with `opcode` for a `len`-byte payload, unmasked, as a server's
/// frames are (RFC 6455, 5.2).
pub fn put_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    match len {
        0..=125 => out.push(len as u8),
        126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// Why the client's frames could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A frame, or a fragmented message's parts together, over the limit.
    #[error("message too long: over {0} bytes")]
    TooBig(usize),
    /// A text message or a close reason that is not UTF-8.
    #[error("text that is not valid UTF-8")]
    InvalidUtf8,
    /// A frame against the protocol's rules.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The connection ended inside a frame or a fragmented message.
    #[error("connection closed inside a frame")]
    Truncated,
    /// Reading the socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl ReadError {
    /// The code to close with, when the client caused the error; `None` when there is no one left
    /// to tell (the connection is gone).
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            Self::TooBig(_) => Some(CloseCode::MessageTooBig),
            Self::InvalidUtf8 => Some(CloseCode::InvalidUtf8),
            Self::Protocol(_) => Some(CloseCode::WebSocketProtocolError),
            Self::Truncated | Self::Io(_) => None,
        }
    }

    /// The [`ReadError`] inside an error that [`Reader`] gave.
    pub fn of(e: &axum::Error) -> Option<&Self> {
        std::error::Error::source(e).and_then(|e| e.downcast_ref())
    }
}

/// The client's frames, read from `io` as messages: data messages whole (fragments joined), and
/// control frames as they come. Pings are not answered here: the connection answers them, in
/// order with its other frames.
#[derive(Debug)]
pub struct Reader<R> {
    io: R,
    /// Bytes read and not yet handed over, and a fragmented message's parts: only while a frame
    /// or a message is incomplete, so an idle connection holds none.
    partial: Option<Box<Partial>>,
    /// Largest frame, and largest message, accepted.
    max: usize,
}

#[derive(Debug, Default)]
struct Partial {
    /// Read, not parsed yet.
    buf: Vec<u8>,
    /// A fragmented message's data so far.
    message: Vec<u8>,
    /// While a fragmented message is under way: whether it is text.
    message_text: Option<bool>,
}

/// A frame's header, once enough of it has been read.
#[derive(Debug)]
struct Head {
    fin: bool,
    opcode: u8,
    /// Where the payload starts.
    start: usize,
    len: usize,
    mask: [u8; 4],
}

impl<R> Reader<R> {
    /// Reads from `io`, starting with `read_ahead` (bytes already read from it, past the HTTP
    /// request), and refuses frames and messages over `max` bytes.
    pub fn new(io: R, read_ahead: Bytes, max: usize) -> Self {
        let partial = (!read_ahead.is_empty()).then(|| {
            Box::new(Partial {
                buf: read_ahead.to_vec(),
                ..Partial::default()
            })
        });
        Self { io, partial, max }
    }

    /// Whether bytes of an incomplete frame or message are held, for tests of the idle footprint.
    #[cfg(test)]
    fn holds_bytes(&self) -> bool {
        self.partial.is_some()
    }
}

impl<R: AsyncRead + Unpin> Reader<R> {
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, ReadError>>> {
        loop {
            if let Some(partial) = self.partial.as_deref_mut() {
                match partial.parse(self.max) {
                    Ok(None) => {}
                    Ok(Some(msg)) => {
                        if partial.is_empty() {
                            self.partial = None;
                        }
                        return Poll::Ready(Some(Ok(msg)));
                    }
                    Err(e) => {
                        self.partial = None;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
            // Read on the stack, at most what completes the frame under way (its header says
            // how much), and keep only what arrived: nothing is allocated while nothing arrives,
            // and a frame that trickles in costs a copy of each piece, not of the frame.
            let wanted = self
                .partial
                .as_deref()
                .map_or(READ_CHUNK, |p| p.wanted(self.max));
            let mut chunk = [0u8; READ_CHUNK];
            let mut buf = ReadBuf::new(&mut chunk[..wanted.min(READ_CHUNK)]);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Pending => return Poll::Pending,
            }
            let read = buf.filled();
            if read.is_empty() {
                // The end of the stream: clean between frames, not inside one.
                let truncated = self.partial.take().map(|_| Err(ReadError::Truncated));
                return Poll::Ready(truncated);
            }
            match self.partial.as_deref_mut() {
                None => {
                    self.partial = Some(Box::new(Partial {
                        buf: read.to_vec(),
                        ..Partial::default()
                    }));
                }
                Some(partial) => {
                    // The whole frame at once, rather than doubling towards it.
                    partial.buf.reserve(wanted);
                    partial.buf.extend_from_slice(read);
                }
            }
        }
    }
}

impl<R: AsyncRead + Unpin> Stream for Reader<R> {
    type Item = Result<Message, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .poll_message(cx)
            .map(|next| next.map(|msg| msg.map_err(axum::Error::new)))
    }
}

impl Partial {
    fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.message_text.is_none()
    }

    /// How many bytes to read next: the rest of the frame under way when its header is in, else
    /// a chunk that holds a small frame whole.
    fn wanted(&self, max: usize) -> usize {
        match head(&self.buf, max, self.message.len()) {
            Ok(Some(head)) => (head.start + head.len)
                .saturating_sub(self.buf.len())
                .max(1),
            _ => READ_CHUNK,
        }
    }

    /// The next whole message in `buf`, if there is one.
    fn parse(&mut self, max: usize) -> Result<Option<Message>, ReadError> {
        loop {
            let Some(head) = head(&self.buf, max, self.message.len())? else {
                return Ok(None);
            };
            let end = head.start + head.len;
            if self.buf.len() < end {
                return Ok(None);
            }
            let mut payload = self.buf[head.start..end].to_vec();
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= head.mask[i % 4];
            }
            if self.buf.len() == end {
                self.buf = Vec::new();
            } else {
                self.buf.drain(..end);
            }
            let text = match (head.opcode, self.message_text) {
                (OP_CLOSE, _) => return close(&payload).map(Some),
                (OP_PING, _) => return Ok(Some(Message::Ping(payload.into()))),
                (OP_PONG, _) => return Ok(Some(Message::Pong(payload.into()))),
                (OP_CONTINUATION, None) => {
                    return Err(ReadError::Protocol("a continuation outside a message"));
                }
                (OP_CONTINUATION, Some(text)) => {
                    self.message.extend_from_slice(&payload);
                    payload = std::mem::take(&mut self.message);
                    text
                }
                // (`head` refused every other opcode.)
                (_, Some(_)) => {
                    return Err(ReadError::Protocol("a new message inside a fragmented one"));
                }
                (opcode, None) => opcode == OP_TEXT,
            };
            if head.fin {
                self.message_text = None;
                return data(text, payload).map(Some);
            }
            self.message = payload;
            self.message_text = Some(text);
        }
    }
}

/// The header at the start of `buf`, checked, once it is all there. `message` is the length of
/// the fragmented message under way, which a continuation adds to.
fn head(buf: &[u8], max: usize, message: usize) -> Result<Option<Head>, ReadError> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(ReadError::Protocol("reserved bits set"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0f;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(ReadError::Protocol("reserved opcode"));
    }
    if b1 & 0x80 == 0 {
        return Err(ReadError::Protocol("unmasked client frame"));
    }
    let (len, extended) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 2),
            None => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (u64::from_be_bytes(b), 8),
            None => return Ok(None),
        },
        n => (u64::from(n), 0),
    };
    if opcode >= OP_CLOSE {
        if !fin {
            return Err(ReadError::Protocol("fragmented control frame"));
        }
        if len > MAX_CONTROL as u64 {
            return Err(ReadError::Protocol("control frame over 125 bytes"));
        }
    }
    let len = match usize::try_from(len) {
        Ok(len) if len <= max => len,
        _ => return Err(ReadError::TooBig(max)),
    };
    if opcode == OP_CONTINUATION && message + len > max {
        return Err(ReadError::TooBig(max));
    }
    let mask_at = 2 + extended;
    let Some(mask) = buf
        .get(mask_at..mask_at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
    else {
        return Ok(None);
    };
    Ok(Some(Head {
        fin,
        opcode,
        start: mask_at + 4,
        len,
        mask,
    }))
}

fn data(text: bool, payload: Vec<u8>) -> Result<Message, ReadError> {
    if !text {
        return Ok(Message::Binary(payload.into()));
    }
    let text = String::from_utf8(payload).map_err(|_| ReadError::InvalidUtf8)?;
    Ok(Message::Text(text.into()))
}

/// A close frame's payload: nothing, or a code a peer may send and a UTF-8 reason.
fn close(payload: &[u8]) -> Result<Message, ReadError> {
    let Some((code, reason)) = payload.split_first_chunk::<2>() else {
        return match payload.len() {
            0 => Ok(Message::Close(None)),
            _ => Err(ReadError::Protocol("a close frame with a one-byte code")),
        };
    };
    let code = u16::from_be_bytes(*code);
    // 1004–1006 and 1015 are reserved, below 1000 and 1016–2999 unassigned (RFC 6455, 7.4).
    if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
        return Err(ReadError::Protocol("a close code a peer may not send"));
    }
    let reason = std::str::from_utf8(reason).map_err(|_| ReadError::InvalidUtf8)?;
    Ok(Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    })))
}

/// The relay's frames, written to the connection's socket: each goes whole into the socket's
/// write buffer, which a flush sends (and frees), so a burst of frames costs one `send()`. The
/// hub's direct writes go to the same socket only while nothing is buffered, so frames never
/// interleave.
#[derive(Debug)]
pub struct Writer {
    socket: Arc<Socket>,
}

impl Writer {
    /// Writes to `socket`.
    pub fn new(socket: Arc<Socket>) -> Self {
        Self { socket }
    }

    /// The socket written to.
    pub fn socket(&self) -> &Arc<Socket> {
        &self.socket
    }
}

impl Sink<Message> for Writer {
    type Error = axum::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.socket.poll_room(cx).map_err(axum::Error::new)
    }

    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<(), Self::Error> {
        let close;
        let (opcode, payload): (u8, &[u8]) = match &msg {
            Message::Text(text) => (OP_TEXT, text.as_bytes()),
            Message::Binary(bytes) => (OP_BINARY, bytes),
            Message::Ping(bytes) => (OP_PING, bytes),
            Message::Pong(bytes) => (OP_PONG, bytes),
            Message::Close(None) => (OP_CLOSE, &[]),
            Message::Close(Some(frame)) => {
                close = [&frame.code.to_be_bytes()[..], frame.reason.as_bytes()].concat();
                (OP_CLOSE, &close)
            }
        };
        if opcode >= OP_CLOSE && payload.len() > MAX_CONTROL {
            return Err(axum::Error::new(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a control frame over 125 bytes",
            )));
        }
        self.socket.push_frame(opcode, payload);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.socket.poll_flush(cx).map_err(axum::Error::new)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};

    /// A client's frame: `opcode` with `payload`, masked (or not), final (or not).
    fn frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let mut out = Vec::new();
        put_header(&mut out, opcode, payload.len());
        if !fin {
            out[0] &= 0x7f;
        }
        if !masked {
            out.extend_from_slice(payload);
            return out;
        }
        out[1] |= 0x80;
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        frame(true, opcode, payload, true)
    }

    /// Gives at most `step` bytes per read, and `Pending` before every other read.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
        pending: bool,
    }

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.pending = !self.pending;
            if self.pending {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = self.step.min(self.bytes.len()).min(buf.remaining());
            let (now, rest) = self.bytes.split_at(n);
            buf.put_slice(now);
            self.bytes = rest;
            Poll::Ready(Ok(()))
        }
    }

    /// Everything `bytes` reads as, `step` bytes at a time (all of it at once for 0), up to the
    /// first error; and whether the reader held no bytes after each message.
    async fn read_all(bytes: &[u8], step: usize, max: usize) -> (Vec<Message>, Option<ReadError>) {
        let step = if step == 0 { bytes.len().max(1) } else { step };
        let io = Trickle {
            bytes,
            step,
            pending: false,
        };
        let mut reader = Reader::new(io, Bytes::new(), max);
        let mut got = Vec::new();
        while let Some(next) = reader.next().await {
            match next {
                Ok(msg) => got.push(msg),
                Err(e) => {
                    assert!(!reader.holds_bytes(), "nothing held after an error");
                    let e = e.into_inner().downcast::<ReadError>().expect("a ReadError");
                    return (got, Some(*e));
                }
            }
        }
        assert!(!reader.holds_bytes(), "nothing held at the end");
        (got, None)
    }

    fn text(s: &str) -> Message {
        Message::Text(s.into())
    }

    #[tokio::test]
    async fn reads_every_kind_of_frame_however_the_bytes_arrive() {
        let long = "x".repeat(300);
        let longer = "y".repeat(70_000);
        let mut bytes = Vec::new();
        for f in [
            masked(OP_TEXT, br#"{"type":"auth"}"#),
            masked(OP_TEXT, b""),
            masked(OP_TEXT, long.as_bytes()),
            masked(OP_TEXT, longer.as_bytes()),
            masked(OP_BINARY, &[0, 1, 2]),
            masked(OP_PING, b"p"),
            masked(OP_PONG, b""),
            masked(OP_TEXT, "héllo ✓".as_bytes()),
            masked(OP_CLOSE, &[0x03, 0xe8, b'o', b'k']),
            masked(OP_CLOSE, b""),
        ] {
            bytes.extend(f);
        }
        let want = vec![
            text(r#"{"type":"auth"}"#),
            text(""),
            text(&long),
            text(&longer),
            Message::Binary(vec![0, 1, 2].into()),
            Message::Ping(b"p".to_vec().into()),
            Message::Pong(Bytes::new()),
            text("héllo ✓"),
            Message::Close(Some(CloseFrame {
                code: 1000,
                reason: "ok".into(),
            })),
            Message::Close(None),
        ];
        for step in [0, 1, 2, 3, 7, 100, 4096] {
            let (got, err) = read_all(&bytes, step, 100_000).await;
            assert!(err.is_none(), "step {step}: {err:?}");
            assert_eq!(got, want, "step {step}");
        }
    }

    #[tokio::test]
    async fn joins_fragments_with_control_frames_between_them() {
        let mut bytes = Vec::new();
        // "héllo" split inside the two-byte é.
        let word = "héllo".as_bytes();
        bytes.extend(frame(false, OP_TEXT, &word[..2], true));
        bytes.extend(masked(OP_PING, b"1"));
        bytes.extend(frame(false, OP_CONTINUATION, &word[2..4], true));
        bytes.extend(frame(true, OP_CONTINUATION, &word[4..], true));
        bytes.extend(frame(false, OP_BINARY, &[1], true));
        bytes.extend(frame(true, OP_CONTINUATION, &[2], true));
        for step in [0, 1, 5] {
            let (got, err) = read_all(&bytes, step, 1024).await;
            assert!(err.is_none(), "{err:?}");
            assert_eq!(
                got,
                vec![
                    Message::Ping(b"1".to_vec().into()),
                    text("héllo"),
                    Message::Binary(vec![1, 2].into()),
                ]
            );
        }
    }

    #[tokio::test]
    async fn refuses_what_the_protocol_forbids() {
        let unmasked = frame(true, OP_TEXT, b"hi", false);
        let mut rsv = masked(OP_TEXT, b"hi");
        rsv[0] |= 0x40;
        let reserved_opcode = masked(0x3, b"");
        let long_ping = masked(OP_PING, &[0; 126]);
        let fragmented_ping = frame(false, OP_PING, b"", true);
        let stray_continuation = masked(OP_CONTINUATION, b"x");
        let mut new_message_inside = frame(false, OP_TEXT, b"a", true);
        new_message_inside.extend(masked(OP_TEXT, b"b"));
        let one_byte_close = masked(OP_CLOSE, &[3]);
        let reserved_close = masked(OP_CLOSE, &1005u16.to_be_bytes());
        let unassigned_close = masked(OP_CLOSE, &2000u16.to_be_bytes());
        for bytes in [
            unmasked,
            rsv,
            reserved_opcode,
            long_ping,
            fragmented_ping,
            stray_continuation,
            new_message_inside,
            one_byte_close,
            reserved_close,
            unassigned_close,
        ] {
            let (got, err) = read_all(&bytes, 0, 1024).await;
            assert!(got.is_empty());
            let err = err.expect("refused");
            assert!(matches!(err, ReadError::Protocol(_)), "{err:?}");
            assert_eq!(err.close_code(), Some(CloseCode::WebSocketProtocolError));
        }
    }

    #[tokio::test]
    async fn refuses_text_that_is_not_utf8() {
        let mut split = frame(false, OP_TEXT, &[0xc3], true);
        split.extend(masked(OP_CONTINUATION, b"x"));
        let mut reason = 1000u16.to_be_bytes().to_vec();
        reason.push(0xff);
        for bytes in [
            masked(OP_TEXT, &[b'a', 0xff]),
            split,
            masked(OP_CLOSE, &reason),
        ] {
            let (_, err) = read_all(&bytes, 1, 1024).await;
            let err = err.expect("refused");
            assert!(matches!(err, ReadError::InvalidUtf8), "{err:?}");
            assert_eq!(err.close_code(), Some(CloseCode::InvalidUtf8));
        }
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused_from_its_header() {
        // Only the header: the payload is never waited for.
        let header = |len: usize| masked(OP_TEXT, &vec![0; len])[..10].to_vec();
        for bytes in [header(1025), header(70_000)] {
            let (_, err) = read_all(&bytes, 0, 1024).await;
            assert!(matches!(err, Some(ReadError::TooBig(1024))), "{err:?}");
        }
        // A 64-bit length no machine holds.
        let mut huge = vec![0x81, 0xff];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        let (_, err) = read_all(&huge, 0, 1024).await;
        assert!(matches!(err, Some(ReadError::TooBig(1024))), "{err:?}");
        // Fragments that add up to more than the limit.
        let mut parts = frame(false, OP_TEXT, &[b'a'; 600], true);
        parts.extend(masked(OP_CONTINUATION, &[b'b'; 600])[..8].iter());
        let (_, err) = read_all(&parts, 0, 1024).await;
        let err = err.expect("refused");
        assert!(matches!(err, ReadError::TooBig(1024)), "{err:?}");
        assert_eq!(err.close_code(), Some(CloseCode::MessageTooBig));
        // Exactly the limit is fine.
        let (got, err) = read_all(&masked(OP_TEXT, &[b'z'; 1024]), 0, 1024).await;
        assert!(err.is_none());
        assert_eq!(got.len(), 1);
    }

    #[tokio::test]
    async fn an_end_inside_a_frame_is_an_error_and_between_frames_is_not() {
        let whole = masked(OP_TEXT, b"hello");
        for cut in 1..whole.len() {
            let (got, err) = read_all(&whole[..cut], 0, 1024).await;
            assert!(got.is_empty());
            let err = err.expect("truncated");
            assert!(matches!(err, ReadError::Truncated), "{err:?}");
            assert_eq!(err.close_code(), None);
        }
        let (_, err) = read_all(&frame(false, OP_TEXT, b"a", true), 0, 1024).await;
        assert!(matches!(err, Some(ReadError::Truncated)), "{err:?}");
        let (got, err) = read_all(&whole, 0, 1024).await;
        assert_eq!((got, err.is_none()), (vec![text("hello")], true));
    }

    #[tokio::test]
    async fn bytes_read_with_the_request_come_first() {
        let first = masked(OP_TEXT, b"first");
        let (ahead, rest) = first.split_at(3);
        let mut later = rest.to_vec();
        later.extend(masked(OP_TEXT, b"second"));
        let mut reader = Reader::new(&later[..], Bytes::copy_from_slice(ahead), 1024);
        assert_eq!(reader.next().await.unwrap().unwrap(), text("first"));
        assert_eq!(reader.next().await.unwrap().unwrap(), text("second"));
        assert!(reader.next().await.is_none());
    }

    /// A client library (tungstenite) reads what the writer writes, and writes what the reader
    /// reads, over a real socket.
    #[tokio::test]
    async fn a_client_library_understands_both_directions() {
        use tokio_tungstenite::WebSocketStream;
        use tokio_tungstenite::tungstenite::Message as T;
        use tokio_tungstenite::tungstenite::protocol::Role;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let read_half = stream.into_std().unwrap();
        let write_half = read_half.try_clone().unwrap();
        let socket = Arc::new(Socket::new(
            tokio::net::TcpStream::from_std(write_half).unwrap(),
        ));
        let mut writer = Writer::new(socket.clone());
        let mut reader = Reader::new(
            tokio::net::TcpStream::from_std(read_half).unwrap(),
            Bytes::new(),
            100_000,
        );
        let mut client = WebSocketStream::from_raw_socket(peer, Role::Client, None).await;

        let long = "z".repeat(70_000);
        writer.feed(text("one")).await.unwrap();
        writer.feed(text(&long)).await.unwrap();
        writer.feed(Message::Ping(Bytes::new())).await.unwrap();
        writer.flush().await.unwrap();
        assert_eq!(socket.pending_len(), 0);
        assert_eq!(client.next().await.unwrap().unwrap(), T::text("one"));
        assert_eq!(client.next().await.unwrap().unwrap(), T::text(long.clone()));
        assert!(matches!(client.next().await.unwrap().unwrap(), T::Ping(_)));

        client.send(T::text("from the client")).await.unwrap();
        client.send(T::text(long.clone())).await.unwrap();
        let mut texts = Vec::new();
        let mut pongs = 0;
        while texts.len() < 2 || pongs < 1 {
            match reader.next().await.unwrap().unwrap() {
                Message::Text(t) => texts.push(t.to_string()),
                // The ping's answer, which the client library sends with its next write.
                Message::Pong(_) => pongs += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(pongs, 1);
        assert!(
            texts[0] == "from the client" && texts[1] == long,
            "texts in order"
        );
        assert!(!reader.holds_bytes());

        writer
            .send(Message::Close(Some(CloseFrame {
                code: 4001,
                reason: "token_expired".into(),
            })))
            .await
            .unwrap();
        match client.next().await.unwrap().unwrap() {
            T::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 4001);
                assert_eq!(frame.reason.as_str(), "token_expired");
            }
            other => panic!("{other:?}"),
        }
    }
}
