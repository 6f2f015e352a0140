//! From configuration to the one [`Upstream`] a node serves: no upstream configured means the
//! builtin; one means that upstream, names untouched; several are federated under prefixes.

use crate::budget::Budgets;
use crate::config::{ConfigError, Kind, NodeFile};
use crate::upstream::Upstream;
use crate::upstream::builtin::Builtin;
use crate::upstream::connector::Connector;
use crate::upstream::federation::{Federation, Member};
use std::sync::Arc;

/// The node's upstream; every connector counts against the node's `budgets` (one budget of
/// stdio processes and parked calls for the whole node, whichever upstreams use them).
pub fn build(
    file: &NodeFile,
    state_secret: [u8; 32],
    budgets: &Arc<Budgets>,
) -> Result<Arc<dyn Upstream>, ConfigError> {
    file.validate()?;
    let mut members = Vec::new();
    for u in &file.upstreams {
        let upstream: Arc<dyn Upstream> = match u.kind()? {
            Kind::Builtin => Arc::new(Builtin::new(state_secret)),
            Kind::Stdio(cfg) => Arc::new(Connector::stdio(&u.name, cfg, budgets.clone())),
            Kind::Http(cfg) => {
                Arc::new(Connector::http(&u.name, cfg, budgets.clone()).map_err(|e| {
                    ConfigError::Invalid {
                        name: u.name.clone(),
                        problem: e.to_string(),
                    }
                })?)
            }
        };
        members.push(Member {
            name: u.name.clone(),
            prefix: u.prefix().to_owned(),
            upstream,
        });
    }
    Ok(match members.len() {
        0 => Arc::new(Builtin::new(state_secret)),
        1 => members.remove(0).upstream,
        _ => Arc::new(Federation::new(members)),
    })
}
