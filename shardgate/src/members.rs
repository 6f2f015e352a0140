//! The `--members` list: `node-0=127.0.0.1:7100/127.0.0.1:7101,node-1=…`, a static membership
//! view: each node's session listener, then its internal listener.

use shardgate_raft::{Member, MemberState, Membership, NodeId, RingScheme};

/// Parses `id=session/internal[*weight]` entries separated by commas.
pub fn parse(list: &str, epoch: u64) -> Result<Membership, String> {
    let mut members = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, rest) = entry
            .split_once('=')
            .ok_or_else(|| format!("member {entry:?} is not id=host:port/host:port"))?;
        let (addr, weight) = match rest.split_once('*') {
            Some((addr, w)) => (
                addr,
                w.parse()
                    .map_err(|_| format!("member {id}: weight {w:?} is not a number"))?,
            ),
            None => (rest, 1),
        };
        let (session, internal) = addr.split_once('/').ok_or_else(|| {
            format!("member {id}: {addr:?} is not session-host:port/internal-host:port")
        })?;
        members.push(Member {
            id: NodeId(id.to_owned()),
            addr: internal.to_owned(),
            session_addr: session.to_owned(),
            state: MemberState::Active,
            weight,
        });
    }
    let membership = Membership {
        cluster: None,
        ring: RingScheme::Rendezvous,
        epoch,
        members,
    };
    membership.validate().map_err(|e| e.to_string())?;
    Ok(membership)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_and_weights() {
        let m = parse(
            "node-0=127.0.0.1:1/127.0.0.1:5, node-1=127.0.0.1:2/127.0.0.1:6*3",
            4,
        )
        .expect("valid");
        assert_eq!(m.epoch, 4);
        assert_eq!(m.members.len(), 2);
        assert_eq!(m.members[0].session_addr, "127.0.0.1:1");
        assert_eq!(m.members[0].addr, "127.0.0.1:5");
        assert_eq!(m.members[1].weight, 3);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("node-0", 1).is_err());
        assert!(parse("node-0=1:1", 1).is_err(), "no internal listener");
        assert!(parse("a=1:1/1:3,a=1:2/1:4", 1).is_err());
        assert!(parse("a=1:1/1:3*x", 1).is_err());
    }
}
