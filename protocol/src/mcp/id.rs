//! Client request ids, echoed exactly as the client wrote them.
//!
//! serde_json reads a number into an i64, u64 or f64, so an id such as
//! `123456789012345678901234567890` (or `1.50`) would come back as `1.2345678901234568e29` (or
//! `1.5`). Its `arbitrary_precision` feature would keep every number's text instead, but it
//! changes `Value` for the whole build (every crate that links serde_json): each number becomes
//! a heap string, numbers compare by their text (`1e2` no longer equals `100.0`), and numbers
//! inside untagged or flattened serde types no longer deserialize. Only the ids we echo need
//! their text, and only when they are numbers no i64 or u64 holds; so those, and nothing else,
//! keep it.

use super::{Message, RpcError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// A client request's JSON-RPC id, as the client wrote it: the client's own text wherever its
/// value cannot reproduce it, which [`answer`] echoes. The value (it derefs to it) is what ids
/// are matched by: in-flight bookkeeping, `notifications/cancelled`, and messages built as
/// [`Value`]s, which carry the approximation.
#[derive(Clone, Debug)]
pub struct RequestId {
    value: Value,
    /// The client's text, only for a number that `value` does not hold exactly.
    text: Option<Box<RawValue>>,
}

impl RequestId {
    pub fn new(value: Value) -> Self {
        RequestId { value, text: None }
    }

    /// The id as the client wrote it (a JSON string or number).
    pub fn text(&self) -> String {
        match &self.text {
            Some(raw) => raw.get().to_owned(),
            None => self.value.to_string(),
        }
    }
}

impl From<Value> for RequestId {
    fn from(value: Value) -> Self {
        RequestId::new(value)
    }
}

impl std::ops::Deref for RequestId {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.value
    }
}

impl PartialEq for RequestId {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
            && self.text.as_ref().map(|t| t.get()) == other.text.as_ref().map(|t| t.get())
    }
}

/// Exact only with serde_json's text serializer (`to_string`, `to_vec`); `json!` and
/// `to_value` make a [`Value`] of it, which approximates.
impl Serialize for RequestId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.text {
            Some(raw) => raw.serialize(s),
            None => self.value.serialize(s),
        }
    }
}

/// The JSON-RPC response to a client's request (`id` null when it is unknown), as text: the
/// id exactly as the client wrote it.
pub fn answer(id: Option<&RequestId>, outcome: Result<&Value, &RpcError>) -> String {
    #[derive(Serialize)]
    struct Answer<'a> {
        jsonrpc: &'static str,
        id: Option<&'a RequestId>,
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<&'a Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<Value>,
    }
    let (result, error) = match outcome {
        Ok(result) => (Some(result), None),
        Err(e) => (None, Some(e.to_json())),
    };
    let answer = Answer {
        jsonrpc: "2.0",
        id,
        result,
        error,
    };
    // Neither a Value nor a RawValue can fail to serialize (their keys are strings).
    serde_json::to_string(&answer).unwrap_or_default()
}

/// Gives each request of a parsed body whose id is a number no i64 or u64 holds the text the
/// client wrote. Rare (integer and string ids are exact), so only then is the body read again.
pub(super) fn keep_exact(messages: &mut [(Message, Value)], bytes: &[u8], batch: bool) {
    let approximated = |m: &Message| matches!(m, Message::Request { id, .. } if id.is_f64());
    if !messages.iter().any(|(m, _)| approximated(m)) {
        return;
    }
    for ((m, _), text) in messages.iter_mut().zip(id_texts(bytes, batch)) {
        if let (Message::Request { id, .. }, Some(text)) = (m, text)
            && id.is_f64()
        {
            id.text = Some(text);
        }
    }
}

/// The text of each message's `id` in a body, in order (empty if it cannot be read so).
fn id_texts(bytes: &[u8], batch: bool) -> Vec<Option<Box<RawValue>>> {
    #[derive(Deserialize)]
    struct Id<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
    }
    let ids = match batch {
        true => serde_json::from_slice::<Vec<Id>>(bytes),
        false => serde_json::from_slice::<Id>(bytes).map(|one| vec![one]),
    };
    ids.map(|ids| {
        ids.into_iter()
            .map(|i| i.id.map(RawValue::to_owned))
            .collect()
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::{Body, code};
    use serde_json::json;

    #[test]
    fn ids_are_echoed_as_written() {
        for id in [
            "123456789012345678901234567890",
            "1.50",
            "-0.0",
            "7",
            "\"x\"",
        ] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
            let parsed = Body::parse(body.as_bytes()).expect("valid");
            let Message::Request { id: got, .. } = &parsed.messages[0].0 else {
                panic!("a request");
            };
            assert_eq!(got.text(), id);
            let answer = answer(Some(got), Ok(&json!({})));
            assert!(answer.contains(&format!(r#""id":{id}"#)), "{answer}");
        }
        let batch = br#"[{"jsonrpc":"2.0","id":1,"method":"a"},
            {"jsonrpc":"2.0","id":98765432109876543210987654321,"method":"b"}]"#;
        let parsed = Body::parse(batch).expect("valid");
        let ids: Vec<String> = parsed
            .messages
            .iter()
            .filter_map(|(m, _)| match m {
                Message::Request { id, .. } => Some(id.text()),
                _ => None,
            })
            .collect();
        assert_eq!(ids, ["1", "98765432109876543210987654321"]);
        let err = RpcError::new(code::INVALID_REQUEST, "no");
        let refused: Value = serde_json::from_str(&answer(None, Err(&err))).expect("json");
        assert_eq!(refused["id"], Value::Null);
        assert_eq!(refused["error"]["code"], code::INVALID_REQUEST);
    }
}
