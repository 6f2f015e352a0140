//! stdio upstreams: one process per scope, line-delimited JSON-RPC on its stdin and stdout,
//! its stderr in our logs.
//!
//! A process is spawned (and initialized) by the first call of its scope, within the node's
//! budgets of processes (`limits.stdio_processes`, and `limits.stdio_processes_per_principal`
//! for the principal the scope belongs to), and killed when the scope closes (DELETE, idle
//! timeout), when the call that spawned it is dropped before its handshake finished (its
//! client went away), or, as a last resort, when the node exits (`kill_on_drop`). When it
//! dies, every request in flight gets a JSON-RPC error saying so, and the next call spawns a
//! new one, replaying the stored `initialize` params. A line longer than
//! `limits.upstream_message_bytes` is not read: the process is stopped, its calls told why.
//!
//! Responses find their call by our id. Notifications and requests carry no id of a call, so
//! they go to the call whose progress token they name, else to the only call in flight, else
//! to the session's standalone stream.

use super::{Caller, Exchange, cancelled, notification, outcome, unavailable};
use crate::budget::{Budgets, Exhausted, Gauge, Held, Tallied, Tally};
use crate::config::StdioConfig;
use crate::upstream::Scope;
use futures_util::StreamExt;
use http::StatusCode;
use serde_json::Value;
use shardgate_protocol::mcp::{Message, RpcError, code};
use std::collections::HashMap;
use std::process::Stdio as Piped;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;

/// One scope's process, once there is one.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Process>>>>;

pub(super) struct Stdio {
    name: String,
    config: StdioConfig,
    processes: Arc<Gauge>,
    per_principal: Arc<Tally>,
    /// Longest line read from a process.
    max_line: usize,
    timeout: Duration,
    slots: Mutex<HashMap<Scope, Slot>>,
}

struct Process {
    name: String,
    pid: Option<u32>,
    stdin: tokio::sync::Mutex<ChildStdin>,
    pending: Mutex<HashMap<u64, Pending>>,
    /// Where messages go that belong to no call in flight.
    standalone: Arc<Caller>,
    /// Cancelled to kill the process.
    kill: CancellationToken,
    /// Cancelled once the process has exited and its calls have been told.
    exited: CancellationToken,
    /// Why the process was stopped, when it was not its own doing.
    stopped_for: Mutex<Option<String>>,
    /// Held while the process lives: the node's budgets of processes.
    _counted: (Held, Tallied),
}

/// A process no scope holds yet: killed on drop, unless its handshake finished and it was
/// handed over. A client that goes away mid-handshake drops it, and with it the process.
struct Unclaimed(Option<Arc<Process>>);

impl Unclaimed {
    fn claim(mut self) -> Option<Arc<Process>> {
        self.0.take()
    }
}

impl Drop for Unclaimed {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            p.kill.cancel();
        }
    }
}

struct Pending {
    answer: oneshot::Sender<Result<Value, RpcError>>,
    caller: Arc<Caller>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Stdio {
    pub fn new(name: &str, config: StdioConfig, budgets: &Budgets) -> Self {
        Stdio {
            name: name.to_owned(),
            timeout: Duration::from_secs(config.request_timeout_secs),
            config,
            processes: budgets.processes.clone(),
            per_principal: budgets.processes_per_principal.clone(),
            max_line: budgets.limits.upstream_message_bytes,
            slots: Mutex::default(),
        }
    }

    /// A unit of each process budget, or the error naming the one that is spent.
    fn count(&self, principal: &str) -> Result<(Held, Tallied), RpcError> {
        let spent = |key, limit, what| {
            let mut err = Exhausted::new(key, limit, what, StatusCode::SERVICE_UNAVAILABLE).error();
            err.message = format!("upstream {}: {}", self.name, err.message);
            err
        };
        let node = self.processes.take(1).ok_or_else(|| {
            spent(
                "stdio_processes",
                self.processes.limit(),
                "stdio upstream processes this node runs",
            )
        })?;
        let mine = self.per_principal.take(principal).ok_or_else(|| {
            spent(
                "stdio_processes_per_principal",
                self.per_principal.limit(),
                "stdio upstream processes of one principal",
            )
        })?;
        Ok((node, mine))
    }

    fn slot(&self, scope: &Scope) -> Slot {
        lock(&self.slots).entry(scope.clone()).or_default().clone()
    }

    /// Serves one request on the scope's process, starting one if there is none.
    pub async fn request(
        &self,
        ex: &Exchange,
        method: &str,
        params: Value,
    ) -> Result<Value, RpcError> {
        let process = self.process(ex).await?;
        process.request(ex, method, params, self.timeout).await
    }

    /// The client's `initialize`: always a fresh process, whose answer is the client's.
    pub async fn initialize(&self, ex: &Exchange) -> Result<Value, RpcError> {
        let slot = self.slot(&ex.scope);
        let mut held = slot.lock().await;
        if let Some(old) = held.take() {
            old.kill.cancel();
        }
        let (process, result) = self.spawn(ex).await?;
        *held = Some(process);
        Ok(result)
    }

    /// The upstream's `InitializeResult`, starting the process if need be.
    pub async fn initialized(&self, ex: &Exchange) -> Result<Value, RpcError> {
        self.process(ex).await?;
        ex.initialize_result()
            .ok_or_else(|| unavailable(&self.name, "no InitializeResult"))
    }

    async fn process(&self, ex: &Exchange) -> Result<Arc<Process>, RpcError> {
        let slot = self.slot(&ex.scope);
        let mut held = slot.lock().await;
        if let Some(p) = held.as_ref().filter(|p| !p.exited.is_cancelled()) {
            return Ok(p.clone());
        }
        let (process, _) = self.spawn(ex).await?;
        *held = Some(process.clone());
        Ok(process)
    }

    /// Starts a process and runs the `initialize` handshake with the scope's params.
    async fn spawn(&self, ex: &Exchange) -> Result<(Arc<Process>, Value), RpcError> {
        let counted = self.count(&ex.principal)?;
        let mut command = Command::new(&self.config.command);
        command
            .args(&self.config.args)
            .envs(&self.config.env)
            .stdin(Piped::piped())
            .stdout(Piped::piped())
            .stderr(Piped::piped())
            .kill_on_drop(true);
        if let Some(cwd) = &self.config.cwd {
            command.current_dir(cwd);
        }
        let mut child = command.spawn().map_err(|e| {
            unavailable(
                &self.name,
                format!("cannot start {}: {e}", self.config.command),
            )
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(unavailable(&self.name, "the process has no pipes"));
        };
        let pid = child.id();
        // The scope names a session, whose id is a credential: debug only.
        tracing::info!(upstream = %self.name, pid, "stdio upstream started");
        tracing::debug!(upstream = %self.name, scope = %ex.scope, pid, "stdio upstream scope");
        tokio::spawn(log_stderr(self.name.clone(), pid, stderr));
        let process = Arc::new(Process {
            name: self.name.clone(),
            pid,
            stdin: tokio::sync::Mutex::new(stdin),
            pending: Mutex::default(),
            standalone: ex.standalone(),
            kill: CancellationToken::new(),
            exited: CancellationToken::new(),
            stopped_for: Mutex::default(),
            _counted: counted,
        });
        tokio::spawn(process.clone().run(child, stdout, self.max_line));
        let unclaimed = Unclaimed(Some(process.clone()));
        let handshake = async {
            let result = process
                .request(ex, "initialize", ex.initialize.clone(), self.timeout)
                .await?;
            process
                .send(&notification("notifications/initialized", Value::Null))
                .await?;
            Ok::<_, RpcError>(result)
        };
        // On failure, or if this future is dropped, `unclaimed` kills the process.
        let result = handshake.await?;
        ex.keep_initialize_result(&result);
        let process = unclaimed.claim().unwrap_or(process);
        Ok((process, result))
    }

    /// A client notification, for the scope's process if it has one (none means nothing to
    /// tell: a process started later learns the client's state by `initialize`).
    pub fn notify(&self, scope: &Scope, method: &str, params: Value) {
        let Some(slot) = lock(&self.slots).get(scope).cloned() else {
            return;
        };
        let msg = notification(method, params);
        tokio::spawn(async move {
            let process = slot.lock().await.clone();
            if let Some(p) = process {
                // A dead process cannot be told; its calls have been told it died.
                let _ = p.send(&msg).await;
            }
        });
    }

    pub fn close(&self, scope: &Scope) {
        let Some(slot) = lock(&self.slots).remove(scope) else {
            return;
        };
        tokio::spawn(async move {
            if let Some(p) = slot.lock().await.take() {
                p.kill.cancel();
            }
        });
    }
}

/// Cancels a request at the upstream if its call ends before the answer does.
struct InFlight {
    process: Arc<Process>,
    id: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if lock(&self.process.pending).remove(&self.id).is_none() {
            return;
        }
        let process = self.process.clone();
        let msg = cancelled(self.id);
        tokio::spawn(async move {
            let _ = process.send(&msg).await;
        });
    }
}

impl Process {
    async fn request(
        self: &Arc<Self>,
        ex: &Exchange,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, RpcError> {
        let (id, msg, caller) = ex.outgoing(method, params);
        let (answer, answered) = oneshot::channel();
        if self.exited.is_cancelled() {
            return Err(self.gone());
        }
        lock(&self.pending).insert(id, Pending { answer, caller });
        let _in_flight = InFlight {
            process: self.clone(),
            id,
        };
        self.send(&msg).await?;
        match tokio::time::timeout(timeout, answered).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(self.gone()),
            Err(_) => Err(unavailable(
                &self.name,
                format!("no answer to {method} within {}s", timeout.as_secs()),
            )),
        }
    }

    async fn send(&self, msg: &Value) -> Result<(), RpcError> {
        let mut line = msg.to_string().into_bytes();
        line.push(b'\n');
        let mut stdin = self.stdin.lock().await;
        stdin.write_all(&line).await.map_err(|_| self.gone())?;
        stdin.flush().await.map_err(|_| self.gone())
    }

    fn gone(&self) -> RpcError {
        let pid = self.pid.map_or_else(|| "?".to_owned(), |p| p.to_string());
        let why = lock(&self.stopped_for).clone();
        RpcError::new(
            code::INTERNAL_ERROR,
            match why {
                Some(why) => format!(
                    "upstream {}: the process (pid {pid}) was stopped: {why}",
                    self.name
                ),
                None => format!(
                    "upstream {}: the process (pid {pid}) exited before answering",
                    self.name
                ),
            },
        )
    }

    /// Reads the process's messages until it exits or is killed, then tells its calls.
    async fn run(
        self: Arc<Self>,
        mut child: Child,
        stdout: tokio::process::ChildStdout,
        max_line: usize,
    ) {
        let mut lines = FramedRead::new(stdout, LinesCodec::new_with_max_length(max_line));
        loop {
            tokio::select! {
                line = lines.next() => match line {
                    Some(Ok(line)) => self.dispatch(&line),
                    Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                        tracing::warn!(upstream = %self.name, pid = self.pid, max_line, "stdio upstream wrote a line over limits.upstream_message_bytes; stopping it");
                        *lock(&self.stopped_for) = Some(format!(
                            "it wrote a message over limits.upstream_message_bytes ({max_line} bytes)"
                        ));
                        break;
                    }
                    Some(Err(LinesCodecError::Io(_))) | None => break,
                },
                _ = self.kill.cancelled() => break,
            }
        }
        // Also when only stdout closed: a process we cannot hear is of no use.
        let _ = child.start_kill();
        let status = child.wait().await;
        tracing::info!(upstream = %self.name, pid = self.pid, ?status, "stdio upstream exited");
        self.exited.cancel();
        let pending: Vec<Pending> = lock(&self.pending).drain().map(|(_, p)| p).collect();
        for p in pending {
            let _ = p.answer.send(Err(self.gone()));
        }
    }

    fn dispatch(self: &Arc<Self>, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            tracing::warn!(upstream = %self.name, line, "stdio upstream wrote a line that is not JSON");
            return;
        };
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        match Message::classify(&msg) {
            Some(Message::Response { id }) => {
                let waiting = id.as_u64().and_then(|id| lock(&self.pending).remove(&id));
                match waiting {
                    Some(p) => {
                        let _ = p.answer.send(outcome(&msg));
                    }
                    None => {
                        tracing::debug!(upstream = %self.name, %id, "answer to no request in flight")
                    }
                }
            }
            Some(Message::Notification { method }) => {
                self.caller_for(&params).notify(&method, params);
            }
            Some(Message::Request { id, method }) => {
                let caller = self.caller_for(&params);
                let process = self.clone();
                tokio::spawn(async move {
                    let reply = caller.answer(&id, &method, params).await;
                    let _ = process.send(&reply).await;
                });
            }
            None => {
                tracing::warn!(upstream = %self.name, line, "stdio upstream wrote something that is not JSON-RPC");
            }
        }
    }

    /// Who a message without a call's id is for; see the module documentation.
    fn caller_for(&self, params: &Value) -> Arc<Caller> {
        let pending = lock(&self.pending);
        if let Some(p) = pending.values().find(|p| p.caller.owns_progress(params)) {
            return p.caller.clone();
        }
        match pending.values().next() {
            Some(only) if pending.len() == 1 => only.caller.clone(),
            _ => self.standalone.clone(),
        }
    }
}

async fn log_stderr(name: String, pid: Option<u32>, stderr: tokio::process::ChildStderr) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(upstream = %name, pid, "stderr: {line}");
    }
}
