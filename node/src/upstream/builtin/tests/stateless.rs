//! Stateless-era behaviour (2026-07-28): discover, caching hints, MRTR, listen.

use super::*;
use shardgate_protocol::mcp::code;

#[tokio::test]
async fn discover_describes_the_server() {
    let b = builtin();
    let r = Client::stateless()
        .run(&b, "server/discover", json!({}))
        .await
        .expect("discover");
    assert_eq!(
        r["supportedVersions"],
        json!(shardgate_protocol::mcp::supported_versions())
    );
    assert_eq!(r["capabilities"]["tools"]["listChanged"], true);
    assert_eq!(r["capabilities"]["prompts"]["listChanged"], true);
    assert!(r["capabilities"]["logging"].is_object());
    assert_eq!(r["resultType"], "complete");
    assert_eq!(r["cacheScope"], "public");
    assert!(r["ttlMs"].is_u64());
    assert_eq!(
        r["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "shardgate-builtin"
    );
}

#[tokio::test]
async fn cacheable_results_carry_hints_and_others_do_not() {
    let b = builtin();
    let s = Client::stateless();
    for method in [
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
    ] {
        let r = s.run(&b, method, json!({})).await.expect(method);
        assert_eq!(r["cacheScope"], "public", "{method}");
        assert!(r["ttlMs"].is_u64(), "{method}");
        assert_eq!(r["resultType"], "complete", "{method}");
        assert!(r["_meta"]["io.modelcontextprotocol/serverInfo"].is_object());
    }
    let list = s.run(&b, "resources/list", json!({})).await.expect("list");
    let first = list["resources"][0]["uri"].clone();
    let r = s
        .run(&b, "resources/read", json!({"uri": first}))
        .await
        .expect("read");
    assert_eq!(r["cacheScope"], "private");
    let r = s
        .tool(&b, "test_simple_text", json!({}))
        .await
        .expect("call");
    assert_eq!(r["resultType"], "complete");
    assert!(r.get("ttlMs").is_none());
    let r = s
        .tool(&b, "test_input_required_result_elicitation", json!({}))
        .await
        .expect("irr");
    assert!(r.get("ttlMs").is_none());
}

#[tokio::test]
async fn unknown_resources_and_removed_methods() {
    let b = builtin();
    let s = Client::stateless();
    let uri = "test://nonexistent-resource-for-conformance-testing";
    let err = s
        .run(&b, "resources/read", json!({"uri": uri}))
        .await
        .expect_err("unknown resource");
    assert_eq!(
        (err.code, err.message.as_str()),
        (code::INVALID_PARAMS, "Resource not found")
    );
    assert_eq!(err.data, Some(json!({"uri": uri})));
    let r = s
        .run(
            &b,
            "resources/read",
            json!({"uri": "test://template/123/data"}),
        )
        .await
        .expect("template");
    assert!(
        r["contents"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("123"))
    );
    for method in [
        "ping",
        "logging/setLevel",
        "resources/subscribe",
        "unknown/method",
    ] {
        let err = s.run(&b, method, json!({})).await.expect_err(method);
        assert_eq!(err.code, code::METHOD_NOT_FOUND, "{method}");
    }
}

#[tokio::test]
async fn elicitation_round_trip() {
    let b = builtin();
    let s = Client::stateless();
    let name = "test_input_required_result_elicitation";
    let r1 = s.tool(&b, name, json!({})).await.expect("round 1");
    assert_eq!(r1["resultType"], "input_required");
    assert_eq!(
        r1["inputRequests"]["user_name"]["method"],
        "elicitation/create"
    );
    assert!(
        r1["inputRequests"]["user_name"]["params"]["requestedSchema"]["properties"].is_object()
    );
    assert!(
        s.peer.requests().is_empty(),
        "the stateless era never asks over the stream"
    );

    let answer = json!({"action": "accept", "content": {"name": "Alice"}});
    let extra = json!({"inputResponses": {
        "user_name": answer,
        "unknown_extra_key": {"action": "accept", "content": {"foo": "bar"}}
    }});
    let r2 = s.tool(&b, name, extra).await.expect("round 2");
    assert_eq!(r2["resultType"], "complete");
    assert_eq!(text_of(&r2), "Hello, Alice!");

    let wrong = json!({"inputResponses": {"wrong_key": answer}});
    let again = s.tool(&b, name, wrong).await.expect("re-request");
    assert_eq!(again["resultType"], "input_required");
}

#[tokio::test]
async fn malformed_input_responses_are_refused() {
    let b = builtin();
    let s = Client::stateless();
    let name = "test_input_required_result_elicitation";
    for bad in [
        json!({"inputResponses": {"user_name": 12345}}),
        json!({"inputResponses": null}),
        json!({"inputResponses": {"user_name": {"action": "maybe"}}}),
        json!({"requestState": 7}),
    ] {
        let err = s.tool(&b, name, bad.clone()).await.expect_err("malformed");
        assert_eq!(err.code, code::INVALID_PARAMS, "{bad}");
    }
}

#[tokio::test]
async fn multi_round_state_changes_and_is_sealed() {
    let b = builtin();
    let s = Client::stateless();
    let name = "test_input_required_result_multi_round";
    let r1 = s.tool(&b, name, json!({})).await.expect("round 1");
    let s1 = r1["requestState"].as_str().expect("state 1").to_owned();
    assert!(r1["inputRequests"]["step1"].is_object());
    let r2 = s
        .tool(
            &b,
            name,
            json!({
                "inputResponses": {"step1": {"action": "accept", "content": {"name": "Alice"}}},
                "requestState": s1
            }),
        )
        .await
        .expect("round 2");
    assert_eq!(r2["resultType"], "input_required");
    let s2 = r2["requestState"].as_str().expect("state 2").to_owned();
    assert_ne!(s1, s2);
    assert!(r2["inputRequests"]["step2"].is_object());
    let r3 = s
        .tool(
            &b,
            name,
            json!({
                "inputResponses": {"step2": {"action": "accept", "content": {"color": "blue"}}},
                "requestState": s2
            }),
        )
        .await
        .expect("round 3");
    assert_eq!(r3["resultType"], "complete");
    assert_eq!(
        text_of(&r3),
        "Multi-round complete for Alice who likes blue"
    );

    // Another node with the same secret accepts the state; one with another secret does not.
    let r = Client::stateless()
        .tool(&builtin(), name, json!({"requestState": s2.clone()}))
        .await
        .expect("same secret");
    assert_eq!(r["inputRequests"]["step2"]["method"], "elicitation/create");
    let err = Client::stateless()
        .tool(
            &Builtin::new([8; 32]),
            name,
            json!({"requestState": s2.clone()}),
        )
        .await
        .expect_err("other secret");
    assert_eq!(err.message, "requestState integrity check failed");
    // A state is only good for the tool it was handed out by.
    let err = s
        .tool(
            &b,
            "test_input_required_result_tampered_state",
            json!({"requestState": s2}),
        )
        .await
        .expect_err("other tool");
    assert_eq!(err.code, code::INVALID_PARAMS);
}

#[tokio::test]
async fn tampered_state_is_an_error() {
    let b = builtin();
    let s = Client::stateless();
    let name = "test_input_required_result_tampered_state";
    let r1 = s.tool(&b, name, json!({})).await.expect("round 1");
    let state = r1["requestState"].as_str().expect("a state").to_owned();
    let confirm = json!({"confirm": {"action": "accept", "content": {"ok": true}}});
    let err = s
        .tool(
            &b,
            name,
            json!({"inputResponses": confirm, "requestState": format!("{state}-TAMPERED")}),
        )
        .await
        .expect_err("tampered");
    assert_eq!(
        (err.code, err.message.as_str()),
        (code::INVALID_PARAMS, "requestState integrity check failed")
    );
    let ok = s
        .tool(
            &b,
            name,
            json!({"inputResponses": confirm, "requestState": state}),
        )
        .await
        .expect("untampered");
    assert_eq!(text_of(&ok), "integrity-ok: state verified");
}

#[tokio::test]
async fn only_declared_capabilities_are_asked_for() {
    let b = builtin();
    let sampling_only = Client {
        caps: json!({"sampling": {}}),
        ..Client::stateless()
    };
    let r = sampling_only
        .tool(&b, "test_input_required_result_capabilities", json!({}))
        .await
        .expect("capabilities tool");
    assert_eq!(r["resultType"], "input_required");
    let methods: Vec<_> = r["inputRequests"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, req)| req["method"].clone())
        .collect();
    assert_eq!(methods, [json!("sampling/createMessage")]);

    let err = sampling_only
        .tool(&b, "test_input_required_result_elicitation", json!({}))
        .await
        .expect_err("needs elicitation");
    assert_eq!(err.code, code::MISSING_CAPABILITY);
    assert_eq!(
        err.data,
        Some(json!({"requiredCapabilities": {"elicitation": {}}}))
    );

    let none = Client {
        caps: json!({}),
        ..Client::stateless()
    };
    let err = none
        .tool(&b, "test_missing_capability", json!({}))
        .await
        .expect_err("needs sampling");
    assert_eq!(err.code, code::MISSING_CAPABILITY);
    assert_eq!(
        err.data,
        Some(json!({"requiredCapabilities": {"sampling": {}}}))
    );
    let ok = sampling_only
        .tool(&b, "test_missing_capability", json!({}))
        .await
        .expect("declared");
    assert!(text_of(&ok).starts_with("Success"));
}

#[tokio::test]
async fn multiple_inputs_keep_partial_answers() {
    let b = builtin();
    let s = Client::stateless();
    let name = "test_input_required_result_multiple_inputs";
    let r1 = s.tool(&b, name, json!({})).await.expect("round 1");
    let keys: Vec<_> = r1["inputRequests"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(keys, ["client_roots", "greeting", "user_name"]);
    let r2 = s
        .tool(
            &b,
            name,
            json!({
                "inputResponses": {"user_name": {"action": "accept", "content": {"name": "Alice"}}},
                "requestState": r1["requestState"]
            }),
        )
        .await
        .expect("round 2");
    let keys: Vec<_> = r2["inputRequests"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(keys, ["client_roots", "greeting"]);
    let r3 = s
        .tool(&b, name, json!({
            "inputResponses": {
                "greeting": {"role": "assistant", "content": {"type": "text", "text": "Hello there!"}, "model": "test-model"},
                "client_roots": {"roots": [{"uri": "file:///test/root", "name": "Test Root"}]}
            },
            "requestState": r2["requestState"]
        }))
        .await
        .expect("round 3");
    assert_eq!(
        text_of(&r3),
        "Name: Alice; Greeting: Hello there!; Roots: 1"
    );
}

#[tokio::test]
async fn prompts_can_ask_too() {
    let b = builtin();
    let s = Client::stateless();
    let params = json!({"name": "test_input_required_result_prompt"});
    let r1 = s.run(&b, "prompts/get", params).await.expect("round 1");
    assert_eq!(
        r1["inputRequests"]["user_context"]["method"],
        "elicitation/create"
    );
    let retry = json!({
        "name": "test_input_required_result_prompt",
        "inputResponses": {"user_context": {"action": "accept", "content": {"context": "test context"}}}
    });
    let r2 = s.run(&b, "prompts/get", retry).await.expect("round 2");
    assert_eq!(r2["resultType"], "complete");
    assert_eq!(
        r2["messages"][0]["content"]["text"],
        "Prompt with context: test context"
    );
}

#[tokio::test]
async fn notifications_need_an_opt_in() {
    let b = builtin();
    let s = Client::stateless();
    let r = s
        .tool(&b, "test_streaming_elicitation", json!({}))
        .await
        .expect("streaming");
    assert_eq!(text_of(&r), "Streaming complete");
    s.tool(&b, "test_logging_tool", json!({}))
        .await
        .expect("logging");
    s.tool(&b, "test_tool_with_logging", json!({}))
        .await
        .expect("logging");
    assert!(s.peer.notes().is_empty());

    let meta = |m: Value| json!({ "_meta": m });
    s.tool(
        &b,
        "test_streaming_elicitation",
        meta(json!({"progressToken": "t"})),
    )
    .await
    .expect("streaming");
    assert_eq!(s.peer.notes_of("notifications/progress").len(), 1);
    let debug = meta(json!({"io.modelcontextprotocol/logLevel": "debug"}));
    s.tool(&b, "test_tool_with_logging", debug)
        .await
        .expect("logging");
    assert_eq!(s.peer.notes_of("notifications/message").len(), 3);
    let error = meta(json!({"io.modelcontextprotocol/logLevel": "error"}));
    s.tool(&b, "test_logging_tool", error)
        .await
        .expect("logging");
    assert_eq!(s.peer.notes_of("notifications/message").len(), 3);
}
