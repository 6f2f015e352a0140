use super::*;
use crate::config::Limits;
use serde_json::json;

fn budgets() -> Budgets {
    Budgets::new(&Limits::default())
}

fn session_in(id: &str, budgets: &Budgets) -> Arc<Session> {
    Arc::new(Session::new(
        Opening {
            id: id.into(),
            principal: "anonymous".into(),
            protocol_version: "2025-11-25".into(),
            initialize_params: shardgate_store::RawJson::new(&json!({})),
            upstream_state: UpstreamState::default(),
            counted: None,
        },
        budgets,
        None,
    ))
}

fn session(id: &str) -> Arc<Session> {
    session_in(id, &budgets())
}

#[tokio::test(start_paused = true)]
async fn idle_sessions_are_reaped_busy_ones_kept() {
    let sessions = Sessions::new(100);
    let (idle, busy, listening) = (session("idle"), session("busy"), session("listening"));
    for s in [&idle, &busy, &listening] {
        assert!(sessions.insert(s.clone()));
    }
    let _token = busy.begin_request(&json!(1), 1);
    let (_, _rx) = listening.standalone().attach_now();
    tokio::time::advance(Duration::from_secs(60)).await;
    let reaped: Vec<String> = sessions
        .reap(Duration::from_secs(30))
        .iter()
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(reaped, vec!["idle".to_string()]);
    assert!(sessions.get("idle").is_none());
    assert!(sessions.get("busy").is_some() && sessions.get("listening").is_some());
    assert!(busy.touch());
    assert!(sessions.reap(Duration::from_secs(30)).is_empty());
    // A request that got hold of a session as it was reaped finds it ended, and looks again.
    assert!(!idle.touch(), "a reaped session takes no more requests");
}

#[test]
fn an_id_is_never_given_to_a_second_session() {
    let sessions = Sessions::new(100);
    let first = session("a");
    assert!(sessions.insert(first.clone()));
    assert!(!sessions.insert(session("a")), "a live id is taken");
    assert!(Arc::ptr_eq(&sessions.get("a").expect("live"), &first));
    assert_eq!(sessions.reserve("a".into()).err(), Some(Unreserved::Taken));

    let held = sessions.reserve("b".into()).expect("free");
    assert_eq!(
        sessions.reserve("b".into()).err(),
        Some(Unreserved::Taken),
        "reserved ids are taken"
    );
    drop(held);
    let again = sessions.reserve("b".into()).expect("released on drop");
    again.fulfil(session("b"));
    assert!(sessions.get("b").is_some());
    assert_eq!(sessions.len(), 2);
}

#[tokio::test]
async fn a_client_answer_reaches_the_request_waiting_for_it() {
    let s = session("s");
    let stream = s.open_stream();
    let (_, mut rx) = stream.attach_now();
    let waiter = {
        let s = s.clone();
        let stream = stream.clone();
        tokio::spawn(async move { s.request_client(&stream, "roots/list", json!({})).await })
    };
    let sent = rx.recv().await.expect("the request goes out on the stream");
    let request: Value = serde_json::from_slice(&sent.data).expect("json");
    assert!(!s.deliver_response(&json!({"jsonrpc": "2.0", "id": "other", "result": {}})));
    let answer = json!({"jsonrpc": "2.0", "id": request["id"], "result": {"roots": []}});
    assert!(s.deliver_response(&answer));
    let got = waiter.await.expect("joined").expect("answered");
    assert_eq!(got, json!({"roots": []}));
}

#[test]
fn a_full_node_reserves_no_more_ids() {
    let sessions = Sessions::new(2);
    let held = sessions.reserve("a".into()).expect("room");
    assert!(sessions.insert(session("b")));
    assert_eq!(sessions.reserve("c".into()).err(), Some(Unreserved::Full));
    drop(held);
    assert!(
        sessions.reserve("c".into()).is_ok(),
        "a released id frees a place"
    );
}

#[tokio::test]
async fn a_request_ends_however_its_handler_exits() {
    let s = session("s");
    let handler = {
        let s = s.clone();
        tokio::spawn(async move {
            let _request = s.begin_request(&json!(7), 1);
            std::future::pending::<()>().await;
        })
    };
    tokio::task::yield_now().await;
    assert_eq!(s.requests_in_flight(), 1);
    // The client went away: the handler's future is dropped mid-call.
    handler.abort();
    let _ = handler.await;
    assert_eq!(s.requests_in_flight(), 0);
    assert!(s.is_idle(Duration::ZERO), "nothing keeps it busy any more");
}

#[test]
fn a_finished_request_does_not_end_a_later_one_with_the_same_id() {
    let s = session("s");
    let first = s.begin_request(&json!(1), 1);
    let second = s.begin_request(&json!(1), 1);
    drop(first);
    assert_eq!(s.requests_in_flight(), 1);
    s.cancel_request(&json!(1));
    assert!(second.token().is_cancelled());
}

#[tokio::test]
async fn a_cancelled_server_request_stops_waiting() {
    let s = session("s");
    let stream = s.open_stream();
    let waiter = {
        let (s, stream) = (s.clone(), stream.clone());
        tokio::spawn(async move { s.request_client(&stream, "roots/list", json!({})).await })
    };
    while s.pending_requests() == 0 {
        tokio::task::yield_now().await;
    }
    // The call that asked was cancelled: its future is dropped.
    waiter.abort();
    let _ = waiter.await;
    assert_eq!(s.pending_requests(), 0);
}

#[test]
fn a_session_over_its_replay_budget_drops_its_oldest_finished_streams() {
    let budgets = Budgets::new(&Limits {
        replay_bytes_per_session: 250,
        ..Limits::default()
    });
    let s = session_in("s", &budgets);
    let big = || bytes::Bytes::from(vec![b'x'; 100]);
    let mut ids = Vec::new();
    for _ in 0..4 {
        let stream = s.open_stream();
        stream.push(big());
        s.finish_stream(&stream);
        ids.push(stream.id());
    }
    assert!(s.stream(ids[0]).is_none() && s.stream(ids[1]).is_none());
    assert!(s.stream(ids[2]).is_some() && s.stream(ids[3]).is_some());
    assert_eq!(
        s.kept_streams(),
        Some((ids[2], ids[3])),
        "a refused resume can say which streams are kept"
    );
    assert_eq!(budgets.replay.used(), 200);
    drop(s);
    assert_eq!(
        budgets.replay.used(),
        0,
        "an ended session gives its bytes back"
    );
}

#[test]
fn a_stream_its_client_did_not_get_to_the_end_of_outlasts_streams_that_were_delivered() {
    let s = session("s");
    let answer = || bytes::Bytes::from_static(b"{}");
    // The client lost this stream before its answer: it may come back for it.
    let lost = s.open_stream();
    let (_, listener) = lost.attach_now();
    drop(listener);
    lost.push(answer());
    s.finish_stream(&lost);
    assert!(!lost.is_delivered());
    // Many more calls, each answered to a listening client.
    for _ in 0..RETAINED_STREAMS * 2 {
        let stream = s.open_stream();
        let (_, mut listener) = stream.attach_now();
        stream.push(answer());
        s.finish_stream(&stream);
        assert!(stream.is_delivered());
        assert!(listener.try_recv().is_ok());
    }
    assert!(
        s.stream(lost.id()).is_some(),
        "the undelivered answer is still there to resume"
    );
    let kept = s.lock().streams.len();
    assert!(kept <= RETAINED_STREAMS + 2, "still bounded: {kept}");
}

#[tokio::test(start_paused = true)]
async fn a_report_sees_activity_and_each_streams_last_event() {
    let s = session("reported");
    tokio::time::advance(Duration::from_secs(40)).await;
    assert_eq!(s.idle_for(), Duration::from_secs(40));
    assert!(s.touch());
    assert_eq!(s.idle_for(), Duration::ZERO, "a request is activity");
    assert!(s.held_since() > 0);
    let answered = s.open_stream();
    answered.push(Bytes::from_static(b"{}"));
    answered.push(Bytes::from_static(b"{}"));
    let quiet = s.open_stream();
    let last: Vec<String> = s
        .streams()
        .iter()
        .map(|st| st.last_event_id().to_string())
        .collect();
    assert_eq!(
        last,
        ["1-2", "2-0"],
        "a stream with no event but its priming one"
    );
    assert_eq!(quiet.id(), 2);
}
