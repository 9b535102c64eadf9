//! The relay's WebSocket frame reader (`transport::ws::codec::Reader`) on the bytes a client
//! sends: never panics, holds at most what one frame and one message need, and reads the same
//! messages and the same error whatever pieces the bytes arrive in.
//!
//! The input's first byte picks the size of the pieces (1 to 64 bytes); the rest is the stream.
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::Stream;
use runwire_relay::transport::ws::codec::{ReadError, Reader};
use tokio::io::{AsyncRead, ReadBuf};

/// Frames and messages over this many bytes are refused (small, so that the limit is reached).
const MAX: usize = 512;

/// Gives `bytes` at most `step` at a time.
struct Pieces<'a> {
    bytes: &'a [u8],
    step: usize,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.step.min(self.bytes.len()).min(buf.remaining());
        let (now, rest) = self.bytes.split_at(n);
        buf.put_slice(now);
        self.bytes = rest;
        Poll::Ready(Ok(()))
    }
}

/// What the reader gives for `bytes` read `step` at a time: each message's debug form, then the
/// error's, if one ended the stream.
fn read(bytes: &[u8], step: usize) -> Vec<String> {
    let mut reader = Reader::new(Pieces { bytes, step }, Bytes::new(), MAX);
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    loop {
        match Pin::new(&mut reader).poll_next(&mut cx) {
            Poll::Ready(None) => return out,
            Poll::Ready(Some(Ok(msg))) => {
                let text = format!("{msg:?}");
                // A message is at most MAX bytes of payload; the debug form adds a little.
                assert!(text.len() <= 4 * MAX + 64, "a message over the limit");
                out.push(text);
            }
            Poll::Ready(Some(Err(e))) => {
                let e = ReadError::of(&e).expect("the reader's own error");
                out.push(format!("error {e}"));
                return out;
            }
            Poll::Pending => panic!("pending with bytes to read"),
        }
    }
}

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    let Some((&step, bytes)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 64) + 1;
    let whole = read(bytes, bytes.len().max(1));
    let pieces = read(bytes, step);
    assert_eq!(whole, pieces, "read at once and {step} bytes at a time");
}
