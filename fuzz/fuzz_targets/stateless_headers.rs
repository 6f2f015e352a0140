//! A stateless-era request's headers checked against its body, as the gateway and the node both
//! do: the first line is the body, each further line a `name: value` header (those that are no
//! header are skipped). Header values go through the `=?base64?…?=` decoder too. Nothing may
//! panic, and a refusal is always a client error.

#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use shardgate_protocol::stateless_checks;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let Some(Ok(body)) = lines.next().map(serde_json::from_str::<serde_json::Value>) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let _ = stateless_checks::decode_header_value(value.trim());
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) {
            headers.append(name, value);
        }
    }
    if let Err(refusal) = stateless_checks::check(&headers, &body) {
        assert!(refusal.status.is_client_error(), "{:?}", refusal.status);
    }
});
