//! The hot store: a Redis Cluster, for fast takeover.
//!
//! Every key of a session carries the same hash tag, so they live in one slot of one primary
//! and one Lua script can check the fence and write atomically:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `sg:{<sid>}:owner` | hash | `owner`, `epoch` of the latest claim |
//! | `sg:{<sid>}:record` | string | the [`SessionRecord`] as JSON |
//! | `sg:{<sid>}:tails` | hash | stream number → its last stored seq |
//! | `sg:{<sid>}:s:<stream>` | stream | the events, entry id `<seq>-1`, field `d` = data |
//!
//! A Redis Stream with explicit ids makes the log's rules the server's: entry ids only grow
//! (an event not above the tail is skipped, so a repeated append stores nothing twice),
//! `XTRIM MAXLEN` keeps the newest, and `XRANGE (<after>-1 +` reads what follows a resume
//! point. The id's sequence part is always 1 so that seq 0 (a priming event) is a valid id. The
//! tails hash lists the session's streams for the scripts that touch them all.
//!
//! Each write (claim, write) sets the owner's and the record's expiry to the ttl. The tails hash
//! and the stream keys live longer, one and a half ttl, and are all touched again when half a
//! ttl has passed since they last were (the tails hash's remaining life says when): so they
//! always outlive the record, and a write costs the same however many streams the session
//! keeps. A session is there while its owner key is; a read of a stream checks it, so the
//! events that outlive an expired session are never served, and a claim that finds no owner
//! starts from nothing: it removes whatever a partial loss or an expiry left. Scripts reach stream keys they build from the tag
//! rather than receive as `KEYS`; they are in the same slot, which is what a cluster requires.
//! Numbers cross the scripts as decimal strings and are compared as such, never as Lua's
//! floating-point numbers (only an argument count and the ttl are converted).

use crate::record::{Claimed, Fence, Replay, SessionRecord, StoredEvent};
use crate::{Changes, StoreError, ordered, ttl_millis};
use ::redis::Script;
use ::redis::cluster::{ClusterClient, ClusterClientBuilder};
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::runtime::RuntimeFlavor;
use tokio::sync::OnceCell;

/// How long [`SessionStore::replicate`](crate::SessionStore::replicate) waits for a replica to
/// acknowledge a session's writes: well above a replica's round trip, well below the client
/// timeout of a request that waits for it.
const REPLICA_WAIT: Duration = Duration::from_secs(1);

/// Helpers every script starts with. `KEYS` = owner, record, tails; `ARGV` = owner, epoch, ttl
/// in milliseconds, the stream key prefix, then the script's own.
const PRELUDE: &str = r"
local function less(a, b)
  return #a < #b or (#a == #b and a < b)
end
local function touch(appended)
  local ttl, prefix = ARGV[3], ARGV[4]
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  local left = redis.call('PTTL', KEYS[3])
  if left < tonumber(ttl) then
    local long = math.floor(tonumber(ttl) * 3 / 2)
    redis.call('PEXPIRE', KEYS[3], long)
    for _, stream in ipairs(redis.call('HKEYS', KEYS[3])) do
      redis.call('PEXPIRE', prefix .. stream, long)
    end
  else
    for stream in pairs(appended) do
      redis.call('PEXPIRE', prefix .. stream, left)
    end
  end
end
local function wipe()
  for _, stream in ipairs(redis.call('HKEYS', KEYS[3])) do
    redis.call('DEL', ARGV[4] .. stream)
  end
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
end
local function refused()
  local held = redis.call('HMGET', KEYS[1], 'owner', 'epoch')
  if not held[1] then return {'gone'} end
  if held[1] ~= ARGV[1] or held[2] ~= ARGV[2] then return {'fenced', held[1], held[2]} end
  return nil
end
";

/// Returns `ok`, the record (empty when none), then stream, tail pairs.
const CLAIM: &str = r"
local held = redis.call('HMGET', KEYS[1], 'owner', 'epoch')
if held[1] then
  local owner, epoch = held[1], held[2]
  if not (less(epoch, ARGV[2]) or (owner == ARGV[1] and not less(ARGV[2], epoch))) then
    return {'fenced', owner, epoch}
  end
else
  wipe()
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', ARGV[2])
redis.call('PERSIST', KEYS[3])
touch({})
local out = {'ok', redis.call('GET', KEYS[2]) or ''}
for _, v in ipairs(redis.call('HGETALL', KEYS[3])) do out[#out + 1] = v end
return out
";

/// `ARGV[5]` = the record (empty: kept as it is), `ARGV[6]` = how many events to keep per
/// stream, `ARGV[7]` = how many streams to forget, those streams, then stream, seq, data triples
/// in order.
const WRITE: &str = r"
local no = refused()
if no then return no end
if ARGV[5] ~= '' then redis.call('SET', KEYS[2], ARGV[5]) end
local forget = tonumber(ARGV[7])
local touched = {}
for i = 8 + forget, #ARGV, 3 do
  local stream, seq = ARGV[i], ARGV[i + 1]
  local tail = redis.call('HGET', KEYS[3], stream)
  if not tail or less(tail, seq) then
    redis.call('XADD', ARGV[4] .. stream, seq .. '-1', 'd', ARGV[i + 2])
    redis.call('HSET', KEYS[3], stream, seq)
    touched[stream] = true
  end
end
for stream in pairs(touched) do
  redis.call('XTRIM', ARGV[4] .. stream, 'MAXLEN', ARGV[6])
end
for i = 8, 7 + forget do
  redis.call('DEL', ARGV[4] .. ARGV[i])
  redis.call('HDEL', KEYS[3], ARGV[i])
end
touch(touched)
return {'ok'}
";

const DELETE: &str = r"
local no = refused()
if no and no[1] == 'fenced' then return no end
wipe()
return {'ok'}
";

/// `KEYS[1]` = the stream, `KEYS[2]` = the session's owner; `ARGV[1]` = the resume point.
/// Returns the oldest entry id, then id, data pairs after the resume point; nothing when the
/// stream holds nothing or the session is gone.
const EVENTS: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 then return {} end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #first == 0 then return {} end
local out = {first[1][1]}
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '(' .. ARGV[1] .. '-1', '+')) do
  out[#out + 1] = e[1]
  out[#out + 1] = e[2][2]
end
return out
";

/// `KEYS` = owner, record. Returns record, owner, epoch; nothing when there is no record.
const LOAD: &str = r"
local record = redis.call('GET', KEYS[2])
if not record then return {} end
local held = redis.call('HMGET', KEYS[1], 'owner', 'epoch')
if not held[1] then return {} end
return {record, held[1], held[2]}
";

struct Scripts {
    claim: Script,
    write: Script,
    delete: Script,
    events: Script,
    load: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    claim: Script::new(&format!("{PRELUDE}{CLAIM}")),
    write: Script::new(&format!("{PRELUDE}{WRITE}")),
    delete: Script::new(&format!("{PRELUDE}{DELETE}")),
    events: Script::new(EVENTS),
    load: Script::new(LOAD),
});

/// Sessions in a Redis Cluster.
#[derive(Clone)]
pub struct RedisStore {
    client: ClusterClient,
    /// The connection of the tasks that may move between threads, and of every thread that
    /// could not open one of its own.
    conn: ClusterConnection,
    /// Tells this store's connections apart from another's on one thread.
    id: u64,
    ttl_ms: u64,
}

/// Stores made so far in this process, for [`RedisStore::id`].
static STORES: AtomicU64 = AtomicU64::new(0);

/// A thread's own connection of one store: opened once, by the first task to need it.
type Near = Arc<OnceCell<Option<ClusterConnection>>>;

thread_local! {
    /// Each store's connection opened on this thread (`None` when opening it failed), for a
    /// single-threaded runtime's tasks. A node serves requests on one such runtime per core,
    /// and a write started there goes out and comes back on its own thread: a connection's
    /// task on another thread costs two wake-ups across threads per write.
    static NEAR: RefCell<Vec<(u64, Near)>> =
        const { RefCell::new(Vec::new()) };
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

/// The keys of one session.
struct Keys {
    owner: String,
    record: String,
    tails: String,
    /// Prefix of its stream keys; the stream number follows.
    streams: String,
}

impl Keys {
    fn of(session_id: &str) -> Keys {
        let base = format!("sg:{{{}}}:", tag(session_id));
        Keys {
            owner: format!("{base}owner"),
            record: format!("{base}record"),
            tails: format!("{base}tails"),
            streams: format!("{base}s:"),
        }
    }
}

/// The session id as a hash tag. Redis hashes what lies between the first `{` and the next `}`,
/// and the whole key when that is empty, so an id that is empty or holds a brace is written as
/// `~` and its hex bytes; an id that starts with `~` is too, so no two ids share a tag.
fn tag(session_id: &str) -> String {
    let plain =
        !session_id.is_empty() && !session_id.starts_with('~') && !session_id.contains(['{', '}']);
    if plain {
        return session_id.to_owned();
    }
    let mut out = String::with_capacity(1 + 2 * session_id.len());
    out.push('~');
    for b in session_id.bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

impl RedisStore {
    /// Connects to a cluster through any of its nodes (`redis://host:port`).
    pub async fn connect(nodes: &[String], ttl: Duration) -> Result<RedisStore, StoreError> {
        let client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(2))
            .build()?;
        let conn = client.get_async_connection().await?;
        Ok(RedisStore {
            client,
            conn,
            id: STORES.fetch_add(1, Ordering::Relaxed),
            ttl_ms: ttl_millis(ttl),
        })
    }

    /// The connection to send on: this thread's own on a single-threaded runtime (opened by
    /// the first task to ask, the others waiting for it), else the shared one. A thread keeps
    /// to the connection it started with, so a session's round of writes and the `WAIT` after
    /// them ([`RedisStore::replicate_now`]) go over one connection.
    async fn conn(&self) -> ClusterConnection {
        let single = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::CurrentThread);
        if !single {
            return self.conn.clone();
        }
        let cell = NEAR.with(|near| {
            let mut near = near.borrow_mut();
            match near.iter().find(|(id, _)| *id == self.id) {
                Some((_, cell)) => cell.clone(),
                None => {
                    let cell = Arc::new(OnceCell::new());
                    near.push((self.id, cell.clone()));
                    cell
                }
            }
        });
        let opened = cell
            .get_or_init(|| async {
                match self.client.get_async_connection().await {
                    Ok(conn) => Some(conn),
                    Err(e) => {
                        tracing::warn!(error = %e, "no Redis connection of this thread's own; sharing one");
                        None
                    }
                }
            })
            .await;
        opened.clone().unwrap_or_else(|| self.conn.clone())
    }

    /// Runs a session script: `KEYS` = owner, record, tails; `ARGV` = fence, ttl, prefix, then
    /// `extra`.
    async fn run(
        &self,
        script: &Script,
        session_id: &str,
        fence: &Fence,
        extra: &[&str],
    ) -> Result<Vec<String>, StoreError> {
        let keys = Keys::of(session_id);
        let mut call = script.key(&keys.owner);
        call.key(&keys.record)
            .key(&keys.tails)
            .arg(&fence.owner)
            .arg(fence.epoch.to_string())
            .arg(self.ttl_ms.to_string())
            .arg(&keys.streams);
        for a in extra {
            call.arg(*a);
        }
        let mut conn = self.conn().await;
        let reply: Vec<String> = call.invoke_async(&mut conn).await?;
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(reply),
            Some("gone") => Err(StoreError::Gone),
            Some("fenced") => Err(StoreError::Fenced {
                owner: reply.get(1).cloned().unwrap_or_default(),
                epoch: number(reply.get(2).map(String::as_str).unwrap_or(""))?,
            }),
            _ => Err(StoreError::corrupt(format!(
                "unexpected script reply {reply:?}"
            ))),
        }
    }

    async fn claim_now(&self, id: &str, fence: &Fence) -> Result<Claimed, StoreError> {
        let reply = self.run(&SCRIPTS.claim, id, fence, &[]).await?;
        let record = match reply.get(1).map(String::as_str) {
            None | Some("") => None,
            Some(json) => Some(serde_json::from_str(json)?),
        };
        let mut tails = BTreeMap::new();
        for pair in reply.get(2..).unwrap_or_default().chunks(2) {
            let [stream, seq] = pair else {
                return Err(StoreError::corrupt("odd tails reply"));
            };
            tails.insert(number(stream)?, number(seq)?);
        }
        Ok(Claimed { record, tails })
    }

    async fn write_now(
        &self,
        id: &str,
        fence: &Fence,
        changes: Changes<'_>,
    ) -> Result<(), StoreError> {
        let record = match changes.record {
            Some(record) => serde_json::to_string(record)?,
            None => String::new(),
        };
        let keep = changes.keep.max(1).to_string();
        let forget: Vec<String> = changes.forget.iter().map(u64::to_string).collect();
        let forgotten = forget.len().to_string();
        let events = ordered(changes.events);
        let numbers: Vec<(String, String)> = events
            .iter()
            .map(|e| (e.stream.to_string(), e.seq.to_string()))
            .collect();
        let mut extra: Vec<&str> = vec![&record, &keep, &forgotten];
        extra.extend(forget.iter().map(String::as_str));
        for (e, (stream, seq)) in events.iter().zip(&numbers) {
            extra.extend([stream.as_str(), seq.as_str(), e.data.as_str()]);
        }
        self.run(&SCRIPTS.write, id, fence, &extra).await.map(drop)
    }

    async fn events_now(&self, id: &str, stream: u64, after: u64) -> Result<Replay, StoreError> {
        let keys = Keys::of(id);
        let key = format!("{}{stream}", keys.streams);
        let mut conn = self.conn().await;
        let reply: Vec<String> = SCRIPTS
            .events
            .key(&key)
            .key(&keys.owner)
            .arg(after.to_string())
            .invoke_async(&mut conn)
            .await?;
        let Some((oldest, rest)) = reply.split_first() else {
            return Ok(Replay::default());
        };
        let mut replay = Replay {
            oldest: Some(entry_seq(oldest)?),
            events: Vec::with_capacity(rest.len() / 2),
        };
        for pair in rest.chunks(2) {
            let [entry, data] = pair else {
                return Err(StoreError::corrupt("odd events reply"));
            };
            replay.events.push(StoredEvent {
                stream,
                seq: entry_seq(entry)?,
                data: data.clone(),
            });
        }
        Ok(replay)
    }

    async fn load_now(&self, id: &str) -> Result<Option<(SessionRecord, Fence)>, StoreError> {
        let keys = Keys::of(id);
        let mut conn = self.conn().await;
        let reply: Vec<String> = SCRIPTS
            .load
            .key(&keys.owner)
            .key(&keys.record)
            .invoke_async(&mut conn)
            .await?;
        match reply.as_slice() {
            [] => Ok(None),
            [record, owner, epoch] => Ok(Some((
                serde_json::from_str(record)?,
                Fence {
                    owner: owner.clone(),
                    epoch: number(epoch)?,
                },
            ))),
            _ => Err(StoreError::corrupt("unexpected load reply")),
        }
    }

    async fn delete_now(&self, id: &str, fence: &Fence) -> Result<(), StoreError> {
        self.run(&SCRIPTS.delete, id, fence, &[]).await.map(drop)
    }

    /// `WAIT 1` on the primary that owns the session's slot. `WAIT` counts the replicas that
    /// have every write made so far on the connection it is sent on, and this handle (with its
    /// clones) sends everything for one primary from one thread over one connection
    /// ([`RedisStore::conn`]), so a replica that has the writes this thread made of the
    /// session has acknowledged them: a node asks from the thread that wrote, after each round
    /// of writes. Two limits follow: writes made through another handle or from another
    /// thread are not covered, and a write whose connection broke before the `WAIT` is not
    /// either. While `WAIT` blocks, so do the commands queued behind it on that connection;
    /// a healthy replica acknowledges within a round trip.
    async fn replicate_now(&self, id: &str) -> Result<(), StoreError> {
        let route = Route::with_key(Keys::of(id).owner, SlotAddr::Master);
        let mut wait = ::redis::cmd("WAIT");
        wait.arg(1)
            .arg(u64::try_from(REPLICA_WAIT.as_millis()).unwrap_or(u64::MAX));
        let mut conn = self.conn().await;
        let reply = conn
            .route_command(
                wait,
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
            )
            .await?;
        let acknowledged: i64 = ::redis::from_redis_value(reply)
            .map_err(|e| StoreError::corrupt(format!("WAIT reply: {e}")))?;
        if acknowledged < 1 {
            return Err(StoreError::Unavailable(format!(
                "no replica acknowledged the session's writes within {REPLICA_WAIT:?}"
            )));
        }
        Ok(())
    }
}

fn number(s: &str) -> Result<u64, StoreError> {
    s.parse()
        .map_err(|_| StoreError::corrupt(format!("not a number: {s:?}")))
}

/// The seq of a stream entry id `<seq>-1`.
fn entry_seq(id: &str) -> Result<u64, StoreError> {
    number(id.split_once('-').map_or(id, |(seq, _)| seq))
}

crate::session_store_by_inherent_methods!(RedisStore, Some("redis"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_session_shares_its_hash_tag() {
        let keys = Keys::of("abc");
        assert_eq!(keys.owner, "sg:{abc}:owner");
        assert_eq!(keys.record, "sg:{abc}:record");
        assert_eq!(keys.tails, "sg:{abc}:tails");
        assert_eq!(keys.streams, "sg:{abc}:s:");
    }

    #[test]
    fn ids_that_would_break_the_tag_are_hex_encoded_without_collisions() {
        assert_eq!(tag("a-b_c"), "a-b_c");
        assert_eq!(tag(""), "~");
        assert_eq!(tag("a}b"), "~617d62");
        assert_eq!(tag("{x"), "~7b78");
        // A plain id that looks like an encoded one is encoded itself.
        assert_eq!(tag("~617d62"), "~7e363137643632");
    }

    #[test]
    fn entry_ids_carry_the_seq() {
        assert_eq!(entry_seq("0-1"), Ok(0));
        assert_eq!(entry_seq("18446744073709551615-1"), Ok(u64::MAX));
        assert!(entry_seq("x-1").is_err());
    }
}
