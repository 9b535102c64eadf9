//! An incremental parser for `text/event-stream`, fed with whatever chunks `fetch` hands over.
//!
//! Lines may end in `\n`, `\r\n` or `\r`, and chunks may split a line, a `\r\n` pair or a UTF-8
//! character anywhere: bytes are kept until a line is complete.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;

/// Longest line kept while waiting for its end; a stream that exceeds it is broken.
pub const MAX_LINE: usize = 4 * 1024 * 1024;

/// One item of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A message: its `event:` name (`message` when absent) and its `data:` lines joined by `\n`.
    Message {
        /// The event name.
        event: String,
        /// The data.
        data: String,
    },
    /// A comment line (`: hb`): nothing to deliver, but the stream is alive.
    Comment,
}

/// The parser state.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    skip_lf: bool,
    event: String,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// Feeds a chunk; returns the items it completed. `Err` when a line grows past [`MAX_LINE`].
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseItem>, String> {
        let mut out = Vec::new();
        for &b in chunk {
            if self.skip_lf {
                self.skip_lf = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.skip_lf = b == b'\r';
                    let line = core::mem::take(&mut self.line);
                    if let Some(item) = self.line_done(&line) {
                        out.push(item);
                    }
                }
                _ => {
                    if self.line.len() >= MAX_LINE {
                        return Err("event stream line too long".to_owned());
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(out)
    }

    fn line_done(&mut self, line: &[u8]) -> Option<SseItem> {
        if line.is_empty() {
            let event = core::mem::take(&mut self.event);
            let data = core::mem::take(&mut self.data);
            if !core::mem::take(&mut self.has_data) {
                return None;
            }
            let event = if event.is_empty() {
                "message".to_owned()
            } else {
                event
            };
            return Some(SseItem::Message { event, data });
        }
        if line[0] == b':' {
            return Some(SseItem::Comment);
        }
        // The relay writes UTF-8; a line that is not is dropped.
        let Ok(line) = core::str::from_utf8(line) else {
            return None;
        };
        let (field, value) = match line.split_once(':') {
            Some((field, v)) => (field, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {} // `id` and `retry`: resume points are tracked by seq, retries by the client
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    fn msg(event: &str, data: &str) -> SseItem {
        SseItem::Message {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn parses_messages_and_comments() {
        let mut p = SseParser::default();
        let items = p
            .feed(b"event: subscribed\ndata: {\"a\":1}\n\n: hb\n\nid: 3\nevent: log\ndata: x\ndata: y\n\ndata:z\n\n")
            .unwrap();
        assert_eq!(
            items,
            [
                msg("subscribed", "{\"a\":1}"),
                SseItem::Comment,
                msg("log", "x\ny"),
                msg("message", "z")
            ]
        );
    }

    #[test]
    fn survives_any_chunking() {
        let text = "event: log\r\ndata: caf\u{e9} \u{1F600}\r\n\r\nevent: e2\rdata: two\r\r: c\n\n";
        let want = vec![
            msg("log", "caf\u{e9} \u{1F600}"),
            msg("e2", "two"),
            SseItem::Comment,
        ];
        let bytes = text.as_bytes();
        for size in 1..bytes.len() {
            let mut p = SseParser::default();
            let mut got = Vec::new();
            for chunk in bytes.chunks(size) {
                got.extend(p.feed(chunk).unwrap());
            }
            assert_eq!(got, want, "chunk size {size}");
        }
    }

    #[test]
    fn a_message_without_data_is_dropped() {
        let mut p = SseParser::default();
        assert!(p.feed(b"event: x\n\nretry: 10\n\n").unwrap().is_empty());
    }

    #[test]
    fn bounds_the_line_buffer() {
        let mut p = SseParser::default();
        let chunk = vec![b'a'; 1024 * 1024];
        let mut result = Ok(Vec::new());
        for _ in 0..5 {
            result = p.feed(&chunk);
            if result.is_err() {
                break;
            }
        }
        assert!(result.is_err());
    }
}
