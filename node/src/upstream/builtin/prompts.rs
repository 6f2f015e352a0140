//! Prompts: the conformance fixtures, plus `test_input_required_result_prompt`, which asks the
//! client for context first (an `input_required` result in the stateless era).

use super::mrtr::{self, Target};
use super::{Shared, asks, fixtures, invalid_params};
use crate::upstream::Call;
use serde_json::{Map, Value, json};
use shardgate_protocol::mcp::{Era, RpcError};

fn argument(name: &str, description: &str) -> Value {
    json!({"name": name, "description": description, "required": true})
}

pub(super) fn list() -> Value {
    json!({"prompts": [
        {
            "name": "test_simple_prompt",
            "title": "Simple Test Prompt",
            "description": "A simple prompt without arguments"
        },
        {
            "name": "test_prompt_with_arguments",
            "title": "Prompt With Arguments",
            "description": "A prompt with required arguments",
            "arguments": [
                argument("arg1", "First test argument"),
                argument("arg2", "Second test argument")
            ]
        },
        {
            "name": "test_prompt_with_embedded_resource",
            "title": "Prompt With Embedded Resource",
            "description": "A prompt that includes an embedded resource",
            "arguments": [argument("resourceUri", "URI of the resource to embed")]
        },
        {
            "name": "test_prompt_with_image",
            "title": "Prompt With Image",
            "description": "A prompt that includes image content"
        },
        {
            "name": "test_input_required_result_prompt",
            "title": "Prompt Needing Context",
            "description": "A prompt that first asks the user for context"
        }
    ]})
}

/// The names of the arguments `prompt` takes, if it is one of ours.
pub(super) fn arguments_of(prompt: &str) -> Option<&'static [&'static str]> {
    match prompt {
        "test_prompt_with_arguments" => Some(&["arg1", "arg2"]),
        "test_prompt_with_embedded_resource" => Some(&["resourceUri"]),
        "test_simple_prompt" | "test_prompt_with_image" | "test_input_required_result_prompt" => {
            Some(&[])
        }
        _ => None,
    }
}

fn user(content: Value) -> Value {
    json!({"role": "user", "content": content})
}

fn text(s: &str) -> Value {
    json!({"type": "text", "text": s})
}

pub(super) async fn get(shared: &Shared, call: &Call, era: Era) -> Result<Value, RpcError> {
    let name = call
        .params
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_params("prompts/get needs params.name"))?;
    let Some(wanted) = arguments_of(name) else {
        return Err(invalid_params(format!("Unknown prompt: {name}")));
    };
    let empty = Map::new();
    let args = match call.params.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(args)) => args,
        Some(_) => return Err(invalid_params("params.arguments must be an object")),
    };
    let mut values = Vec::with_capacity(wanted.len());
    for arg in wanted {
        match args.get(*arg) {
            Some(Value::String(v)) => values.push(v.as_str()),
            Some(_) => return Err(invalid_params(format!("argument '{arg}' must be a string"))),
            None => return Err(invalid_params(format!("Missing required argument: {arg}"))),
        }
    }
    if let Some(step) = asks::prompt(name) {
        let target = Target {
            method: "prompts/get",
            name,
        };
        return mrtr::drive(&shared.sealer, call, era, target, args, step).await;
    }
    let messages = match (name, values.as_slice()) {
        ("test_prompt_with_arguments", [arg1, arg2]) => vec![user(text(&format!(
            "Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"
        )))],
        ("test_prompt_with_embedded_resource", [uri]) => vec![
            user(json!({"type": "resource", "resource": {
                "uri": uri,
                "mimeType": "text/plain",
                "text": "Embedded resource content for testing."
            }})),
            user(text("Please process the embedded resource above.")),
        ],
        ("test_prompt_with_image", []) => vec![
            user(json!({"type": "image", "data": fixtures::PNG, "mimeType": "image/png"})),
            user(text("Please analyze the image above.")),
        ],
        _ => vec![user(text("This is a simple prompt for testing."))],
    };
    Ok(json!({ "messages": messages }))
}
