//! Session-era behaviour: names, state, lists, the merged `initialize`, fan-outs, fallbacks.

use super::*;

#[tokio::test]
async fn clashing_tools_are_both_reachable_with_their_own_counters() {
    let f = builtins();
    let c = Client::session();
    for (name, expected) in [
        ("a__counter", "1"),
        ("a__counter", "2"),
        ("b__counter", "1"),
    ] {
        let r = c.call_tool(&f, name, json!({})).await.expect(name);
        assert_eq!(text_of(&r), expected, "{name}");
    }
    let echo = c
        .call_tool(&f, "b__echo", json!({"text": "from b"}))
        .await
        .expect("echo");
    assert_eq!(text_of(&echo), "from b");
    let slices = c.state.with(|s| s["federation"]["members"].clone());
    assert_eq!(slices["a"]["counter"], 2);
    assert_eq!(slices["b"]["counter"], 1);
}

#[tokio::test]
async fn member_state_moves_with_the_session() {
    let c = Client::session();
    c.call_tool(&builtins(), "a__counter", json!({}))
        .await
        .expect("first node");
    // Another node (another federation) continues from the session's state.
    let elsewhere = builtins();
    let r = c.call_tool(&elsewhere, "a__counter", json!({})).await;
    assert_eq!(text_of(&r.expect("second node")), "2");
    // State restored under a live view replaces it.
    c.state
        .with(|s| s["federation"]["members"]["a"]["counter"] = json!(10));
    let r = c.call_tool(&elsewhere, "a__counter", json!({})).await;
    assert_eq!(text_of(&r.expect("restored")), "11");
}

#[tokio::test]
async fn a_long_call_does_not_undo_what_others_changed_meanwhile() {
    let f = builtins();
    let c = Client::session();
    let slow = tokio::spawn(f.call(c.call(
        "tools/call",
        json!({"name": "a__slow", "arguments": {"steps": 2, "delay_ms": 50}}),
    )));
    // Under way before the counter is touched.
    tokio::time::sleep(Duration::from_millis(10)).await;
    for expected in ["1", "2"] {
        let r = c
            .call_tool(&f, "a__counter", json!({}))
            .await
            .expect("counter");
        assert_eq!(text_of(&r), expected);
    }
    let done = slow.await.expect("joined").expect("slow");
    assert_eq!(text_of(&done), "Finished 2 steps");
    let r = c
        .call_tool(&f, "a__counter", json!({}))
        .await
        .expect("counter");
    assert_eq!(text_of(&r), "3");
}

#[tokio::test]
async fn progress_passes_through_with_the_request_meta() {
    let f = builtins();
    let c = Client::session();
    let params = json!({
        "name": "b__test_tool_with_progress",
        "arguments": {},
        "_meta": {"progressToken": "tok"}
    });
    c.run(&f, "tools/call", params).await.expect("call");
    let progress = c.peer.notes_of("notifications/progress");
    assert_eq!(progress.len(), 3, "{progress:?}");
    assert!(progress.iter().all(|p| p["progressToken"] == "tok"));
}

#[tokio::test]
async fn lists_are_merged_and_prefixed() {
    let f = builtins();
    let c = Client::session();
    let tools = c
        .list_all(&f, "tools/list", "tools", usize::MAX)
        .await
        .expect("tools");
    let tools = names(&tools);
    assert!(tools.contains(&"a__echo".to_owned()), "{tools:?}");
    assert!(tools.contains(&"b__echo".to_owned()), "{tools:?}");
    let a: Vec<_> = tools.iter().filter(|n| n.starts_with("a__")).collect();
    assert_eq!(a.len() * 2, tools.len(), "both members, wholly: {tools:?}");

    let first = c.run(&f, "tools/list", json!({})).await.expect("page");
    assert!(first["nextCursor"].is_string(), "the next member's page");

    let prompts = c
        .list_all(&f, "prompts/list", "prompts", usize::MAX)
        .await
        .expect("prompts");
    assert!(names(&prompts).contains(&"b__test_simple_prompt".to_owned()));
    let resources = c
        .list_all(&f, "resources/list", "resources", usize::MAX)
        .await
        .expect("resources");
    assert!(names(&resources).contains(&"a__static-text".to_owned()));
    assert!(
        resources.iter().any(|r| r["uri"] == "test://static-text"),
        "URIs are not rewritten"
    );
    let templates = c
        .list_all(
            &f,
            "resources/templates/list",
            "resourceTemplates",
            usize::MAX,
        )
        .await
        .expect("templates");
    assert_eq!(names(&templates), ["a__template", "b__template"]);
    assert_eq!(templates[0]["uriTemplate"], "test://template/{id}/data");
}

#[tokio::test]
async fn pages_come_member_by_member() {
    let paged = federation(vec![
        ("a", Arc::new(Paged(Builtin::new([0; 32])))),
        ("b", Arc::new(Paged(Builtin::new([0; 32])))),
    ]);
    let c = Client::session();
    let all = c
        .list_all(&builtins(), "tools/list", "tools", usize::MAX)
        .await
        .expect("unpaged");
    let pages = c
        .list_all(&paged, "tools/list", "tools", 2)
        .await
        .expect("paged");
    assert_eq!(names(&pages), names(&all), "every tool once, in order");
    let switch = names(&pages)
        .iter()
        .position(|n| n.starts_with("b__"))
        .expect("b's tools");
    assert!(names(&pages)[..switch].iter().all(|n| n.starts_with("a__")));
}

#[tokio::test]
async fn invalid_cursors_are_refused() {
    let f = builtins();
    let c = Client::session();
    let out_of_range = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("[7,null]")
    };
    for cursor in [json!("not a cursor"), json!(out_of_range), json!(3)] {
        let err = c
            .run(&f, "tools/list", json!({"cursor": cursor}))
            .await
            .expect_err("refused");
        assert_eq!(err.code, code::INVALID_PARAMS, "{cursor}");
    }
}

#[tokio::test]
async fn initialize_merges_and_excludes_failing_members() {
    let old = Arc::new(Fake {
        version: Some("2025-06-18"),
        ..Fake::new(&[])
    });
    let broken = Arc::new(Fake {
        version: None,
        ..Fake::new(&[])
    });
    let f = federation(vec![
        ("old", old.clone()),
        ("broken", broken.clone()),
        ("built", Arc::new(Builtin::new([0; 32]))),
    ]);
    let c = Client::session();
    let init = json!({"protocolVersion": "2025-11-25", "capabilities": {}});
    let r = c.run(&f, "initialize", init).await.expect("initialize");
    assert_eq!(r["protocolVersion"], "2025-11-25");
    assert_eq!(r["serverInfo"]["name"], "shardgate");
    assert_eq!(r["capabilities"]["resources"]["subscribe"], true);
    assert_eq!(r["capabilities"]["tools"]["listChanged"], true);
    assert!(
        r["instructions"]
            .as_str()
            .is_some_and(|i| i.starts_with("built: ")),
        "{r}"
    );
    assert_eq!(
        broken.closed(),
        [Scope::Session("test".into())],
        "released at once"
    );

    f.notification(
        "notifications/initialized",
        &json!({}),
        &Scope::Session("test".into()),
        &c.state,
    );
    assert_eq!(old.told(), ["notifications/initialized"]);
    assert!(broken.told().is_empty(), "excluded for the session");
    c.run(&f, "tools/list", json!({})).await.expect("list");
    assert!(broken.asked("tools/list").is_empty());
    let err = c
        .call_tool(&f, "broken__anything", json!({}))
        .await
        .expect_err("excluded");
    assert_eq!(err.code, code::INVALID_PARAMS);

    let unknown = json!({"protocolVersion": "1999-01-01", "capabilities": {}});
    let r = Client::session()
        .run(&f, "initialize", unknown)
        .await
        .expect("initialize");
    assert_eq!(
        r["protocolVersion"], "2025-06-18",
        "as the first member said"
    );
}

#[tokio::test]
async fn initialize_fails_only_when_every_member_does() {
    let broken = || -> Arc<dyn Upstream> {
        Arc::new(Fake {
            version: None,
            ..Fake::new(&[])
        })
    };
    let f = federation(vec![("a", broken()), ("b", broken())]);
    let err = Client::session()
        .run(&f, "initialize", json!({"protocolVersion": "2025-11-25"}))
        .await
        .expect_err("nobody started");
    assert_eq!(err.code, code::INTERNAL_ERROR);
}

#[tokio::test]
async fn ping_and_set_level_answer_exactly_empty() {
    let f = federation(vec![
        ("a", Arc::new(Builtin::new([0; 32]))),
        ("bare", Arc::new(Bare)),
        ("b", Arc::new(Builtin::new([0; 32]))),
    ]);
    let c = Client::session();
    assert_eq!(c.run(&f, "ping", json!({})).await, Ok(json!({})));
    let r = c
        .run(&f, "logging/setLevel", json!({"level": "error"}))
        .await;
    assert_eq!(r, Ok(json!({})));
    let slices = c.state.with(|s| s["federation"]["members"].clone());
    assert_eq!(slices["a"]["logLevel"], "error");
    assert_eq!(slices["b"]["logLevel"], "error");
    let err = c
        .run(&f, "logging/setLevel", json!({"level": "loud"}))
        .await
        .expect_err("nobody took it");
    assert_eq!(err.code, code::INVALID_PARAMS);
}

#[tokio::test]
async fn unknown_names_are_invalid_params() {
    let f = builtins();
    let c = Client::session();
    for name in ["zz__echo", "echo", "a_echo"] {
        let err = c.call_tool(&f, name, json!({})).await.expect_err(name);
        assert_eq!(err.code, code::INVALID_PARAMS, "{name}");
        assert!(err.message.contains(name), "{}", err.message);
    }
    let err = c
        .run(&f, "prompts/get", json!({"name": "zz__test_simple_prompt"}))
        .await
        .expect_err("prompt");
    assert_eq!(err.message, "Unknown prompt: zz__test_simple_prompt");
    let err = c
        .run(&f, "tools/call", json!({}))
        .await
        .expect_err("no name");
    assert_eq!(err.code, code::INVALID_PARAMS);
}

#[tokio::test]
async fn the_longest_fitting_prefix_owns_a_name() {
    let short = Arc::new(Fake::new(&[]));
    let long = Arc::new(Fake::new(&[]));
    let f = federation(vec![("x", short.clone()), ("x_", long.clone())]);
    let r = Client::session()
        .call_tool(&f, "x___tool", json!({}))
        .await
        .expect("call");
    assert_eq!(text_of(&r), "tool");
    assert!(short.asked("tools/call").is_empty());
}

#[tokio::test]
async fn prompts_and_completions_route_by_prefix() {
    let f = builtins();
    let c = Client::session();
    let r = c
        .run(&f, "prompts/get", json!({"name": "b__test_simple_prompt"}))
        .await
        .expect("prompt");
    assert!(r["messages"].is_array(), "{r}");
    let complete = |reference: Value, argument: Value| {
        c.run(
            &f,
            "completion/complete",
            json!({"ref": reference, "argument": argument}),
        )
    };
    let r = complete(
        json!({"type": "ref/prompt", "name": "a__test_prompt_with_arguments"}),
        json!({"name": "arg1", "value": "test-"}),
    )
    .await
    .expect("prompt completion");
    assert_eq!(
        r["completion"]["values"],
        json!(["test-alpha", "test-beta"])
    );
    let r = complete(
        json!({"type": "ref/resource", "uri": "test://template/{id}/data"}),
        json!({"name": "id", "value": "4"}),
    )
    .await
    .expect("template completion");
    assert_eq!(r["completion"]["values"], json!(["42"]));
    let err = complete(
        json!({"type": "ref/prompt", "name": "zz__x"}),
        json!({"name": "a", "value": ""}),
    )
    .await
    .expect_err("unknown prompt");
    assert_eq!(err.code, code::INVALID_PARAMS);
}

#[tokio::test]
async fn unknown_methods_go_to_the_first_member_that_knows_them() {
    let knowing = Arc::new(Fake {
        knows: Some("vendor/thing"),
        ..Fake::new(&[])
    });
    let f = federation(vec![
        ("a", Arc::new(Builtin::new([0; 32]))),
        ("k", knowing.clone()),
    ]);
    let c = Client::session();
    let r = c.run(&f, "vendor/thing", json!({"x": 1})).await;
    assert_eq!(r, Ok(json!({"by": "fake"})));
    assert_eq!(knowing.asked("vendor/thing"), [json!({"x": 1})]);
    let err = c
        .run(&f, "vendor/nothing", json!({}))
        .await
        .expect_err("nobody knows");
    assert_eq!(err.code, code::METHOD_NOT_FOUND);
}

#[tokio::test]
async fn notifications_and_close_reach_every_member() {
    let (a, b) = (Arc::new(Fake::new(&[])), Arc::new(Fake::new(&[])));
    let f = federation(vec![("a", a.clone()), ("b", b.clone())]);
    let c = Client::session();
    let params = json!({});
    f.notification(
        "notifications/roots/list_changed",
        &params,
        &Scope::Session("test".into()),
        &c.state,
    );
    assert_eq!(a.told(), ["notifications/roots/list_changed"]);
    assert_eq!(b.told(), ["notifications/roots/list_changed"]);
    f.close(&Scope::Session("test".into()));
    assert_eq!(a.closed(), [Scope::Session("test".into())]);
    assert_eq!(b.closed(), [Scope::Session("test".into())]);
}
