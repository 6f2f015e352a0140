//! The limits and timeouts of a listener, their presets (the defaults), and fitting them under
//! the process's descriptor table.

use std::time::Duration;

/// The limits and timeouts of one listener. The presets are the defaults: [`Self::CLIENT`]
/// (also [`Default`]) for a port anyone may reach, [`Self::ADMIN`], [`Self::NODE_SESSION`] and
/// [`Self::NODE_INTERNAL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// How long an HTTP/1.1 request head may take from its first byte.
    pub header_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    /// How long a request body may go without sending anything before it is cut off.
    pub body_timeout: Duration,
    /// How long a connection with no request in flight stays open.
    pub idle_timeout: Duration,
    /// HTTP/2 streams one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// HTTP/2: the largest header list a request may carry, in bytes.
    pub max_header_list_size: u32,
    /// HTTP/2: streams the peer may reset before they were taken up, at once; beyond that the
    /// connection is closed (the guard against floods of opened-and-reset streams).
    pub max_pending_resets: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self::CLIENT
    }
}

impl ListenerLimits {
    /// A client-facing listener (the gateway's `/mcp` port).
    pub const CLIENT: ListenerLimits = ListenerLimits {
        max_connections: 10_000,
        header_timeout: Duration::from_secs(10),
        tls_handshake_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(60),
        max_concurrent_streams: 256,
        max_header_list_size: 16 * 1024,
        max_pending_resets: 20,
    };

    /// An admin listener (`/health`, `/metrics`): probes and scrapers need few connections.
    pub const ADMIN: ListenerLimits = ListenerLimits {
        max_connections: 256,
        ..Self::CLIENT
    };

    /// A node's session listener. Each gateway multiplexes every SSE stream to this node over
    /// one pooled HTTP/2 connection, hence the stream limit. The idle timeout outlasts the
    /// gateways' pool (90 s), so that the pool, and not the node, retires an idle connection.
    /// A node that stalls (a pause, a frozen process) wakes to the resets of every call its
    /// clients gave up meanwhile, all on that one connection: closing it for them would cut
    /// every other stream it carries too, hence the reset allowance.
    pub const NODE_SESSION: ListenerLimits = ListenerLimits {
        max_connections: 4_096,
        idle_timeout: Duration::from_secs(300),
        max_concurrent_streams: 100_000,
        max_pending_resets: 100_000,
        ..Self::CLIENT
    };

    /// A node's internal listener: Raft and cluster RPCs, membership long polls, operators.
    /// Its clients pool for 90 s, so it keeps idle connections longer, as the session one. A
    /// node that stalls wakes to the resets of the RPCs and long polls its peers gave up
    /// meanwhile (chaos runs saw more than the client listener's 20 after a freeze): closing
    /// the connection for them would cut a peer's other calls too, hence a larger allowance,
    /// still bounded since only nodes, gateways and operators reach this port.
    pub const NODE_INTERNAL: ListenerLimits = ListenerLimits {
        max_connections: 4_096,
        idle_timeout: Duration::from_secs(300),
        max_pending_resets: 1_024,
        ..Self::CLIENT
    };

    /// These limits with the four timeouts of `other`.
    pub fn with_timeouts_of(self, other: &ListenerLimits) -> ListenerLimits {
        ListenerLimits {
            header_timeout: other.header_timeout,
            tls_handshake_timeout: other.tls_handshake_timeout,
            body_timeout: other.body_timeout,
            idle_timeout: other.idle_timeout,
            ..self
        }
    }

    pub fn validate(&self) -> Result<(), LimitsError> {
        let zero = [
            ("max connections", self.max_connections == 0),
            ("header timeout", self.header_timeout.is_zero()),
            (
                "TLS handshake timeout",
                self.tls_handshake_timeout.is_zero(),
            ),
            ("body timeout", self.body_timeout.is_zero()),
            ("idle timeout", self.idle_timeout.is_zero()),
            ("max concurrent streams", self.max_concurrent_streams == 0),
            ("max header list size", self.max_header_list_size == 0),
            ("max pending resets", self.max_pending_resets == 0),
        ];
        if let Some((what, _)) = zero.iter().find(|(_, zero)| *zero) {
            return Err(LimitsError::Zero(what));
        }
        if u32::try_from(self.max_connections).is_err() {
            return Err(LimitsError::TooManyConnections(self.max_connections));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitsError {
    #[error("{0} must be positive")]
    Zero(&'static str),
    #[error("max connections {0} is beyond any descriptor table")]
    TooManyConnections(usize),
}

/// Caps the connection limits of a process's `listeners` so that together they stay within
/// three quarters of its descriptor table (`table`, the soft `RLIMIT_NOFILE`), scaling each
/// down in proportion. The last quarter is for what the process opens itself: connections to
/// nodes and upstreams, upstream processes' pipes, files. Returns the configured total when it
/// had to cap, for the caller to warn about.
pub fn fit_to_descriptors(listeners: &mut [&mut ListenerLimits], table: u64) -> Option<usize> {
    let budget = u128::from(table) * 3 / 4;
    let total: usize = listeners.iter().map(|l| l.max_connections).sum();
    if total as u128 <= budget {
        return None;
    }
    for l in listeners.iter_mut() {
        let share = l.max_connections as u128 * budget / total as u128;
        l.max_connections = (share as usize).max(1);
    }
    Some(total)
}
