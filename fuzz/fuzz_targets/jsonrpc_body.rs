//! A POST body as the gateway and the node parse it: JSON-RPC messages (one or a batch), the
//! era they belong to, the `initialize` among them. Nothing may panic, whatever the bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_protocol::mcp;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = mcp::Body::parse(data) else {
        return;
    };
    let first = body.messages.first().map(|(_, v)| v);
    for header in [
        None,
        Some("2025-11-25"),
        Some("2026-07-28"),
        Some("garbage"),
    ] {
        let _ = mcp::classify_era(header, first);
    }
    let _ = body.initialize();
});
