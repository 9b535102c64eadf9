//! A WebSocket connection's outbox: the frames one step of the connection produced, waiting to be
//! written, and how they become messages.
//!
//! A client that asked for batched frames (`auth` with `batch: true`, see docs/protocol.md) gets
//! the text frames that are ready at a flush joined into one message, one per line, up to
//! [`BATCH_BYTES`]; JSON frames never contain a raw newline, so each line is one frame. Other
//! clients get one message per frame. Control messages (ping, close) are never joined.

use std::collections::VecDeque;

use axum::extract::ws::Message;

/// Largest message of batched frames: a larger frame goes on its own.
pub(super) const BATCH_BYTES: usize = 64 * 1024;

/// Frames waiting to be written.
///
/// Bounded by what one step of the connection produces (one client frame's answers, a snapshot's
/// replay, or one batch of queued events). [`Outbox::release`] frees it after every flush, so an
/// idle connection holds no outbox.
///
/// Whether the client reads batched frames is the connection's to say at each
/// [`Outbox::next_message`]: kept here, the flag would take 8 bytes of padding in every
/// connection.
#[derive(Debug, Default)]
pub struct Outbox {
    frames: VecDeque<Message>,
}

impl Outbox {
    /// Queues `msg` behind the others.
    pub fn push(&mut self, msg: Message) {
        self.frames.push_back(msg);
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The next message to write: the first frame or, when `batch`, the text frames at the head
    /// joined by newlines (up to [`BATCH_BYTES`]).
    pub fn next_message(&mut self, batch: bool) -> Option<Message> {
        let first = self.frames.pop_front()?;
        let Message::Text(first) = first else {
            return Some(first);
        };
        if !batch {
            return Some(Message::Text(first));
        }
        let mut len = first.len();
        let mut more = 0;
        for msg in &self.frames {
            match msg {
                Message::Text(t) if len + 1 + t.len() <= BATCH_BYTES => {
                    len += 1 + t.len();
                    more += 1;
                }
                _ => break,
            }
        }
        if more == 0 {
            return Some(Message::Text(first));
        }
        let mut joined = String::with_capacity(len);
        joined.push_str(first.as_str());
        for msg in self.frames.drain(..more) {
            if let Message::Text(t) = msg {
                joined.push('\n');
                joined.push_str(t.as_str());
            }
        }
        Some(Message::Text(joined.into()))
    }

    /// Drops what is left and gives the memory back (after a flush, or when the socket failed).
    pub fn release(&mut self) {
        self.frames = VecDeque::new();
    }

    /// Bytes the queue holds allocated, for tests of the idle footprint.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.frames.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Message {
        Message::Text(s.to_owned().into())
    }

    fn drain(outbox: &mut Outbox, batch: bool) -> Vec<Message> {
        std::iter::from_fn(|| outbox.next_message(batch)).collect()
    }

    #[test]
    fn one_message_per_frame_unless_batching() {
        let mut outbox = Outbox::default();
        for s in ["a", "b", "c"] {
            outbox.push(text(s));
        }
        assert_eq!(
            drain(&mut outbox, false),
            vec![text("a"), text("b"), text("c")]
        );
        assert!(outbox.is_empty());
    }

    #[test]
    fn batching_joins_text_frames_one_per_line() {
        let mut outbox = Outbox::default();
        outbox.push(text(r#"{"seq":1}"#));
        outbox.push(text(r#"{"seq":2}"#));
        outbox.push(text(r#"{"seq":3}"#));
        assert_eq!(
            drain(&mut outbox, true),
            vec![text("{\"seq\":1}\n{\"seq\":2}\n{\"seq\":3}")]
        );
        // A lone frame is sent as it is.
        outbox.push(text("x"));
        assert_eq!(drain(&mut outbox, true), vec![text("x")]);
    }

    #[test]
    fn control_messages_are_never_joined_and_keep_their_place() {
        let mut outbox = Outbox::default();
        outbox.push(text("a"));
        outbox.push(text("b"));
        outbox.push(Message::Ping(bytes::Bytes::new()));
        outbox.push(text("c"));
        outbox.push(text("d"));
        assert_eq!(
            drain(&mut outbox, true),
            vec![
                text("a\nb"),
                Message::Ping(bytes::Bytes::new()),
                text("c\nd")
            ]
        );
    }

    #[test]
    fn batches_stop_at_the_byte_limit() {
        let mut outbox = Outbox::default();
        let half = "x".repeat(BATCH_BYTES / 2);
        let big = "y".repeat(BATCH_BYTES + 1);
        outbox.push(text(&half));
        outbox.push(text(&half[1..]));
        // One more byte (the newline) would go over: on its own.
        outbox.push(text("z"));
        outbox.push(text(&big));
        outbox.push(text("w"));
        let messages = drain(&mut outbox, true);
        let lens: Vec<usize> = messages
            .iter()
            .map(|m| match m {
                Message::Text(t) => t.len(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(lens, vec![BATCH_BYTES, 1, BATCH_BYTES + 1, 1]);
    }

    #[test]
    fn release_frees_the_queue() {
        let mut outbox = Outbox::default();
        assert_eq!(outbox.capacity(), 0);
        for _ in 0..100 {
            outbox.push(text("e"));
        }
        outbox.next_message(false);
        outbox.release();
        assert!(outbox.is_empty());
        assert_eq!(outbox.capacity(), 0);
    }
}
