//! Session-era behaviour (2025-03-26 … 2025-11-25).

use super::*;
use shardgate_protocol::mcp::code;
use std::sync::atomic::Ordering;

#[tokio::test]
async fn initialize_negotiates_the_version() {
    let b = builtin();
    let s = Client::session();
    for (asked, got) in [
        ("2025-06-18", "2025-06-18"),
        ("2025-03-26", "2025-03-26"),
        ("2026-07-28", "2025-11-25"),
        ("1999-01-01", "2025-11-25"),
    ] {
        let r = s
            .run(
                &b,
                "initialize",
                json!({"protocolVersion": asked, "capabilities": {}}),
            )
            .await
            .expect("initialize");
        assert_eq!(r["protocolVersion"], got, "asked for {asked}");
        assert_eq!(r["serverInfo"]["name"], "shardgate-builtin");
        assert_eq!(r["capabilities"]["resources"]["subscribe"], true);
        assert!(r["capabilities"]["logging"].is_object());
        assert!(r.get("resultType").is_none());
    }
}

#[tokio::test]
async fn ping_set_level_and_subscriptions_answer_exactly_empty() {
    let b = builtin();
    let s = Client::session();
    assert_eq!(s.run(&b, "ping", Value::Null).await, Ok(json!({})));
    let r = s
        .run(&b, "logging/setLevel", json!({"level": "info"}))
        .await;
    assert_eq!(r, Ok(json!({})));
    assert_eq!(
        s.state.with(|m| m.get("logLevel").cloned()),
        Some(json!("info"))
    );
    let err = s
        .run(&b, "logging/setLevel", json!({"level": "loud"}))
        .await
        .expect_err("unknown level");
    assert_eq!(err.code, code::INVALID_PARAMS);

    let uri = json!({"uri": "test://watched-resource"});
    assert_eq!(
        s.run(&b, "resources/subscribe", uri.clone()).await,
        Ok(json!({}))
    );
    assert_eq!(
        s.state.with(|m| m.get("subscriptions").cloned()),
        Some(json!(["test://watched-resource"]))
    );
    assert_eq!(s.run(&b, "resources/unsubscribe", uri).await, Ok(json!({})));
    assert_eq!(
        s.state.with(|m| m.get("subscriptions").cloned()),
        Some(json!([]))
    );
}

#[tokio::test]
async fn the_counter_lives_in_the_session_state() {
    let b = builtin();
    let s = Client::session();
    for want in ["1", "2", "3"] {
        let r = s.tool(&b, "counter", json!({})).await.expect("counter");
        assert_eq!(text_of(&r), want);
    }
    assert_eq!(s.state.with(|m| m.get("counter").cloned()), Some(json!(3)));
    // Another builtin (another node) continues from the same state.
    let r = s
        .tool(&builtin(), "counter", json!({}))
        .await
        .expect("counter");
    assert_eq!(text_of(&r), "4");
    // Another session starts afresh.
    let other = Client::session();
    let r = other.tool(&b, "counter", json!({})).await.expect("counter");
    assert_eq!(text_of(&r), "1");
}

#[tokio::test]
async fn progress_comes_before_the_result_with_the_token_as_sent() {
    let b = builtin();
    for token in [json!("progress-test-1"), json!(1)] {
        let s = Client::session();
        let r = s
            .tool(
                &b,
                "test_tool_with_progress",
                json!({"_meta": {"progressToken": token}}),
            )
            .await
            .expect("progress tool");
        let notes = s.peer.notes_of("notifications/progress");
        let progress: Vec<_> = notes.iter().map(|n| n["progress"].clone()).collect();
        assert_eq!(progress, [json!(0), json!(50), json!(100)]);
        assert!(
            notes
                .iter()
                .all(|n| n["progressToken"] == token && n["total"] == 100)
        );
        let want = token
            .as_str()
            .map_or_else(|| token.to_string(), str::to_owned);
        assert_eq!(text_of(&r), want);
    }
    // No token, no progress.
    let s = Client::session();
    s.tool(&b, "test_tool_with_progress", json!({}))
        .await
        .expect("progress tool");
    assert!(s.peer.notes().is_empty());
}

#[tokio::test]
async fn sampling_asks_the_client_over_the_session() {
    let b = builtin();
    let answer = json!({
        "role": "assistant",
        "content": {"type": "text", "text": "This is a test response from the client"},
        "model": "test-model",
        "stopReason": "endTurn"
    });
    let s = Client {
        peer: Recorder::answering(&[("sampling/createMessage", answer)]),
        ..Client::session()
    };
    let args = json!({"arguments": {"prompt": "Test prompt for sampling"}});
    let r = s
        .tool(&b, "test_sampling", args)
        .await
        .expect("sampling tool");
    assert_eq!(
        s.peer.requests(),
        [(
            "sampling/createMessage".to_owned(),
            json!({
                "messages": [{"role": "user", "content": {"type": "text", "text": "Test prompt for sampling"}}],
                "maxTokens": 100
            })
        )]
    );
    assert_eq!(
        text_of(&r),
        "LLM response: This is a test response from the client"
    );
}

#[tokio::test]
async fn elicitation_forms_go_over_the_session() {
    let b = builtin();
    let accept = json!({"action": "accept", "content": {"name": "Jane Smith", "age": 25}});
    let s = Client {
        peer: Recorder::answering(&[("elicitation/create", accept)]),
        ..Client::session()
    };
    let r = s
        .tool(&b, "test_elicitation_sep1034_defaults", json!({}))
        .await
        .expect("sep1034 tool");
    let requests = s.peer.requests();
    let schema = &requests[0].1["requestedSchema"];
    assert_eq!(schema["properties"]["score"]["default"], 95.5);
    assert_eq!(schema["properties"]["status"]["default"], "active");
    assert!(text_of(&r).contains("action=accept"));
    assert!(text_of(&r).contains("Jane Smith"));
}

#[tokio::test]
async fn multi_round_tools_run_all_rounds_over_the_session() {
    let b = builtin();
    let answer = json!({"action": "accept", "content": {"name": "Alice", "color": "blue"}});
    let s = Client {
        peer: Recorder::answering(&[("elicitation/create", answer)]),
        ..Client::session()
    };
    let r = s
        .tool(&b, "test_input_required_result_multi_round", json!({}))
        .await
        .expect("multi-round tool");
    assert_eq!(s.peer.requests().len(), 2);
    assert_eq!(text_of(&r), "Multi-round complete for Alice who likes blue");
}

#[tokio::test]
async fn asking_without_the_capability_is_a_tool_error() {
    let b = builtin();
    let s = Client {
        caps: json!({"sampling": {}}),
        ..Client::session()
    };
    let r = s
        .tool(&b, "test_input_required_result_elicitation", json!({}))
        .await
        .expect("a result");
    assert_eq!(r["isError"], true);
    assert!(s.peer.requests().is_empty());
    let r = Client {
        caps: json!({}),
        ..Client::session()
    }
    .tool(&b, "test_missing_capability", json!({}))
    .await
    .expect("a result");
    assert_eq!(r["isError"], true);
}

#[tokio::test]
async fn logging_follows_the_session_level() {
    let b = builtin();
    let s = Client::session();
    s.tool(&b, "test_tool_with_logging", json!({}))
        .await
        .expect("logging tool");
    let messages = s.peer.notes_of("notifications/message");
    assert_eq!(messages.len(), 3);
    assert!(
        messages
            .iter()
            .all(|m| m["level"] == "info" && m["data"].is_string())
    );

    let quiet = Client::session();
    quiet
        .run(&b, "logging/setLevel", json!({"level": "warning"}))
        .await
        .expect("setLevel");
    quiet
        .tool(&b, "test_tool_with_logging", json!({}))
        .await
        .expect("logging tool");
    assert!(quiet.peer.notes().is_empty());
}

#[tokio::test]
async fn session_results_carry_no_stateless_extras() {
    let b = builtin();
    let s = Client::session();
    for method in [
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
    ] {
        let r = s.run(&b, method, json!({})).await.expect(method);
        for key in ["ttlMs", "cacheScope", "resultType", "_meta"] {
            assert!(r.get(key).is_none(), "{method} has {key}");
        }
    }
    let r = s
        .run(&b, "resources/read", json!({"uri": "test://static-text"}))
        .await
        .expect("read");
    assert!(r.get("ttlMs").is_none());
    assert_eq!(
        r["contents"][0]["text"],
        "This is the content of the static text resource."
    );
}

#[tokio::test]
async fn errors_use_the_session_era_codes() {
    let b = builtin();
    let s = Client::session();
    let uri = "test://nonexistent-resource-for-conformance-testing";
    let err = s
        .run(&b, "resources/read", json!({"uri": uri}))
        .await
        .expect_err("unknown resource");
    assert_eq!(err.code, code::RESOURCE_NOT_FOUND);
    assert_eq!(err.data, Some(json!({"uri": uri})));

    let err = s
        .tool(&b, "nope", json!({}))
        .await
        .expect_err("unknown tool");
    assert_eq!(
        (err.code, err.message.as_str()),
        (code::INVALID_PARAMS, "Unknown tool: nope")
    );
    let err = s.tool(&b, "fail", json!({})).await.expect_err("fail");
    assert_eq!(err.code, code::INTERNAL_ERROR);
    let err = s
        .run(&b, "server/discover", json!({}))
        .await
        .expect_err("not this era");
    assert_eq!(err.code, code::METHOD_NOT_FOUND);
    let err = s
        .run(
            &b,
            "prompts/get",
            json!({"name": "test_prompt_with_arguments", "arguments": {"arg1": "x"}}),
        )
        .await
        .expect_err("missing argument");
    assert_eq!(err.code, code::INVALID_PARAMS);
}

#[tokio::test]
async fn reconnection_closes_the_stream_first() {
    let b = builtin();
    let s = Client::session();
    let r = s
        .tool(&b, "test_reconnection", json!({}))
        .await
        .expect("reconnection");
    assert_eq!(s.peer.disconnects.load(Ordering::Relaxed), 1);
    assert!(text_of(&r).starts_with("Reconnection test completed successfully."));
}

#[tokio::test]
async fn every_listed_tool_can_be_called() {
    let b = builtin();
    let s = Client {
        peer: Recorder::answering(&[
            (
                "elicitation/create",
                json!({"action": "accept", "content": {"name": "A", "ok": true}}),
            ),
            (
                "sampling/createMessage",
                json!({"role": "assistant", "content": {"type": "text", "text": "hi"}, "model": "m"}),
            ),
            ("roots/list", json!({"roots": [{"uri": "file:///r"}]})),
        ]),
        ..Client::session()
    };
    let list = s
        .run(&b, "tools/list", json!({}))
        .await
        .expect("tools/list");
    let names = listed_tool_names(&list);
    assert!(names.len() > 30);
    for tool in list["tools"].as_array().into_iter().flatten() {
        assert!(tool["description"].as_str().is_some_and(|d| !d.is_empty()));
        assert_eq!(tool["inputSchema"]["type"], "object");
        assert!(
            tool["inputSchema"]["properties"]
                .as_object()
                .is_some_and(|p| p.values().all(Value::is_object))
        );
    }
    let args = |name: &str| match name {
        "test_sampling" => json!({"arguments": {"prompt": "p"}}),
        "test_elicitation" => json!({"arguments": {"message": "m"}}),
        "echo" => json!({"arguments": {"text": "t"}}),
        "add" => json!({"arguments": {"a": 1, "b": 2.5}}),
        "slow" => json!({"arguments": {"steps": 2, "delay_ms": 1}}),
        _ => json!({}),
    };
    for name in names {
        match s.tool(&b, &name, args(&name)).await {
            Ok(r) => assert!(r["content"].is_array(), "{name}: {r}"),
            Err(e) => assert_eq!(name, "fail", "{name}: {e}"),
        }
    }
}

#[tokio::test]
async fn completion_suggests_prompt_and_template_arguments() {
    let b = builtin();
    let s = Client::session();
    let complete = |reference: Value, name: &str, value: &str| json!({"ref": reference, "argument": {"name": name, "value": value}});
    let prompt = json!({"type": "ref/prompt", "name": "test_prompt_with_arguments"});
    let r = s
        .run(&b, "completion/complete", complete(prompt, "arg1", "test"))
        .await
        .expect("complete");
    let values = r["completion"]["values"].as_array().expect("values");
    assert!(
        values
            .iter()
            .all(|v| v.as_str().is_some_and(|v| v.starts_with("test")))
    );
    assert!(values.contains(&json!("testValue1")));
    let template = json!({"type": "ref/resource", "uri": "test://template/{id}/data"});
    let r = s
        .run(&b, "completion/complete", complete(template, "id", "12"))
        .await
        .expect("complete");
    assert_eq!(r["completion"]["values"], json!(["123"]));
    let unknown = json!({"type": "ref/prompt", "name": "nope"});
    let err = s
        .run(&b, "completion/complete", complete(unknown, "x", ""))
        .await
        .expect_err("unknown prompt");
    assert_eq!(err.code, code::INVALID_PARAMS);
}
