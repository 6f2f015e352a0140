//! The stateless era (2026-07-28): no `initialize`, `_meta` on every request, `server/discover`
//! and `subscriptions/listen`.

use super::*;
use shardgate_protocol::mcp::{
    META_CLIENT_CAPABILITIES, META_PROTOCOL_VERSION, META_SUBSCRIPTION_ID,
};

/// What a stateless-era client puts in every request's `_meta`.
fn meta() -> Value {
    json!({
        META_PROTOCOL_VERSION: "2026-07-28",
        META_CLIENT_CAPABILITIES: {"elicitation": {}}
    })
}

#[tokio::test]
async fn calls_carry_their_meta_through() {
    let fake = Arc::new(Fake::new(&[]));
    let f = federation(vec![
        ("a", Arc::new(Builtin::new([0; 32]))),
        ("f", fake.clone()),
    ]);
    let c = Client::stateless();
    for expected in ["1", "2"] {
        let params = json!({"name": "a__counter", "arguments": {}, "_meta": meta()});
        let r = c.run(&f, "tools/call", params).await.expect("counter");
        assert_eq!(text_of(&r), expected);
        assert_eq!(r["resultType"], "complete");
    }
    let params = json!({"name": "f__thing", "arguments": {"x": 1}, "_meta": meta()});
    c.run(&f, "tools/call", params).await.expect("fake");
    assert_eq!(
        fake.asked("tools/call"),
        [json!({"name": "thing", "arguments": {"x": 1}, "_meta": meta()})],
        "all but the name as the client sent it"
    );
}

#[tokio::test]
async fn input_required_rounds_return_to_the_same_member() {
    let f = builtins();
    let c = Client::stateless();
    let name = "b__test_input_required_result_elicitation";
    let r1 = c
        .run(&f, "tools/call", json!({"name": name, "_meta": meta()}))
        .await
        .expect("round 1");
    assert_eq!(r1["resultType"], "input_required");
    let answer = json!({"action": "accept", "content": {"name": "Alice"}});
    let mut retry = json!({
        "name": name,
        "inputResponses": {"user_name": answer},
        "_meta": meta()
    });
    if let Some(state) = r1.get("requestState") {
        retry["requestState"] = state.clone();
    }
    let r2 = c.run(&f, "tools/call", retry).await.expect("round 2");
    assert_eq!(text_of(&r2), "Hello, Alice!");
}

#[tokio::test]
async fn discover_merges_the_members() {
    let c = Client::stateless();
    let r = c
        .run(&builtins(), "server/discover", json!({"_meta": meta()}))
        .await
        .expect("discover");
    assert_eq!(
        r["supportedVersions"],
        json!(shardgate_protocol::mcp::supported_versions())
    );
    assert_eq!(
        r["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "shardgate"
    );
    assert_eq!(r["capabilities"]["tools"]["listChanged"], true);
    assert_eq!(r["cacheScope"], "public");
    assert_eq!(r["resultType"], "complete");

    let mixed = federation(vec![
        ("a", Arc::new(Builtin::new([0; 32]))),
        ("bare", Arc::new(Bare)),
        ("f", Arc::new(Fake::new(&[]))),
    ]);
    let r = c
        .run(&mixed, "server/discover", json!({"_meta": meta()}))
        .await
        .expect("discover");
    assert_eq!(r["supportedVersions"], json!(["2026-07-28"]), "in common");
    assert_eq!(r["ttlMs"], 1000, "the least fresh part");
    assert_eq!(r["cacheScope"], "private", "f says nothing about sharing");
    assert_eq!(r["capabilities"]["resources"]["subscribe"], true);
    assert_eq!(r["capabilities"]["prompts"]["listChanged"], true);
}

#[tokio::test]
async fn a_later_page_of_failed_members_is_empty_and_not_cached() {
    let f = federation(vec![
        ("a", Arc::new(Builtin::new([0; 32]))),
        ("bare", Arc::new(Bare)),
    ]);
    let c = Client::stateless();
    let first = c
        .run(&f, "tools/list", json!({"_meta": meta()}))
        .await
        .expect("first page");
    assert_eq!(first["cacheScope"], "public", "the member's own hints");
    let cursor = first["nextCursor"].clone();
    assert!(cursor.is_string(), "{first}");
    let params = json!({"cursor": cursor, "_meta": meta()});
    let last = c.run(&f, "tools/list", params).await.expect("last page");
    assert_eq!(last["tools"], json!([]));
    assert_eq!(last["ttlMs"], 0);
    assert!(last.get("nextCursor").is_none());
}

fn listen_params(filter: Value) -> Value {
    json!({"notifications": filter, "_meta": meta()})
}

#[tokio::test]
async fn listen_acknowledges_once_and_forwards_every_member() {
    let f = federation(vec![
        ("a", Arc::new(Builtin::new([0; 32]))),
        ("bare", Arc::new(Bare)),
        ("b", Arc::new(Builtin::new([0; 32]))),
    ]);
    let c = Client::stateless();
    let filter = json!({
        "toolsListChanged": true,
        "resourceSubscriptions": ["test://watched-resource", "x://elsewhere"]
    });
    let mut listen = c.call("subscriptions/listen", listen_params(filter));
    listen.request_id = json!(42);
    let listening = tokio::spawn(f.call(listen));
    let notes = c.peer.wait_for_notes(1).await;
    let (method, ack) = &notes[0];
    assert_eq!(method, "notifications/subscriptions/acknowledged");
    assert_eq!(
        ack["notifications"],
        json!({"toolsListChanged": true, "resourceSubscriptions": ["test://watched-resource"]})
    );
    let id = ack["_meta"][META_SUBSCRIPTION_ID].clone();
    assert_eq!(id, 42, "the client's listen request id");

    let trigger = Client::stateless();
    trigger
        .call_tool(&f, "a__test_trigger_tool_change", json!({}))
        .await
        .expect("a's change");
    trigger
        .call_tool(&f, "b__test_trigger_resource_change", json!({}))
        .await
        .expect("b's change");
    let notes = c.peer.wait_for_notes(3).await;
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert!(
        notes
            .iter()
            .all(|(_, p)| p["_meta"][META_SUBSCRIPTION_ID] == id)
    );
    assert_eq!(c.peer.notes_of("notifications/tools/list_changed").len(), 1);
    let updated = c.peer.notes_of("notifications/resources/updated");
    assert_eq!(updated.len(), 1);
    assert_eq!(
        updated[0]["uri"], "test://watched-resource",
        "not rewritten"
    );

    c.cancel.cancel();
    let done = listening.await.expect("joined").expect("graceful end");
    assert_eq!(done["_meta"][META_SUBSCRIPTION_ID], id);
    assert_eq!(
        c.peer
            .notes_of("notifications/subscriptions/acknowledged")
            .len(),
        1
    );
}

#[tokio::test]
async fn listen_fails_when_no_member_can() {
    let c = Client::stateless();
    let err = c
        .run(
            &builtins(),
            "subscriptions/listen",
            json!({"_meta": meta()}),
        )
        .await
        .expect_err("no filter");
    assert_eq!(err.code, code::INVALID_PARAMS);
    assert!(c.peer.notes().is_empty(), "nothing was acknowledged");
}
