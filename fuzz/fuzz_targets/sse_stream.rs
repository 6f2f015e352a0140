//! Server-sent events as our clients read them, and `Last-Event-ID` as the node reads it. The
//! first byte says where to cut the rest in two: a stream read in two chunks must give the
//! same events as read whole. An event id that parses prints back to one that parses the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_protocol::sse::{EventId, Parser};

fn events(chunks: &[&[u8]]) -> Vec<shardgate_protocol::sse::Event> {
    let mut parser = Parser::default();
    let mut out = Vec::new();
    for chunk in chunks {
        parser.push(chunk);
        while let Some(event) = parser.next_event() {
            out.push(event);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(cut).min(rest.len());
    let (a, b) = rest.split_at(at);
    assert_eq!(events(&[rest]), events(&[a, b]));
    if let Ok(text) = std::str::from_utf8(rest)
        && let Some(id) = EventId::parse(text)
    {
        assert_eq!(EventId::parse(&id.to_string()), Some(id));
    }
});
