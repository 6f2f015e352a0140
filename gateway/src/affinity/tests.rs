use super::*;
use shardgate_raft::{Member, Membership, NodeId};

fn ring(members: &[(&str, MemberState, u32)]) -> Ring {
    Ring::new(Membership {
        cluster: None,
        ring: Default::default(),
        epoch: 7,
        members: members
            .iter()
            .map(|(id, state, weight)| Member {
                id: NodeId((*id).into()),
                addr: format!("{id}:1"),
                session_addr: format!("{id}:2"),
                state: *state,
                weight: *weight,
            })
            .collect(),
    })
}

fn three() -> Ring {
    ring(&[
        ("node-0", MemberState::Active, 1),
        ("node-1", MemberState::Active, 1),
        ("node-2", MemberState::Active, 1),
    ])
}

const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn req<'a>(task: Option<&'a str>, principal: Option<&'a str>, key: Option<&'a str>) -> Request<'a> {
    Request {
        method: "tools/call",
        name: Some("t"),
        task,
        principal,
        key,
    }
}

#[test]
fn a_call_goes_where_what_it_needs_is() {
    use Decision::{Key, NewKey, NewSharedKey, Principal, Task};
    use Placement::Client;
    let needed = |p, r: &Request<'static>| decide(AffinityKey::Needed, p, r);
    let keyless = req(None, None, None);
    let keyed = req(None, None, Some(KEY));
    assert_eq!(
        needed(Some(Placement::Anywhere), &keyed),
        Decision::Anywhere
    );
    assert_eq!(needed(Some(Placement::Shared), &keyed), Decision::Shared);
    assert_eq!(needed(Some(Client), &keyless), NewKey);
    assert_eq!(needed(Some(Client), &keyed), Key(KEY));
    assert_eq!(
        needed(Some(Client), &req(None, Some("alice"), Some(KEY))),
        Principal("alice"),
        "a verified principal outranks any key"
    );
    // Not heard of yet: with the client's key if it has one, else on the shared node.
    assert_eq!(needed(None, &keyed), Key(KEY));
    assert_eq!(needed(None, &keyless), NewSharedKey);
    // Tasks by their id, unless the client's own state holds them.
    let task = req(Some("t-1"), None, None);
    assert_eq!(needed(Some(Placement::Anywhere), &task), Task("t-1"));
    assert_eq!(needed(None, &task), Task("t-1"));
    assert_eq!(needed(Some(Client), &task), Task("t-1"));
    assert_eq!(
        needed(Some(Client), &req(Some("t-1"), None, Some(KEY))),
        Key(KEY)
    );
    // `always` keeps every call with its client.
    assert_eq!(
        decide(AffinityKey::Always, Some(Placement::Anywhere), &keyless),
        NewKey
    );
}

#[test]
fn calls_that_can_run_anywhere_are_spread_exactly_by_weight() {
    let ring = ring(&[
        ("node-0", MemberState::Active, 1),
        ("node-1", MemberState::Active, 2),
        ("node-2", MemberState::Active, 1),
        ("node-3", MemberState::Draining, 1),
    ]);
    let affinity = Affinity::new(AffinityKey::Needed);
    affinity.learn("tools/call", Some("t"), Placement::Anywhere);
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for _ in 0..4000 {
        let routed = affinity.route(&ring, &req(None, None, Some(KEY)));
        assert_eq!(routed.scope, None);
        assert_eq!(routed.issued, None);
        let owner = ring.owner(routed.key.as_bytes()).expect("an owner");
        *per_node.entry(owner.id.0.clone()).or_default() += 1;
    }
    assert_eq!(per_node.get("node-0"), Some(&1000));
    assert_eq!(per_node.get("node-1"), Some(&2000));
    assert_eq!(per_node.get("node-2"), Some(&1000));
    assert_eq!(per_node.get("node-3"), None, "a draining node gets nothing");
}

#[test]
fn the_spread_follows_the_ring() {
    let affinity = Affinity::new(AffinityKey::Needed);
    affinity.learn("tools/call", Some("t"), Placement::Anywhere);
    let before = three();
    let first = affinity.route(&before, &req(None, None, None)).key;
    assert!(before.owner(first.as_bytes()).is_some());
    let mut after = Membership::clone(before.membership());
    after.epoch += 1;
    after.members[0].state = MemberState::Down;
    let after = Ring::new(after);
    for _ in 0..10 {
        let key = affinity.route(&after, &req(None, None, None)).key;
        let owner = after.owner(key.as_bytes()).expect("an owner");
        assert_ne!(owner.id.0, "node-0", "a down node is no longer spread to");
    }
}

#[test]
fn keys_are_issued_scoped_and_where_the_call_can_be_served() {
    let ring = three();
    let affinity = Affinity::new(AffinityKey::Needed);
    // Not heard of: a key the shared node owns.
    let routed = affinity.route(&ring, &req(None, None, None));
    let issued = routed.issued.expect("a key is issued");
    assert!(well_formed(&issued));
    assert_eq!(routed.scope.as_deref(), Some(routed.key.as_str()));
    assert_eq!(routed.key, format!("client/{issued}"));
    let shared_owner = ring.owner(SHARED.as_bytes()).map(|m| m.id.clone());
    assert_eq!(
        ring.owner(routed.key.as_bytes()).map(|m| m.id.clone()),
        shared_owner
    );
    // Needs client state: a fresh key, each client its own.
    affinity.learn("tools/call", Some("t"), Placement::Client);
    let a = affinity.route(&ring, &req(None, None, None));
    let b = affinity.route(&ring, &req(None, None, None));
    assert_ne!(a.issued, b.issued);
    // A key sent back is used, not replaced.
    let back = affinity.route(&ring, &req(None, None, Some(KEY)));
    assert_eq!(back.issued, None);
    assert_eq!(back.scope, Some(format!("client/{KEY}")));
    // A principal's scope can never be named by a key.
    let principal = affinity.route(&ring, &req(None, Some("alice"), None));
    assert_eq!(principal.scope.as_deref(), Some("principal/alice"));
}

#[test]
fn what_nodes_say_is_remembered_and_bounded() {
    let affinity = Affinity::new(AffinityKey::Needed);
    assert_eq!(affinity.placement("tools/call", Some("echo")), None);
    affinity.learn("tools/call", Some("echo"), Placement::Anywhere);
    affinity.learn("server/discover", None, Placement::Anywhere);
    assert_eq!(
        affinity.placement("tools/call", Some("echo")),
        Some(Placement::Anywhere)
    );
    assert_eq!(
        affinity.placement("server/discover", None),
        Some(Placement::Anywhere)
    );
    affinity.learn("tools/call", Some("echo"), Placement::Client);
    assert_eq!(
        affinity.placement("tools/call", Some("echo")),
        Some(Placement::Client),
        "the newest word wins"
    );
    for i in 0..MAX_LEARNED + 10 {
        affinity.learn(
            "tools/call",
            Some(&format!("made-up-{i}")),
            Placement::Anywhere,
        );
    }
    let total: usize = affinity
        .learned
        .read()
        .map(|l| l.values().map(HashMap::len).sum())
        .unwrap_or_default();
    assert!(total <= MAX_LEARNED, "{total}");
}

#[test]
fn a_key_comes_back_by_header_or_cookie_and_only_well_formed() {
    let mut headers = HeaderMap::new();
    assert_eq!(presented_key(&headers, None), None);
    headers.insert(
        header::COOKIE,
        HeaderValue::from_str(&format!("theme=dark; {KEY_COOKIE}={KEY}; x=1"))
            .expect("a header value"),
    );
    assert_eq!(presented_key(&headers, None), Some(KEY));
    let other = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
    headers.insert(KEY_HEADER, HeaderValue::from_static(other));
    assert_eq!(
        presented_key(&headers, None),
        Some(other),
        "the header first"
    );
    headers.insert(KEY_HEADER, HeaderValue::from_static("short"));
    assert_eq!(
        presented_key(&headers, None),
        Some(KEY),
        "a malformed header is ignored"
    );
    for bad in [
        "",
        "a/b",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    ] {
        assert!(!well_formed(bad), "{bad}");
    }
    assert!(well_formed(&shardgate_protocol::session_id::mint()));
    let retry = format!("sgk.{KEY}.upstream-state");
    assert_eq!(presented_key(&HeaderMap::new(), Some(&retry)), Some(KEY));
    assert_eq!(
        presented_key(&HeaderMap::new(), Some("upstream-state")),
        None
    );
}

fn set_cookie(headers: &HeaderMap) -> String {
    headers
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_key_is_handed_out_as_header_and_cookie() {
    let mut headers = HeaderMap::new();
    hand_out(&mut headers, KEY, false);
    assert_eq!(
        headers.get(KEY_HEADER).and_then(|v| v.to_str().ok()),
        Some(KEY)
    );
    let cookie = set_cookie(&headers);
    assert!(
        cookie.starts_with(&format!("{KEY_COOKIE}={KEY};")),
        "{cookie}"
    );
    assert!(
        cookie.contains("HttpOnly") && !cookie.contains("Secure"),
        "{cookie}"
    );
    let mut headers = HeaderMap::new();
    hand_out(&mut headers, KEY, true);
    let cookie = set_cookie(&headers);
    assert!(cookie.ends_with("; Secure"), "{cookie}");
}
