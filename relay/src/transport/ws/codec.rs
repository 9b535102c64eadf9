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
/// Bytes read at a time while no frame is under way: room for the usual client frame (an `auth`
/// is a few hundred bytes) in one read, on the stack.
const FIRST_READ: usize = 1024;

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
            let read = match self.partial.as_deref_mut() {
                // Nothing under way: read on the stack, and keep only what arrived.
                None => {
                    let mut chunk = [0u8; FIRST_READ];
                    let mut buf = ReadBuf::new(&mut chunk);
                    match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                        Poll::Ready(Ok(())) if buf.filled().is_empty() => 0,
                        Poll::Ready(Ok(())) => {
                            self.partial = Some(Box::new(Partial {
                                buf: buf.filled().to_vec(),
                                ..Partial::default()
                            }));
                            continue;
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                // Inside a frame: read what completes it (its header says how much), straight
                // into the buffer.
                Some(partial) => {
                    let have = partial.buf.len();
                    partial.buf.resize(have + partial.wanted(self.max), 0);
                    let mut buf = ReadBuf::new(&mut partial.buf[have..]);
                    let polled = Pin::new(&mut self.io).poll_read(cx, &mut buf);
                    let n = buf.filled().len();
                    partial.buf.truncate(have + n);
                    match polled {
                        Poll::Ready(Ok(())) => n,
                        Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            };
            if read == 0 {
                // The end of the stream: clean between frames, not inside one.
                return Poll::Ready(match self.partial.take() {
                    None => None,
                    Some(_) => Some(Err(ReadError::Truncated)),
                });
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
            _ => FIRST_READ,
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
