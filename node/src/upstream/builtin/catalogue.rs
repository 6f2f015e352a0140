//! The tool catalogue: what `tools/list` shows, in one fixed order so that every client sees
//! the same tools in the same order (the conformance suite checks the order is stable).
//!
//! Every tool has a description and an object `inputSchema` whose properties are schemas, as
//! the 2025-11-25 schema and the suite's `tools-list` check require.

use super::fixtures;
use super::tools::{SLOW_MAX_DELAY_MS, SLOW_MAX_STEPS};
use serde_json::{Map, Value, json};

fn tool(name: &str, description: &str, properties: Value, required: &[&str]) -> Value {
    let mut schema = Map::new();
    schema.insert("type".into(), "object".into());
    schema.insert("properties".into(), properties);
    if !required.is_empty() {
        schema.insert("required".into(), json!(required));
    }
    json!({"name": name, "description": description, "inputSchema": schema})
}

fn string_arg(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

pub(super) fn list() -> Value {
    let none = || json!({});
    let tools = vec![
        tool(
            "test_simple_text",
            "Returns a simple text response",
            none(),
            &[],
        ),
        tool("test_image_content", "Returns image content", none(), &[]),
        tool("test_audio_content", "Returns audio content", none(), &[]),
        tool(
            "test_embedded_resource",
            "Returns an embedded resource",
            none(),
            &[],
        ),
        tool(
            "test_multiple_content_types",
            "Returns text, image and resource content together",
            none(),
            &[],
        ),
        tool(
            "test_tool_with_logging",
            "Sends log messages while it runs",
            none(),
            &[],
        ),
        tool(
            "test_tool_with_progress",
            "Reports progress 0, 50 and 100 of 100 before answering",
            none(),
            &[],
        ),
        tool(
            "test_error_handling",
            "Always fails, reporting the failure in its result",
            none(),
            &[],
        ),
        tool(
            "test_sampling",
            "Asks the client's LLM to complete a prompt",
            json!({"prompt": string_arg("The prompt to send to the LLM")}),
            &["prompt"],
        ),
        tool(
            "test_elicitation",
            "Asks the user for a username and email address",
            json!({"message": string_arg("The message to show the user")}),
            &["message"],
        ),
        tool(
            "test_elicitation_sep1034_defaults",
            "Asks the user to fill in a form whose fields have defaults (SEP-1034)",
            none(),
            &[],
        ),
        tool(
            "test_elicitation_sep1330_enums",
            "Asks the user to pick from each enum shape (SEP-1330)",
            none(),
            &[],
        ),
        json!({
            "name": "json_schema_2020_12_tool",
            "description": "Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)",
            "inputSchema": fixtures::json_schema_2020_12()
        }),
        tool(
            "test_reconnection",
            "Closes the response stream mid-call, then answers on the resumed stream (SEP-1699)",
            none(),
            &[],
        ),
        tool(
            "test_missing_capability",
            "Requires the client's sampling capability",
            none(),
            &[],
        ),
        tool(
            "test_streaming_elicitation",
            "Answers on a response stream without asking the client anything",
            none(),
            &[],
        ),
        tool(
            "test_logging_tool",
            "Logs only when the request asks for log messages",
            none(),
            &[],
        ),
        tool(
            "test_trigger_tool_change",
            "Announces that the tool list changed",
            none(),
            &[],
        ),
        tool(
            "test_trigger_prompt_change",
            "Announces that the prompt list changed",
            none(),
            &[],
        ),
        tool(
            "test_trigger_resource_change",
            "Announces that a resource (default test://watched-resource) and the resource list changed",
            json!({"uri": string_arg("The resource that changed")}),
            &[],
        ),
        tool(
            "test_input_required_result_elicitation",
            "Asks the user's name through an input_required result",
            none(),
            &[],
        ),
        tool(
            "test_input_required_result_sampling",
            "Asks the client's LLM a question through an input_required result",
            none(),
            &[],
        ),
        tool(
            "test_input_required_result_list_roots",
            "Asks for the client's roots through an input_required result",
            none(),
            &[],
        ),
        tool(
            "test_input_required_result_request_state",
            "Round-trips a requestState with its input request",
            none(),
            &[],
        ),
        tool(
            "test_input_required_result_multiple_inputs",
            "Asks for an elicitation, a sampling and the roots at once",
            none(),
            &[],
        ),
        tool(
            "test_input_required_result_multi_round",
            "Asks two questions in two rounds",
            none(),
            &[],
        ),
        tool(
            "test_input_required_result_tampered_state",
            "Refuses a requestState that was altered",
            none(),
            &[],
        ),
        tool(
            "test_input_required_result_capabilities",
            "Asks only for what the client declared it can do",
            none(),
            &[],
        ),
        tool(
            "echo",
            "Returns the text it is given",
            json!({"text": string_arg("The text to echo")}),
            &["text"],
        ),
        tool(
            "add",
            "Adds two numbers",
            json!({"a": {"type": "number"}, "b": {"type": "number"}}),
            &["a", "b"],
        ),
        tool(
            "counter",
            "Counts its calls in this session and returns the count",
            none(),
            &[],
        ),
        tool(
            "slow",
            "Takes a while: reports progress each step and stops when cancelled",
            json!({
                "steps": {"type": "integer", "minimum": 1, "maximum": SLOW_MAX_STEPS, "default": 5},
                "delay_ms": {"type": "integer", "minimum": 0, "maximum": SLOW_MAX_DELAY_MS, "default": 100}
            }),
            &[],
        ),
        tool(
            "fail",
            "Fails with a JSON-RPC error, on purpose",
            none(),
            &[],
        ),
    ];
    json!({ "tools": tools })
}
