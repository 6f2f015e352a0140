//! Resources, whose URIs carry no prefix: routed by what each member listed, by template, or
//! by asking the members in turn.

use super::*;

/// Members `a` and `b`, each with one resource and one template of its own.
fn pair() -> (Arc<Fake>, Arc<Fake>, Federation) {
    let a = Arc::new(Fake {
        template: Some("t://a/{id}"),
        ..Fake::new(&["x://one"])
    });
    let b = Arc::new(Fake {
        template: Some("t://b/{id}"),
        ..Fake::new(&["x://two"])
    });
    let f = federation(vec![("a", a.clone()), ("b", b.clone())]);
    (a, b, f)
}

async fn read(c: &Client, f: &Federation, uri: &str) -> Result<Value, RpcError> {
    c.run(f, "resources/read", json!({ "uri": uri })).await
}

#[tokio::test]
async fn reads_go_to_the_member_that_listed_the_uri() {
    let (a, b, f) = pair();
    let c = Client::session();
    let listed = c
        .list_all(&f, "resources/list", "resources", usize::MAX)
        .await
        .expect("list");
    assert_eq!(names(&listed), ["a__x://one", "b__x://two"]);
    assert_eq!(listed[1]["uri"], "x://two", "URIs stay as they are");
    let r = read(&c, &f, "x://two").await.expect("read");
    assert_eq!(r["contents"][0]["uri"], "x://two");
    assert!(a.asked("resources/read").is_empty(), "straight to b");
    assert_eq!(b.asked("resources/read"), [json!({"uri": "x://two"})]);
}

#[tokio::test]
async fn templates_route_what_they_match() {
    let (a, b, f) = pair();
    let c = Client::session();
    c.list_all(&f, "resources/templates/list", "resourceTemplates", 1)
        .await
        .expect("templates");
    read(&c, &f, "t://b/7").await.expect("read");
    assert!(a.asked("resources/read").is_empty(), "straight to b");
    assert_eq!(b.asked("resources/read").len(), 1);
    let complete = json!({
        "ref": {"type": "ref/resource", "uri": "t://b/{id}"},
        "argument": {"name": "id", "value": ""}
    });
    let r = c.run(&f, "completion/complete", complete).await;
    assert_eq!(r.expect("completion")["completion"]["values"], json!(["7"]));
    assert!(
        a.asked("completion/complete").is_empty(),
        "the template's owner"
    );
}

#[tokio::test]
async fn unlisted_uris_are_asked_in_turn_then_remembered() {
    let (a, b, f) = pair();
    let c = Client::session();
    for _ in 0..2 {
        let r = read(&c, &f, "x://two").await.expect("read");
        assert_eq!(r["contents"][0]["text"], "fake");
    }
    assert_eq!(
        a.asked("resources/read").len(),
        1,
        "asked once, then skipped"
    );
    assert_eq!(b.asked("resources/read").len(), 2);
    let err = read(&c, &f, "x://nobody").await.expect_err("unknown");
    assert_eq!(err.code, code::RESOURCE_NOT_FOUND);
}

#[tokio::test]
async fn a_member_without_resources_does_not_hide_not_found() {
    let f = federation(vec![
        ("bare", Arc::new(Bare)),
        ("a", Arc::new(Fake::new(&["x://one"]))),
    ]);
    let c = Client::session();
    assert!(read(&c, &f, "x://one").await.is_ok());
    let err = read(&c, &f, "x://nobody").await.expect_err("unknown");
    assert_eq!(err.code, code::RESOURCE_NOT_FOUND);
}

#[tokio::test]
async fn subscriptions_go_where_reads_go() {
    let f = federation(vec![
        ("fake", Arc::new(Fake::new(&["x://one"]))),
        ("built", Arc::new(Builtin::new([0; 32]))),
    ]);
    let c = Client::session();
    let uri = json!({"uri": "test://watched-resource"});
    let r = c.run(&f, "resources/subscribe", uri.clone()).await;
    assert_eq!(r, Ok(json!({})));
    let r = c
        .call_tool(&f, "built__test_trigger_resource_change", json!({}))
        .await
        .expect("trigger");
    assert_eq!(text_of(&r), "Change of test://watched-resource announced");
    let updated = c.peer.notes_of("notifications/resources/updated");
    let r = c.run(&f, "resources/unsubscribe", uri.clone()).await;
    assert_eq!(updated, [uri], "the URI as the member sent it");
    assert_eq!(r, Ok(json!({})));
}
