use super::*;
use http::HeaderValue;
use serde_json::json;

fn request(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
}

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}
    })
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).expect("header"));
    }
    h
}

fn code_of(r: Result<Checked, Refusal>) -> (u16, i64) {
    let r = r.expect_err("refused");
    (r.status.as_u16(), r.error.code)
}

const GOOD: [(&str, &str); 3] = [
    ("mcp-protocol-version", "2026-07-28"),
    ("mcp-method", "tools/call"),
    ("mcp-name", "echo"),
];

#[test]
fn accepts_a_well_formed_call() {
    let msg = request("tools/call", json!({"name": "echo", "_meta": meta()}));
    let ok = check(&headers(&GOOD), &msg).expect("valid");
    assert_eq!(ok.method, "tools/call");
    assert_eq!(ok.version, "2026-07-28");
}

#[test]
fn missing_meta_fields_are_invalid_params() {
    let msg = request("tools/list", json!({}));
    assert_eq!(code_of(check(&headers(&GOOD), &msg)), (400, -32602));
    let msg = request(
        "tools/list",
        json!({"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}),
    );
    assert_eq!(code_of(check(&headers(&GOOD), &msg)), (400, -32602));
}

#[test]
fn header_mismatches_come_before_unsupported_versions() {
    let mut m = meta();
    m["io.modelcontextprotocol/protocolVersion"] = json!("v999.0.0");
    let msg = request("tools/call", json!({"name": "echo", "_meta": m}));
    assert_eq!(code_of(check(&headers(&GOOD), &msg)), (400, -32020));
    let h = headers(&[
        ("mcp-protocol-version", "v999.0.0"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "echo"),
    ]);
    let refused = check(&h, &msg).expect_err("unsupported");
    assert_eq!(refused.error.code, -32022);
    let data = refused.error.data.expect("data");
    assert_eq!(data["requested"], "v999.0.0");
    assert!(
        data["supported"]
            .as_array()
            .expect("list")
            .contains(&json!("2026-07-28"))
    );
}

#[test]
fn method_and_name_headers_must_match_the_body() {
    let msg = request("tools/call", json!({"name": "echo", "_meta": meta()}));
    let wrong_method = headers(&[
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "TOOLS/CALL"),
        ("mcp-name", "echo"),
    ]);
    assert_eq!(code_of(check(&wrong_method, &msg)), (400, -32020));
    let no_name = headers(&GOOD[..2]);
    assert_eq!(code_of(check(&no_name, &msg)), (400, -32020));
    let padded = headers(&[
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", " echo "),
    ]);
    assert!(check(&padded, &msg).is_ok());
}

#[test]
fn base64_names_are_decoded_strictly() {
    assert_eq!(
        decode_header_value("=?base64?SGVsbG8=?="),
        Some("Hello".into())
    );
    assert!(decode_header_value("=?base64?SGVsbG8?=").is_none());
    assert!(decode_header_value("=?base64?SGVs!!!bG8=?=").is_none());
    assert_eq!(decode_header_value("SGVsbG8="), Some("SGVsbG8=".into()));
    assert_eq!(
        decode_header_value("=?BASE64?SGVsbG8=?="),
        Some("=?BASE64?SGVsbG8=?=".into())
    );
}

#[test]
fn unknown_methods_pass_for_the_upstream_to_judge() {
    let msg = request("tasks/get", json!({"_meta": meta()}));
    let h = headers(&[
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tasks/get"),
    ]);
    assert!(check(&h, &msg).is_ok());
}

#[test]
fn removed_methods_are_not_found() {
    for method in [
        "initialize",
        "ping",
        "logging/setLevel",
        "resources/subscribe",
    ] {
        let msg = request(method, json!({"_meta": meta()}));
        let h = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", method),
        ]);
        assert_eq!(code_of(check(&h, &msg)), (404, -32601), "{method}");
    }
}

#[test]
fn refusals_quote_only_a_short_excerpt_of_the_headers() {
    let long = "x".repeat(8192);
    let msg = request("tools/call", json!({"name": "echo", "_meta": meta()}));
    let r = check(
        &headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", &long),
            ("mcp-name", "echo"),
        ]),
        &msg,
    )
    .expect_err("refused");
    assert_eq!(r.error.code, code::HEADER_MISMATCH);
    assert!(r.error.message.len() < 256, "{}", r.error.message);
}
