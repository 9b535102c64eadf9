//! The run id taken from an ingested message's channel name. Input: `pattern \n channel`.
//!
//! Invariants: never panics for a pattern the relay accepts at start-up; a run id found is a
//! piece of the channel such that the channel is `prefix + run + suffix` with the prefix matching
//! the pattern before its first `*` and the suffix the pattern after it.
use runwire_relay::broker::redis::ingest::{check_pattern, run_from_channel};

/// Redis' glob over bytes, `*` and `?` only: an independent reference.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut back: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                back = Some((p, t));
                p += 1;
                continue;
            }
            Some(b'?') => {
                p += 1;
                t += 1;
                continue;
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
                continue;
            }
            _ => {}
        }
        match back {
            Some((bp, bt)) => {
                p = bp + 1;
                t = bt + 1;
                back = Some((bp, bt + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((pattern, channel)) = text.split_once('\n') else {
        return;
    };
    if check_pattern(pattern).is_err() {
        return;
    }
    let Some(run) = run_from_channel(pattern, channel) else {
        return;
    };
    let start = run.as_ptr() as usize - channel.as_ptr() as usize;
    assert!(
        start + run.len() <= channel.len(),
        "the run id is not a piece of the channel"
    );
    let star = pattern.find('*').expect("checked patterns have a `*`");
    let (head, tail) = (&pattern[..star], &pattern[star + 1..]);
    assert!(
        glob(head.as_bytes(), &channel.as_bytes()[..start]),
        "{pattern:?} {channel:?}"
    );
    assert!(
        glob(tail.as_bytes(), &channel.as_bytes()[start + run.len()..]),
        "{pattern:?} {channel:?}"
    );
}
