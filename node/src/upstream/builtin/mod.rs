//! placeholder
use super::*;
use crate::protocol::code;
#[derive(Default)]
pub struct Builtin;
impl Upstream for Builtin {
    fn call(&self, call: Call) -> BoxFuture<'static, Result<Value, RpcError>> {
        Box::pin(async move { Err(RpcError::new(code::METHOD_NOT_FOUND, call.method)) })
    }
    fn notification(&self, _method: &str, _params: &Value, _state: &UpstreamState) {}
}
impl Builtin {
    pub fn new(_secret: [u8; 32]) -> Self {
        Builtin
    }
}
