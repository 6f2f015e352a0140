//! Server-sent events as an MCP client reads them (the load generator, the chaos harness, the
//! end-to-end tests): bytes in, events out, each with its `id` and `data`; comments (the
//! keep-alives) and other fields are skipped.

use bytes::{Buf, BytesMut};
use serde_json::Value;
use std::fmt;

/// An event's id as the node mints it, `<stream>-<seq>`, and as `Last-Event-ID` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventId {
    pub stream: u64,
    pub seq: u64,
}

impl EventId {
    /// Two decimal numbers joined by `-`, nothing else (no sign, no spaces inside); the
    /// whitespace around is dropped, as a header's is.
    pub fn parse(s: &str) -> Option<EventId> {
        let (stream, seq) = s.trim().split_once('-')?;
        let number = |n: &str| {
            (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .then(|| n.parse().ok())
                .flatten()
        };
        Some(EventId {
            stream: number(stream)?,
            seq: number(seq)?,
        })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.stream, self.seq)
    }
}

/// One event: its id, if it had one, and its data lines joined by newlines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.data).ok()
    }

    /// Where the event stands: its id `<stream>-<seq>`.
    pub fn position(&self) -> Option<EventId> {
        EventId::parse(self.id.as_deref()?)
    }
}

/// Splits a byte stream into events.
#[derive(Default)]
pub struct Parser {
    buf: BytesMut,
    /// How much of `buf` has been searched for the end of an event already.
    scanned: usize,
}

impl Parser {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, if one has arrived.
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            // Only what arrived since the last look is searched, with room for a separator
            // split between two chunks.
            let from = self.scanned.saturating_sub(3);
            let Some((at, len)) = end_of_event(&self.buf[from..]) else {
                self.scanned = self.buf.len();
                return None;
            };
            let raw = self.buf.split_to(from + at);
            self.buf.advance(len);
            self.scanned = 0;
            if let Some(event) = parse(&raw) {
                return Some(event);
            }
        }
    }
}

/// The end of the first complete event in `buf`: (where it ends, the separator's length).
fn end_of_event(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// An event's fields; `None` for a block of comments only.
fn parse(raw: &[u8]) -> Option<Event> {
    let text = String::from_utf8_lossy(raw);
    let (mut id, mut data, mut any) = (None, Vec::new(), false);
    for line in text.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => {
                id = Some(value.to_owned());
                any = true;
            }
            "data" => {
                data.push(value);
                any = true;
            }
            _ => {}
        }
    }
    any.then(|| Event {
        id,
        data: data.join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_two_numbers_and_print_as_they_parse() {
        let id = EventId::parse(" 3-17 ").expect("an id");
        assert_eq!(id, EventId { stream: 3, seq: 17 });
        assert_eq!(id.to_string(), "3-17");
        for bad in [
            "",
            "-",
            "3-",
            "-17",
            "3_17",
            "+3-17",
            "3-+17",
            "3 -17",
            "3-1-7",
            "a-1",
            "99999999999999999999-1",
        ] {
            assert_eq!(EventId::parse(bad), None, "{bad:?}");
        }
    }

    fn events(chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            p.push(chunk);
            while let Some(e) = p.next_event() {
                out.push(e);
            }
        }
        out
    }

    #[test]
    fn priming_answer_and_keep_alives() {
        let got = events(&[b"id: 3-0\nretry: 1000\ndata: \n\n:\n\nid: 3-1\ndata: {\"id\":1}\n\n"]);
        assert_eq!(
            got,
            vec![
                Event {
                    id: Some("3-0".into()),
                    data: String::new()
                },
                Event {
                    id: Some("3-1".into()),
                    data: "{\"id\":1}".into()
                },
            ]
        );
    }

    #[test]
    fn events_split_anywhere_between_chunks() {
        let whole = b"id: 7-1\r\ndata: a\r\ndata: b\r\n\r\ndata: c\n\n";
        for cut in 0..whole.len() {
            let (a, b) = whole.split_at(cut);
            let got = events(&[a, b]);
            assert_eq!(got.len(), 2, "cut at {cut}: {got:?}");
            assert_eq!(got[0].data, "a\nb");
            assert_eq!(got[0].id.as_deref(), Some("7-1"));
            assert_eq!(got[1].data, "c");
            assert_eq!(got[1].id, None);
        }
    }

    #[test]
    fn an_unfinished_event_waits_for_its_end() {
        let mut p = Parser::default();
        p.push(b"data: half");
        assert_eq!(p.next_event(), None);
        p.push(b"\n\n");
        assert_eq!(p.next_event().map(|e| e.data), Some("half".into()));
    }
}
