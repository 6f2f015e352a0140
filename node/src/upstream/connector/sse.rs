//! Reading an upstream's `text/event-stream` (the WHATWG event-stream format, the parts MCP
//! uses): `data` lines joined by newlines, `id`, `retry`; comments and other fields ignored.
//! Fed bytes as they arrive, it yields each event once its blank line has come.

#[derive(Debug, Default, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub data: String,
}

#[derive(Default)]
pub struct Reader {
    buffer: Vec<u8>,
    data: Vec<String>,
    id: Option<String>,
    /// The last `retry` the stream asked for, in milliseconds.
    pub retry: Option<u64>,
}

impl Reader {
    /// Takes the next bytes of the stream; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if !self.data.is_empty() || self.id.is_some() {
                    events.push(Event {
                        id: self.id.take(),
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "data" => self.data.push(value.to_owned()),
                "id" => self.id = Some(value.to_owned()),
                "retry" => self.retry = value.parse().ok().or(self.retry),
                _ => {}
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_lines() {
        let mut r = Reader::default();
        assert!(r.feed(b"id: s-1\nretry: 500\ndata: {\"a\"").is_empty());
        let events = r.feed(b":1}\r\n\r\n: keep-alive\n\ndata: x\ndata: y\n\n");
        assert_eq!(
            events,
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
        let mut r = Reader::default();
        let events = r.feed(b"id: p-0\ndata:\n\n");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id.as_deref(), Some("p-0"));
        assert!(events[0].data.is_empty());
    }
}
