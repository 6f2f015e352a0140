//! `completion/complete`: suggestions for the arguments of our prompts and of the resource
//! template, filtered by what the user typed so far.

use super::{invalid_params, prompts};
use serde_json::{Value, json};
use shardgate_protocol::mcp::RpcError;

/// The protocol's cap on one answer.
const MAX_VALUES: usize = 100;

fn candidates(reference: &Value, argument: &str) -> Result<&'static [&'static str], RpcError> {
    match reference.get("type").and_then(Value::as_str) {
        Some("ref/prompt") => {
            let name = reference
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid_params("ref/prompt needs a name"))?;
            prompts::arguments_of(name)
                .ok_or_else(|| invalid_params(format!("Unknown prompt: {name}")))?;
            Ok(match (name, argument) {
                ("test_prompt_with_arguments", "arg1") => {
                    &["testValue1", "test-alpha", "test-beta"]
                }
                ("test_prompt_with_arguments", "arg2") => {
                    &["testValue2", "test-gamma", "test-delta"]
                }
                ("test_prompt_with_embedded_resource", "resourceUri") => &[
                    "test://example-resource",
                    "test://static-text",
                    "test://watched-resource",
                ],
                _ => &[],
            })
        }
        Some("ref/resource") => {
            let uri = reference
                .get("uri")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid_params("ref/resource needs a uri"))?;
            if uri != "test://template/{id}/data" {
                return Err(invalid_params(format!("Unknown resource template: {uri}")));
            }
            Ok(match argument {
                "id" => &["1", "2", "3", "42", "123"],
                _ => &[],
            })
        }
        _ => Err(invalid_params(
            "ref.type must be ref/prompt or ref/resource",
        )),
    }
}

pub(super) fn complete(params: &Value) -> Result<Value, RpcError> {
    let reference = params
        .get("ref")
        .ok_or_else(|| invalid_params("completion/complete needs params.ref"))?;
    let argument = params
        .get("argument")
        .ok_or_else(|| invalid_params("completion/complete needs params.argument"))?;
    let (Some(name), Some(typed)) = (
        argument.get("name").and_then(Value::as_str),
        argument.get("value").and_then(Value::as_str),
    ) else {
        return Err(invalid_params("params.argument needs a name and a value"));
    };
    let values: Vec<&str> = candidates(reference, name)?
        .iter()
        .copied()
        .filter(|c| c.starts_with(typed))
        .take(MAX_VALUES)
        .collect();
    Ok(json!({"completion": {"values": values, "total": values.len(), "hasMore": false}}))
}
