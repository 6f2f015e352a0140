//! The `--members` list: `node-0=127.0.0.1:7100,node-1=…`, a static membership view.

use shardgate_raft::{Member, MemberState, Membership, NodeId};

/// Parses `id=addr[*weight]` entries separated by commas.
pub fn parse(list: &str, epoch: u64) -> Result<Membership, String> {
    let mut members = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, rest) = entry
            .split_once('=')
            .ok_or_else(|| format!("member {entry:?} is not id=host:port"))?;
        let (addr, weight) = match rest.split_once('*') {
            Some((addr, w)) => (
                addr,
                w.parse()
                    .map_err(|_| format!("member {id}: weight {w:?} is not a number"))?,
            ),
            None => (rest, 1),
        };
        members.push(Member {
            id: NodeId(id.to_owned()),
            addr: addr.to_owned(),
            state: MemberState::Active,
            weight,
        });
    }
    let membership = Membership { epoch, members };
    membership.validate().map_err(|e| e.to_string())?;
    Ok(membership)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_and_weights() {
        let m = parse("node-0=127.0.0.1:1, node-1=127.0.0.1:2*3", 4).expect("valid");
        assert_eq!(m.epoch, 4);
        assert_eq!(m.members.len(), 2);
        assert_eq!(m.members[0].addr, "127.0.0.1:1");
        assert_eq!(m.members[1].weight, 3);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("node-0", 1).is_err());
        assert!(parse("a=1:1,a=1:2", 1).is_err());
        assert!(parse("a=1:1*x", 1).is_err());
    }
}
