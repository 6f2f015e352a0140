//! The tools and the prompt that ask the client for input, written as steps for
//! [`super::mrtr`]: the same code answers a stateless-era retry with `inputResponses` and a
//! session-era call that asks over the session.
//!
//! Keys, messages and schemas are the ones the conformance suite asks for by name (`user_name`,
//! `sample_request`, `confirm`, `step1`/`step2`, `user_context`, …).

use super::mrtr::{Round, Step, StepFn, elicit, list_roots, requests, sample, supports};
use super::{fixtures, text, tool_error};
use serde_json::{Map, Value, json};
use shardgate_protocol::mcp::RpcError;

/// The step function of an asking tool.
pub(super) fn tool(name: &str) -> Option<StepFn> {
    Some(match name {
        "test_sampling" => sampling,
        "test_elicitation" => elicitation,
        "test_elicitation_sep1034_defaults" => sep1034,
        "test_elicitation_sep1330_enums" => sep1330,
        "test_input_required_result_elicitation" => user_name,
        "test_input_required_result_sampling" => capital,
        "test_input_required_result_list_roots" => roots,
        "test_input_required_result_request_state" => request_state,
        "test_input_required_result_multiple_inputs" => multiple_inputs,
        "test_input_required_result_multi_round" => multi_round,
        "test_input_required_result_tampered_state" => tampered_state,
        "test_input_required_result_capabilities" => capabilities,
        _ => return None,
    })
}

/// The step function of an asking prompt.
pub(super) fn prompt(name: &str) -> Option<StepFn> {
    (name == "test_input_required_result_prompt").then_some(context_prompt as StepFn)
}

fn ask(requests: Map<String, Value>, state: Option<Value>) -> Result<Step, RpcError> {
    Ok(Step::Ask { requests, state })
}

fn done(result: Value) -> Result<Step, RpcError> {
    Ok(Step::Done(result))
}

/// A form with one required field of `kind`.
fn form(field: &str, kind: &str) -> Value {
    json!({
        "type": "object",
        "properties": {field: {"type": kind}},
        "required": [field]
    })
}

/// The round the carried-over state is in (0 before the first question).
fn round_of(r: &Round<'_>) -> u64 {
    r.state_field("round").and_then(Value::as_u64).unwrap_or(0)
}

fn sampling(r: &Round<'_>) -> Result<Step, RpcError> {
    let Some(prompt) = r.args.get("prompt").and_then(Value::as_str) else {
        return done(tool_error("argument 'prompt' must be a string"));
    };
    match r.sampled("completion")? {
        Some(answer) => done(text(&format!("LLM response: {answer}"))),
        None => ask(requests([("completion", sample(prompt, 100))]), None),
    }
}

fn elicitation(r: &Round<'_>) -> Result<Step, RpcError> {
    let Some(message) = r.args.get("message").and_then(Value::as_str) else {
        return done(tool_error("argument 'message' must be a string"));
    };
    match r.elicited("user_info")? {
        Some(answer) => done(text(&format!("User response: {}", answer.describe()))),
        None => ask(
            requests([("user_info", elicit(message, fixtures::user_info_form()))]),
            None,
        ),
    }
}

fn sep1034(r: &Round<'_>) -> Result<Step, RpcError> {
    form_tool(
        r,
        "Please review and update the form fields with defaults",
        fixtures::sep1034_form(),
    )
}

fn sep1330(r: &Round<'_>) -> Result<Step, RpcError> {
    form_tool(
        r,
        "Please select options from the enum fields",
        fixtures::sep1330_form(),
    )
}

fn form_tool(r: &Round<'_>, message: &str, schema: Value) -> Result<Step, RpcError> {
    match r.elicited("form")? {
        Some(answer) => done(text(&format!(
            "Elicitation completed: {}",
            answer.describe()
        ))),
        None => ask(requests([("form", elicit(message, schema))]), None),
    }
}

fn user_name(r: &Round<'_>) -> Result<Step, RpcError> {
    match r.elicited("user_name")? {
        Some(a) if a.accepted() => done(text(&format!(
            "Hello, {}!",
            a.text("name").unwrap_or("friend")
        ))),
        Some(a) => done(text(&format!("No name given ({})", a.action))),
        None => ask(
            requests([(
                "user_name",
                elicit("What is your name?", form("name", "string")),
            )]),
            None,
        ),
    }
}

fn capital(r: &Round<'_>) -> Result<Step, RpcError> {
    match r.sampled("sample_request")? {
        Some(answer) => done(text(&format!("Sampling result: {answer}"))),
        None => ask(
            requests([(
                "sample_request",
                sample("What is the capital of France?", 100),
            )]),
            None,
        ),
    }
}

fn roots(r: &Round<'_>) -> Result<Step, RpcError> {
    match r.roots("client_roots")? {
        Some(uris) => done(text(&format!(
            "Found {} root(s): {}",
            uris.len(),
            uris.join(", ")
        ))),
        None => ask(requests([("client_roots", list_roots())]), None),
    }
}

fn confirm() -> Map<String, Value> {
    requests([("confirm", elicit("Please confirm", form("ok", "boolean")))])
}

/// Completes only with the state it handed out, proving the round trip.
fn request_state(r: &Round<'_>) -> Result<Step, RpcError> {
    match (round_of(r), r.elicited("confirm")?) {
        (1, Some(a)) => {
            let confirmed = a.accepted() && a.content.get("ok") == Some(&Value::Bool(true));
            done(text(&format!(
                "state-ok: requestState validated (confirmed: {confirmed})"
            )))
        }
        _ => ask(confirm(), Some(json!({"round": 1}))),
    }
}

/// The sealing itself rejects a tampered state; this only has to hand one out.
fn tampered_state(r: &Round<'_>) -> Result<Step, RpcError> {
    match (round_of(r), r.elicited("confirm")?) {
        (1, Some(_)) => done(text("integrity-ok: state verified")),
        _ => ask(confirm(), Some(json!({"round": 1}))),
    }
}

/// Three kinds of input at once; answers that arrive are kept in the state, so a partial retry
/// is asked only for what is still missing.
fn multiple_inputs(r: &Round<'_>) -> Result<Step, RpcError> {
    let mut got = r
        .state
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(a) = r.elicited("user_name")? {
        let name = a.text("name").filter(|_| a.accepted()).unwrap_or("friend");
        got.insert("name".into(), name.into());
    }
    if let Some(greeting) = r.sampled("greeting")? {
        got.insert("greeting".into(), greeting.into());
    }
    if let Some(uris) = r.roots("client_roots")? {
        got.insert("roots".into(), uris.into());
    }
    if let (Some(name), Some(greeting), Some(roots)) = (
        got.get("name").and_then(Value::as_str),
        got.get("greeting").and_then(Value::as_str),
        got.get("roots").and_then(Value::as_array),
    ) {
        return done(text(&format!(
            "Name: {name}; Greeting: {greeting}; Roots: {}",
            roots.len()
        )));
    }
    let mut missing = Map::new();
    if !got.contains_key("name") {
        missing.insert(
            "user_name".into(),
            elicit("What is your name?", form("name", "string")),
        );
    }
    if !got.contains_key("greeting") {
        missing.insert("greeting".into(), sample("Generate a greeting", 50));
    }
    if !got.contains_key("roots") {
        missing.insert("client_roots".into(), list_roots());
    }
    got.insert("round".into(), (round_of(r) + 1).into());
    ask(missing, Some(Value::Object(got)))
}

fn multi_round(r: &Round<'_>) -> Result<Step, RpcError> {
    let step1 = || {
        ask(
            requests([(
                "step1",
                elicit("Step 1: What is your name?", form("name", "string")),
            )]),
            Some(json!({"round": 1})),
        )
    };
    match round_of(r) {
        1 => match r.elicited("step1")? {
            Some(a) => {
                let name = a.text("name").filter(|_| a.accepted()).unwrap_or("friend");
                ask(
                    requests([(
                        "step2",
                        elicit(
                            "Step 2: What is your favorite color?",
                            form("color", "string"),
                        ),
                    )]),
                    Some(json!({"round": 2, "name": name})),
                )
            }
            None => step1(),
        },
        2 => {
            let name = r
                .state_field("name")
                .and_then(Value::as_str)
                .unwrap_or("friend");
            match r.elicited("step2")? {
                Some(a) => {
                    let color = a
                        .text("color")
                        .filter(|_| a.accepted())
                        .unwrap_or("no colour");
                    done(text(&format!(
                        "Multi-round complete for {name} who likes {color}"
                    )))
                }
                None => ask(
                    requests([(
                        "step2",
                        elicit(
                            "Step 2: What is your favorite color?",
                            form("color", "string"),
                        ),
                    )]),
                    Some(json!({"round": 2, "name": name})),
                ),
            }
        }
        _ => step1(),
    }
}

/// Asks only for what the client declared it can do (SEP-2322 capability check).
fn capabilities(r: &Round<'_>) -> Result<Step, RpcError> {
    let mut wanted = Map::new();
    if supports(r.caps, "elicitation/create") {
        wanted.insert(
            "elicit_input".into(),
            elicit("Elicitation input", form("value", "string")),
        );
    }
    if supports(r.caps, "sampling/createMessage") {
        wanted.insert("sample_input".into(), sample("Sample request", 50));
    }
    if supports(r.caps, "roots/list") {
        wanted.insert("client_roots".into(), list_roots());
    }
    if wanted.is_empty() {
        return done(text("No supported capabilities declared"));
    }
    let mut answered = 0;
    for key in wanted.keys() {
        let present = match key.as_str() {
            "elicit_input" => r.elicited(key)?.is_some(),
            "sample_input" => r.sampled(key)?.is_some(),
            _ => r.roots(key)?.is_some(),
        };
        answered += usize::from(present);
    }
    if answered == wanted.len() && round_of(r) == 1 {
        let keys = wanted.keys().cloned().collect::<Vec<_>>().join(",");
        return done(text(&format!("capabilities-ok: received {keys}")));
    }
    ask(wanted, Some(json!({"round": 1})))
}

fn context_prompt(r: &Round<'_>) -> Result<Step, RpcError> {
    match r.elicited("user_context")? {
        Some(a) => {
            let context = a.text("context").filter(|_| a.accepted()).unwrap_or("none");
            done(json!({
                "description": "A prompt built from context the user supplied",
                "messages": [{
                    "role": "user",
                    "content": {"type": "text", "text": format!("Prompt with context: {context}")}
                }]
            }))
        }
        None => ask(
            requests([(
                "user_context",
                elicit(
                    "What context should the prompt use?",
                    form("context", "string"),
                ),
            )]),
            None,
        ),
    }
}
