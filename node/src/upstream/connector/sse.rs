//! Reading an upstream's `text/event-stream` (the WHATWG event-stream format, the parts MCP
//! uses): `data` lines joined by newlines, `id`, `retry`; comments and other fields ignored.
//! Fed bytes as they arrive, it yields each event once its blank line has come.
//!
//! What it holds is bounded: an event's data, together with the line still arriving, may not
//! grow past the reader's limit. Past it the reader says [`TooLarge`] and keeps nothing more.

#[derive(Debug, Default, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub data: String,
}

/// The bytes of a line still arriving that are not its data: `data: ` and a carriage return.
/// An event within the limit is never refused for them, whatever chunks it comes in.
const FIELD_SLACK: usize = "data: \r".len();

/// An event (its data and the line still arriving) grew past the reader's limit, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLarge(pub usize);

pub struct Reader {
    buffer: Vec<u8>,
    /// How much of `buffer` is known to hold no line end.
    scanned: usize,
    data: Vec<String>,
    /// The length of `data` joined by newlines.
    data_len: usize,
    id: Option<String>,
    /// The last `retry` the stream asked for, in milliseconds.
    pub retry: Option<u64>,
    limit: usize,
    /// Past the limit: what comes next is not read.
    overflowed: bool,
}

impl Reader {
    /// A reader for events of at most `limit` bytes of data.
    pub fn with_limit(limit: usize) -> Self {
        Reader {
            buffer: Vec::new(),
            scanned: 0,
            data: Vec::new(),
            data_len: 0,
            id: None,
            retry: None,
            limit,
            overflowed: false,
        }
    }

    /// Takes the next bytes of the stream; returns the events they complete, in order, ending
    /// with `Err` once an event grows past the limit (then, and on every later call, nothing
    /// more is kept: the stream is to be dropped).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Result<Event, TooLarge>> {
        let mut events = Vec::new();
        if self.overflowed {
            events.push(Err(TooLarge(self.limit)));
            return events;
        }
        self.buffer.extend_from_slice(bytes);
        let buffer = std::mem::take(&mut self.buffer);
        let mut start = 0;
        let mut from = self.scanned;
        while let Some(at) = buffer[from..].iter().position(|b| *b == b'\n') {
            let end = from + at;
            let mut line = &buffer[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            start = end + 1;
            from = start;
            if let Err(e) = self.line(line, &mut events) {
                events.push(Err(e));
                return events;
            }
        }
        self.buffer = buffer;
        self.buffer.drain(..start);
        self.scanned = self.buffer.len();
        let held = self.data_len.saturating_add(self.buffer.len());
        if held > self.limit.saturating_add(FIELD_SLACK) {
            events.push(Err(self.overflow()));
        }
        events
    }

    /// Takes one whole line (without its line end).
    fn line(
        &mut self,
        line: &[u8],
        events: &mut Vec<Result<Event, TooLarge>>,
    ) -> Result<(), TooLarge> {
        let line = String::from_utf8_lossy(line);
        if line.is_empty() {
            if !self.data.is_empty() || self.id.is_some() {
                self.data_len = 0;
                events.push(Ok(Event {
                    id: self.id.take(),
                    data: std::mem::take(&mut self.data).join("\n"),
                }));
            }
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => {
                let joined = usize::from(!self.data.is_empty());
                self.data_len = self.data_len.saturating_add(value.len() + joined);
                if self.data_len > self.limit {
                    return Err(self.overflow());
                }
                self.data.push(value.to_owned());
            }
            "id" => self.id = Some(value.to_owned()),
            "retry" => self.retry = value.parse().ok().or(self.retry),
            _ => {}
        }
        Ok(())
    }

    /// Lets go of everything held; from now on every call says the stream was too large.
    fn overflow(&mut self) -> TooLarge {
        self.overflowed = true;
        self.buffer = Vec::new();
        self.scanned = 0;
        self.data = Vec::new();
        self.data_len = 0;
        self.id = None;
        TooLarge(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(events: Vec<Result<Event, TooLarge>>) -> Vec<Event> {
        events
            .into_iter()
            .map(|e| e.expect("within the limit"))
            .collect()
    }

    #[test]
    fn events_split_across_chunks_and_lines() {
        let mut r = Reader::with_limit(1024);
        assert!(r.feed(b"id: s-1\nretry: 500\ndata: {\"a\"").is_empty());
        let events = r.feed(b":1}\r\n\r\n: keep-alive\n\ndata: x\ndata: y\n\n");
        assert_eq!(
            ok(events),
            vec![
                Event {
                    id: Some("s-1".into()),
                    data: "{\"a\":1}".into()
                },
                Event {
                    id: None,
                    data: "x\ny".into()
                }
            ]
        );
        assert_eq!(r.retry, Some(500));
    }

    #[test]
    fn a_priming_event_has_an_id_and_no_data() {
        let mut r = Reader::with_limit(1024);
        let events = ok(r.feed(b"id: p-0\ndata:\n\n"));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id.as_deref(), Some("p-0"));
        assert!(events[0].data.is_empty());
    }

    #[test]
    fn an_event_of_exactly_the_limit_passes_in_any_chunks() {
        for stream in [
            &b"data: 0123456789abcdef\r\n\r\n"[..],
            b"data: 0123456\ndata: 89abcdef\n\n",
        ] {
            let mut r = Reader::with_limit(16);
            let mut events = Vec::new();
            for byte in stream {
                events.extend(ok(r.feed(std::slice::from_ref(byte))));
            }
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].data.len(), 16);
            let mut whole = Reader::with_limit(16);
            assert_eq!(ok(whole.feed(stream)), events);
        }
    }

    #[test]
    fn data_past_the_limit_ends_the_stream_after_the_events_before_it() {
        let mut r = Reader::with_limit(16);
        let events = r.feed(b"data: small\n\ndata: 0123456789\ndata: 0123456789\n\n");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].as_ref().map(|e| e.data.as_str()), Ok("small"));
        assert_eq!(events[1], Err(TooLarge(16)));
        assert!(r.buffer.is_empty() && r.data.is_empty(), "nothing kept");
        assert_eq!(r.feed(b"data: x\n\n"), vec![Err(TooLarge(16))]);
    }

    #[test]
    fn a_line_that_never_ends_is_refused_near_the_limit() {
        let mut r = Reader::with_limit(64);
        assert!(r.feed(b"data: ").is_empty());
        let mut fed = 6;
        loop {
            let events = r.feed(&[b'x'; 8]);
            fed += 8;
            if let Some(last) = events.last() {
                assert_eq!(last, &Err(TooLarge(64)));
                break;
            }
            assert!(fed <= 64 + FIELD_SLACK, "still buffering at {fed} bytes");
        }
        assert!(r.buffer.is_empty(), "nothing kept");
    }
}
