//! `tools/call`: the conformance fixtures, the stateless-era diagnostic hooks, and our own
//! tools (`echo`, `add`, `counter`, `slow`, `fail`). The tools that ask the client for input are
//! in [`super::asks`]; what `tools/list` shows is in [`super::catalogue`].

use super::listen::Change;
use super::mrtr::{self, Target};
use super::{
    Shared, asks, fixtures, invalid_params, log, progress, resources, sleep, text, tool_error,
};
use crate::upstream::Call;
use serde_json::{Map, Value, json};
use shardgate_protocol::mcp::{Era, RpcError, code};
use std::time::Duration;

/// Bounds on `slow`, so that one call cannot hold a worker for hours.
pub(super) const SLOW_MAX_STEPS: u64 = 1_000;
pub(super) const SLOW_MAX_DELAY_MS: u64 = 60_000;

pub(super) async fn call(shared: &Shared, call: &Call, era: Era) -> Result<Value, RpcError> {
    let name = call
        .params
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_params("tools/call needs params.name"))?;
    let empty = Map::new();
    let args = match call.params.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(args)) => args,
        Some(_) => return Err(invalid_params("params.arguments must be an object")),
    };
    if let Some(step) = asks::tool(name) {
        let target = Target {
            method: "tools/call",
            name,
        };
        return mrtr::drive(&shared.sealer, call, era, target, args, step).await;
    }
    let image = || json!({"type": "image", "data": fixtures::PNG, "mimeType": "image/png"});
    Ok(match name {
        "test_simple_text" => text("This is a simple text response for testing."),
        "test_image_content" => json!({ "content": [image()] }),
        "test_audio_content" => json!({
            "content": [{"type": "audio", "data": fixtures::WAV, "mimeType": "audio/wav"}]
        }),
        "test_embedded_resource" => json!({"content": [{"type": "resource", "resource": {
            "uri": "test://embedded-resource",
            "mimeType": "text/plain",
            "text": "This is an embedded resource content."
        }}]}),
        "test_multiple_content_types" => json!({"content": [
            {"type": "text", "text": "Multiple content types test:"},
            image(),
            {"type": "resource", "resource": {
                "uri": "test://mixed-content-resource",
                "mimeType": "application/json",
                "text": "{\"test\":\"data\",\"value\":123}"
            }}
        ]}),
        "test_tool_with_logging" => {
            let pause = Duration::from_millis(50);
            log(call, era, "info", "Tool execution started");
            sleep(call, pause).await?;
            log(call, era, "info", "Tool processing data");
            sleep(call, pause).await?;
            log(call, era, "info", "Tool execution completed");
            text("Tool with logging executed successfully")
        }
        "test_tool_with_progress" => {
            for (i, done) in [0, 50, 100].into_iter().enumerate() {
                if i > 0 {
                    sleep(call, Duration::from_millis(50)).await?;
                }
                progress(
                    call,
                    done,
                    Some(100),
                    &format!("Completed step {done} of 100"),
                );
            }
            match call.progress_token() {
                Some(Value::String(token)) => text(token),
                Some(token) => text(&token.to_string()),
                None => text("no progress token given"),
            }
        }
        "test_error_handling" => tool_error("This tool intentionally returns an error for testing"),
        "json_schema_2020_12_tool" => text(&format!(
            "JSON Schema 2020-12 tool called with: {}",
            Value::Object(args.clone())
        )),
        "test_reconnection" => {
            call.peer.disconnect();
            // Gives the client time to notice the closed stream and come back for the result.
            sleep(call, Duration::from_millis(200)).await?;
            text(
                "Reconnection test completed successfully. If you received this, the client properly reconnected after stream closure.",
            )
        }
        "test_missing_capability" => missing_capability(call, era)?,
        "test_streaming_elicitation" => {
            progress(call, 50, Some(100), "Streaming");
            text("Streaming complete")
        }
        "test_logging_tool" => {
            log(call, era, "info", "Diagnostic trace logging activated");
            text("Logging evaluated")
        }
        "test_trigger_tool_change" => {
            shared.changes.announce(call, era, Change::ToolsListChanged);
            text("Tool list change announced")
        }
        "test_trigger_prompt_change" => {
            shared
                .changes
                .announce(call, era, Change::PromptsListChanged);
            text("Prompt list change announced")
        }
        "test_trigger_resource_change" => {
            let uri = match args.get("uri") {
                None => "test://watched-resource",
                Some(Value::String(uri)) if resources::exists(uri) => uri,
                Some(_) => return Ok(tool_error("argument 'uri' must name a listed resource")),
            };
            shared
                .changes
                .announce(call, era, Change::ResourceUpdated(uri.to_owned()));
            shared
                .changes
                .announce(call, era, Change::ResourcesListChanged);
            text(&format!("Change of {uri} announced"))
        }
        "echo" => match args.get("text") {
            Some(Value::String(s)) => text(s),
            _ => tool_error("argument 'text' must be a string"),
        },
        "add" => add(args),
        "counter" => {
            let n = call.state.with(|state| {
                let n = state
                    .get("counter")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                    .saturating_add(1);
                state.insert("counter".into(), n.into());
                n
            });
            text(&n.to_string())
        }
        "slow" => return slow(call, args).await,
        "fail" => {
            return Err(RpcError::new(
                code::INTERNAL_ERROR,
                "the fail tool fails on purpose",
            ));
        }
        _ => return Err(invalid_params(format!("Unknown tool: {name}"))),
    })
}

/// Refuses in the way of the era when the client cannot sample: -32021 in the stateless era,
/// a tool error in the session era (which has no code for it).
fn missing_capability(call: &Call, era: Era) -> Result<Value, RpcError> {
    if mrtr::supports(&call.client_capabilities, "sampling/createMessage") {
        return Ok(text("Success: the client declared the sampling capability"));
    }
    match era {
        Era::Stateless => Err(RpcError::new(
            code::MISSING_CAPABILITY,
            "Server requires the sampling capability for this request",
        )
        .with_data(json!({"requiredCapabilities": {"sampling": {}}}))),
        Era::Session => Ok(tool_error(
            "This tool needs the client's sampling capability, which the session did not declare",
        )),
    }
}

fn add(args: &Map<String, Value>) -> Value {
    let (Some(a), Some(b)) = (args.get("a"), args.get("b")) else {
        return tool_error("arguments 'a' and 'b' must be numbers");
    };
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64())
        && let Some(sum) = x.checked_add(y)
    {
        return text(&sum.to_string());
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => text(&(x + y).to_string()),
        _ => tool_error("arguments 'a' and 'b' must be numbers"),
    }
}

async fn slow(call: &Call, args: &Map<String, Value>) -> Result<Value, RpcError> {
    let bounded = |key: &str, default: u64, min: u64, max: u64| match args.get(key) {
        None => Some(default),
        Some(v) => v.as_u64().filter(|n| (min..=max).contains(n)),
    };
    let (Some(steps), Some(delay_ms)) = (
        bounded("steps", 5, 1, SLOW_MAX_STEPS),
        bounded("delay_ms", 100, 0, SLOW_MAX_DELAY_MS),
    ) else {
        return Ok(tool_error(&format!(
            "'steps' must be an integer in 1..={SLOW_MAX_STEPS} and 'delay_ms' one in 0..={SLOW_MAX_DELAY_MS}"
        )));
    };
    for step in 1..=steps {
        sleep(call, Duration::from_millis(delay_ms)).await?;
        progress(call, step, Some(steps), &format!("Step {step} of {steps}"));
    }
    Ok(text(&format!("Finished {steps} steps")))
}
