//! Change notifications: `subscriptions/listen` streams and the trigger tools.

use super::*;

#[tokio::test]
async fn listen_acknowledges_filters_and_tags() {
    let b = builtin();
    let tools = Client::stateless();
    let prompts = Client::stateless();
    let listen = |s: &Client, request_id: Value, filter: Value| {
        let mut call = s.call("subscriptions/listen", json!({"notifications": filter}));
        call.request_id = request_id;
        tokio::spawn(b.call(call))
    };
    let tools_task = listen(
        &tools,
        json!("listen:0"),
        json!({"toolsListChanged": true, "bogus": true}),
    );
    let prompts_task = listen(&prompts, json!(7), json!({"promptsListChanged": true}));
    let acks = (
        tools.peer.wait_for_notes(1).await,
        prompts.peer.wait_for_notes(1).await,
    );
    let (ack_method, ack) = &acks.0[0];
    assert_eq!(ack_method, "notifications/subscriptions/acknowledged");
    assert_eq!(ack["notifications"], json!({"toolsListChanged": true}));
    let id = ack["_meta"]["io.modelcontextprotocol/subscriptionId"].clone();
    assert_eq!(id, "listen:0", "the listen request's own id, as sent");
    assert_eq!(
        acks.1[0].1["_meta"]["io.modelcontextprotocol/subscriptionId"], 7,
        "a number stays a number"
    );

    let trigger = Client::stateless();
    trigger
        .tool(&b, "test_trigger_tool_change", json!({}))
        .await
        .expect("trigger");
    let notes = tools.peer.wait_for_notes(2).await;
    assert_eq!(notes[1].0, "notifications/tools/list_changed");
    assert_eq!(
        notes[1].1["_meta"]["io.modelcontextprotocol/subscriptionId"],
        id
    );
    assert!(
        trigger.peer.notes().is_empty(),
        "the stateless trigger answers plainly"
    );

    trigger
        .tool(&b, "test_trigger_prompt_change", json!({}))
        .await
        .expect("trigger");
    let notes = prompts.peer.wait_for_notes(2).await;
    assert_eq!(notes.len(), 2, "only the prompt change: {notes:?}");
    assert_eq!(notes[1].0, "notifications/prompts/list_changed");
    assert_eq!(tools.peer.notes().len(), 2);

    tools.cancel.cancel();
    let done = tools_task.await.expect("joined").expect("graceful end");
    assert_eq!(done["resultType"], "complete");
    assert_eq!(done["_meta"]["io.modelcontextprotocol/subscriptionId"], id);
    prompts.cancel.cancel();
    assert!(prompts_task.await.is_ok());
}

#[tokio::test]
async fn resource_changes_reach_subscribers_only() {
    let b = builtin();
    let s = Client::stateless();
    let filter = json!({"resourceSubscriptions": ["test://watched-resource", "test://nope"], "resourcesListChanged": true});
    let task =
        tokio::spawn(b.call(s.call("subscriptions/listen", json!({"notifications": filter}))));
    let ack = s.peer.wait_for_notes(1).await;
    assert_eq!(
        ack[0].1["notifications"],
        json!({"resourceSubscriptions": ["test://watched-resource"], "resourcesListChanged": true})
    );
    let trigger = Client::stateless();
    let other = json!({"arguments": {"uri": "test://static-text"}});
    trigger
        .tool(&b, "test_trigger_resource_change", other)
        .await
        .expect("trigger");
    trigger
        .tool(&b, "test_trigger_resource_change", json!({}))
        .await
        .expect("trigger");
    let notes = s.peer.wait_for_notes(4).await;
    let got: Vec<_> = notes[1..]
        .iter()
        .map(|(m, p)| (m.as_str(), p["uri"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("notifications/resources/list_changed", Value::Null),
            (
                "notifications/resources/updated",
                json!("test://watched-resource")
            ),
            ("notifications/resources/list_changed", Value::Null),
        ]
    );
    s.cancel.cancel();
    assert!(task.await.is_ok());
}

#[tokio::test]
async fn a_listen_without_a_filter_is_refused() {
    let b = builtin();
    let err = Client::stateless()
        .run(&b, "subscriptions/listen", json!({}))
        .await
        .expect_err("no filter");
    assert_eq!(err.code, shardgate_protocol::mcp::code::INVALID_PARAMS);
}

#[tokio::test]
async fn session_triggers_tell_the_calling_session() {
    let b = builtin();
    let s = Client::session();
    s.tool(&b, "test_trigger_tool_change", json!({}))
        .await
        .expect("trigger");
    assert_eq!(
        s.peer.notes_of("notifications/tools/list_changed"),
        [json!({})]
    );
    // Updates of a resource only for sessions subscribed to it.
    s.tool(&b, "test_trigger_resource_change", json!({}))
        .await
        .expect("trigger");
    assert!(
        s.peer
            .notes_of("notifications/resources/updated")
            .is_empty()
    );
    s.run(
        &b,
        "resources/subscribe",
        json!({"uri": "test://watched-resource"}),
    )
    .await
    .expect("subscribe");
    s.tool(&b, "test_trigger_resource_change", json!({}))
        .await
        .expect("trigger");
    assert_eq!(
        s.peer.notes_of("notifications/resources/updated"),
        [json!({"uri": "test://watched-resource"})]
    );
}
