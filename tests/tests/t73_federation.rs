//! Several upstreams federated behind one endpoint.

use serde_json::{Value, json};
use shardgate_tests::mcp::Client;
use shardgate_tests::upstreams::*;
use shardgate_tests::{Cluster, scratch};

#[tokio::test]
async fn t40_federated_upstreams_with_clashing_names_are_both_reachable() -> anyhow::Result<()> {
    let dir = scratch("federation")?;
    let config = "[[upstream]]\nname = \"a\"\n[upstream.builtin]\n\n[[upstream]]\nname = \"b\"\n[upstream.builtin]\n";
    let cluster = Cluster::builder()
        .nodes(2)
        .config(write_config(&dir, config)?)
        .start()
        .await?;
    let c = Client::new(&cluster.endpoint);
    let sid = c.initialize().await?;
    let mut names = Vec::new();
    let mut cursor: Option<Value> = None;
    for page in 0..50 {
        let params = match &cursor {
            Some(cur) => json!({"cursor": cur}),
            None => json!({}),
        };
        let list = c.request(&sid, 100 + page, "tools/list", params).await?;
        for t in list["result"]["tools"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            names.push(t["name"].as_str().unwrap_or_default().to_string());
        }
        cursor = list["result"].get("nextCursor").cloned();
        if cursor.is_none() {
            break;
        }
    }
    assert!(names.contains(&"a__echo".to_string()), "{names:?}");
    assert!(names.contains(&"b__echo".to_string()), "{names:?}");
    let count = |name: &'static str, id: i64| {
        let (c, sid) = (c.clone(), sid.clone());
        async move {
            let answer = c
                .request(
                    &sid,
                    id,
                    "tools/call",
                    json!({"name": name, "arguments": {}}),
                )
                .await?;
            tool_text(&answer).ok_or_else(|| anyhow::anyhow!("{answer}"))
        }
    };
    assert_eq!(count("a__counter", 1).await?, "1");
    assert_eq!(count("a__counter", 2).await?, "2");
    assert_eq!(
        count("b__counter", 3).await?,
        "1",
        "each upstream keeps its own state"
    );
    let echo = c
        .request(
            &sid,
            4,
            "tools/call",
            json!({"name": "b__echo", "arguments": {"text": "b"}}),
        )
        .await?;
    assert_eq!(tool_text(&echo).as_deref(), Some("b"));
    cluster.stop().await?;
    Ok(())
}
