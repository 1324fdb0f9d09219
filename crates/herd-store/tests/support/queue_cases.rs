//! The conformance case of queue steps (`herd_store::queue`), on every backend.

use bytes::Bytes;
use herd_store::queue::{
    decode_job, encode_job, lifo_score, waiting_score, Add, Added, Claim, Finish, Finished,
    JobHeader, JobState, Keep, QueueKeys, QueueStep,
};
use herd_store::{Backend, Expect, Store, StoreError};

const DEADLINE: i64 = 1_900_000_000_000;
const NOW: i64 = 1_800_000_000_000;

fn waiting(generation: u64, keep: Keep) -> JobHeader {
    JobHeader {
        state: JobState::Waiting,
        generation,
        seq: 0,
        due_ms: 5,
        attempt: 0,
        stalled: 0,
        lease_until_ms: 0,
        finished_ms: None,
        keep_completed: keep,
        lease_token: None,
    }
}

async fn add(s: &Store, q: &QueueKeys, id: &str, h: &JobHeader, score: f64) {
    let body = format!(r#"{{"id":"{id}","data":{{"n":"a b\u00e9"}}}}"#);
    let raw = Bytes::from(encode_job(h, body.as_bytes(), b""));
    s.put(&q.job(id), raw, Expect::Absent, None).await.unwrap();
    s.zadd(&q.waiting(), &[(format!("{id}#{}", h.generation), score)])
        .await
        .unwrap();
}

async fn header(s: &Store, q: &QueueKeys, id: &str) -> Option<(JobHeader, Vec<u8>, u64)> {
    let v = s.get(&q.job(id)).await.unwrap()?;
    let parts = decode_job(&v.value).expect("a record in the queue format");
    Some((parts.header, parts.result.to_vec(), v.version))
}

fn claim(tokens: &[&str]) -> Option<Claim> {
    Some(Claim {
        deadline_ms: DEADLINE,
        tokens: tokens.iter().map(|t| (*t).to_owned()).collect(),
    })
}

fn finish(id: &str, token: &str, result: &str) -> Option<Finish> {
    Some(Finish {
        id: id.to_owned(),
        token: token.to_owned(),
        now_ms: NOW,
        result: Bytes::copy_from_slice(result.as_bytes()),
    })
}

pub async fn queue_steps(s: &Store, p: &str) {
    let q = QueueKeys::new(&format!("{p}-qstep"));
    let step = |finish, claim| QueueStep {
        keys: q.clone(),
        adds: Vec::new(),
        finish,
        claim,
    };
    add(s, &q, "j1", &waiting(0, Keep::ALL), 1.0).await;
    add(s, &q, "j2", &waiting(0, Keep::ALL), 2.0).await;
    add(s, &q, "j3", &waiting(0, Keep::NONE), 3.0).await;
    // A member without a record, lowest first: moved, not leased, reported.
    s.zadd(&q.waiting(), &[("ghost#0".into(), 0.0)])
        .await
        .unwrap();

    let out = s
        .queue_step(&step(None, claim(&["t1", "t2"])))
        .await
        .unwrap();
    assert_eq!(out.finished, None);
    assert_eq!(out.others, vec!["ghost#0".to_owned()]);
    assert_eq!(out.leased.len(), 1);
    let j1 = &out.leased[0];
    assert_eq!(
        (j1.id.as_str(), j1.attempt, j1.token.as_str()),
        ("j1", 1, "t2")
    );
    assert_eq!(j1.lease_until_ms, DEADLINE);
    assert_eq!(j1.body.as_ref(), br#"{"id":"j1","data":{"n":"a b\u00e9"}}"#);
    for m in ["ghost#0", "j1#0"] {
        assert_eq!(
            s.zscore(&q.active(), m).await.unwrap(),
            Some(DEADLINE as f64)
        );
        assert_eq!(s.zscore(&q.waiting(), m).await.unwrap(), None);
    }
    let (h, _, version) = header(s, &q, "j1").await.unwrap();
    assert_eq!(h.state, JobState::Active);
    assert_eq!((h.attempt, h.lease_until_ms), (1, DEADLINE));
    assert_eq!(h.lease_token.as_deref(), Some("t2"));
    assert_eq!(version, 2, "a lease is a write of the record");

    // A wrong token: nothing happens, not even the claim.
    let out = s
        .queue_step(&step(finish("j1", "nope", ""), claim(&["t3"])))
        .await
        .unwrap();
    assert_eq!(out.finished, Some(Finished::WrongLease(JobState::Active)));
    assert!(out.leased.is_empty());
    assert_eq!(s.zcard(&q.waiting()).await.unwrap(), 2);

    // The ack keeps the record (completed, next generation, result) and leases j2.
    let out = s
        .queue_step(&step(finish("j1", "t2", r#"{"ok":1}"#), claim(&["t4"])))
        .await
        .unwrap();
    assert_eq!(out.finished, Some(Finished::Completed { keep: Keep::ALL }));
    assert_eq!(out.leased.len(), 1);
    assert_eq!(out.leased[0].id, "j2");
    let (h, result, _) = header(s, &q, "j1").await.unwrap();
    assert_eq!(h.state, JobState::Completed);
    assert_eq!((h.generation, h.finished_ms), (1, Some(NOW)));
    assert_eq!(h.lease_token, None);
    assert_eq!(result, br#"{"ok":1}"#);
    assert_eq!(
        s.zscore(&q.completed(), "j1#1").await.unwrap(),
        Some(NOW as f64)
    );
    assert_eq!(s.zscore(&q.active(), "j1#0").await.unwrap(), None);
    // Acked again: the lease is gone.
    let out = s
        .queue_step(&step(finish("j1", "t2", ""), None))
        .await
        .unwrap();
    assert_eq!(
        out.finished,
        Some(Finished::WrongLease(JobState::Completed))
    );

    // remove_on_complete: the ack deletes the record.
    let out = s.queue_step(&step(None, claim(&["t5"]))).await.unwrap();
    assert_eq!(out.leased[0].id, "j3");
    let out = s
        .queue_step(&step(finish("j3", "t5", ""), None))
        .await
        .unwrap();
    assert_eq!(out.finished, Some(Finished::Deleted));
    assert!(s.get(&q.job("j3")).await.unwrap().is_none());
    assert_eq!(s.zscore(&q.active(), "j3#0").await.unwrap(), None);
    assert_eq!(s.zscore(&q.completed(), "j3#1").await.unwrap(), None);

    // Keeping by age (BullMQ `removeOnComplete: {age, count}`): the ack reports the header's
    // keep for the trim that follows; an age of 0 keeps nothing, as a count of 0.
    let by_age = Keep {
        count: Some(5),
        age_ms: Some(60_000),
    };
    let at_once = Keep {
        count: None,
        age_ms: Some(0),
    };
    add(s, &q, "ja", &waiting(0, by_age), 10.0).await;
    add(s, &q, "jz", &waiting(0, at_once), 11.0).await;
    let out = s
        .queue_step(&step(None, claim(&["ta", "tz"])))
        .await
        .unwrap();
    assert_eq!(out.leased.len(), 2);
    let out = s
        .queue_step(&step(finish("ja", "ta", ""), None))
        .await
        .unwrap();
    assert_eq!(out.finished, Some(Finished::Completed { keep: by_age }));
    assert_eq!(header(s, &q, "ja").await.unwrap().0.keep_completed, by_age);
    let out = s
        .queue_step(&step(finish("jz", "tz", ""), None))
        .await
        .unwrap();
    assert_eq!(out.finished, Some(Finished::Deleted));
    assert!(s.get(&q.job("jz")).await.unwrap().is_none());

    // Nothing waiting: an empty claim.
    let out = s.queue_step(&step(None, claim(&["t6"]))).await.unwrap();
    assert!(out.leased.is_empty() && out.others.is_empty() && !out.paused);

    // Unknown job, older record format.
    let out = s
        .queue_step(&step(finish("nobody", "t", ""), None))
        .await
        .unwrap();
    assert_eq!(out.finished, Some(Finished::NotFound));
    s.put(
        &q.job("old"),
        Bytes::from_static(br#"{"id":"old"}"#),
        Expect::Any,
        None,
    )
    .await
    .unwrap();
    let out = s
        .queue_step(&step(finish("old", "t", ""), None))
        .await
        .unwrap();
    assert_eq!(out.finished, Some(Finished::Unreadable));
    s.zadd(&q.waiting(), &[("old#0".into(), 1.0)])
        .await
        .unwrap();
    // A stale member (its record is at another generation) is reported, not leased.
    add(s, &q, "j4", &waiting(3, Keep::ALL), 2.0).await;
    s.zadd(&q.waiting(), &[("j4#2".into(), 0.5)]).await.unwrap();
    let out = s
        .queue_step(&step(None, claim(&["a", "b", "c"])))
        .await
        .unwrap();
    assert_eq!(out.others, vec!["j4#2".to_owned(), "old#0".to_owned()]);
    assert_eq!(out.leased.len(), 1);
    assert_eq!(
        (out.leased[0].id.as_str(), out.leased[0].attempt),
        ("j4", 1)
    );

    // Paused: nothing moves.
    add(s, &q, "j5", &waiting(0, Keep::ALL), 9.0).await;
    s.put(&q.paused(), Bytes::from_static(b"1"), Expect::Any, None)
        .await
        .unwrap();
    let out = s.queue_step(&step(None, claim(&["t7"]))).await.unwrap();
    assert!(out.paused && out.leased.is_empty());
    assert_eq!(s.zcard(&q.waiting()).await.unwrap(), 1);
    s.delete(&q.paused(), Expect::Any).await.unwrap();

    // A header that is not of its form is not a record: reported, never half-rewritten.
    s.put(
        &q.job("bad"),
        Bytes::from_static(b"J1 w 0 1 x 0 0 0 - - -\n{}\n"),
        Expect::Any,
        None,
    )
    .await
    .unwrap();
    s.zadd(&q.waiting(), &[("bad#0".into(), 0.0)])
        .await
        .unwrap();
    let out = s.queue_step(&step(None, claim(&["t8"]))).await.unwrap();
    assert_eq!(out.others, vec!["bad#0".to_owned()]);
    assert!(out.leased.is_empty());
    // The placeholder of "no token" is no token.
    let out = s
        .queue_step(&step(finish("j4", "-", ""), None))
        .await
        .unwrap();
    assert_eq!(out.finished, Some(Finished::WrongLease(JobState::Active)));

    // Refused before anything is written.
    let err = s
        .queue_step(&step(None, claim(&["has space"])))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    let err = s.queue_step(&step(None, claim(&[]))).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    let both = QueueStep {
        adds: vec![Add {
            id: None,
            header: waiting(0, Keep::ALL),
            body: Bytes::from_static(b"{}"),
            rank: Some(1),
            lifo: false,
        }],
        ..step(finish("j4", "a", ""), None)
    };
    let err = s.queue_step(&both).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    let bad = QueueKeys::new(&format!("{p}-qstep-bad"));
    s.put(&bad.active(), Bytes::from_static(b"x"), Expect::Any, None)
        .await
        .unwrap();
    let err = s
        .queue_step(&QueueStep {
            keys: bad,
            claim: claim(&["t"]),
            ..QueueStep::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::WrongType { .. }), "{err:?}");
    assert_eq!(s.zcard(&q.waiting()).await.unwrap(), 1, "j5 still waits");
}

pub async fn queue_adds(s: &Store, p: &str) {
    let q = QueueKeys::new(&format!("{p}-qadd"));
    let new = |id: Option<&str>, rank: Option<u64>, due_ms: i64| Add {
        id: id.map(str::to_owned),
        header: JobHeader {
            due_ms,
            ..waiting(0, Keep::NONE)
        },
        body: Bytes::from_static(br#"{"name":"n","data":[1]}"#),
        rank,
        lifo: false,
    };
    let adds = |adds: Vec<Add>| QueueStep {
        keys: q.clone(),
        adds,
        ..QueueStep::default()
    };
    let out = s
        .queue_step(&adds(vec![
            new(None, Some(7), 0),
            new(Some("mine 1"), Some(2), 0),
            new(None, None, DEADLINE),
        ]))
        .await
        .unwrap();
    let added = |id: &str, seq: u64, new: bool| Added {
        id: id.to_owned(),
        seq,
        new,
    };
    assert_eq!(
        out.added,
        vec![
            added("1", 1, true),
            added("mine 1", 2, true),
            added("3", 3, true)
        ]
    );
    assert_eq!(
        s.zscore(&q.waiting(), "1#0").await.unwrap(),
        Some(waiting_score(7, 1))
    );
    assert_eq!(
        s.zscore(&q.waiting(), "mine 1#0").await.unwrap(),
        Some(waiting_score(2, 2))
    );
    assert_eq!(
        s.zscore(&q.delayed(), "3#0").await.unwrap(),
        Some(DEADLINE as f64)
    );
    let v = s.get(&q.job("mine 1")).await.unwrap().unwrap();
    assert_eq!(v.version, 1);
    let parts = decode_job(&v.value).unwrap();
    assert_eq!(parts.header.seq, 2);
    assert_eq!(parts.header.keep_completed, Keep::NONE);
    assert_eq!(parts.body, br#"{"name":"n","data":[1]}"#);
    // The queue's counter moved by three: the next add is number 4. A taken id is left alone.
    let out = s
        .queue_step(&adds(vec![
            new(Some("mine 1"), Some(1), 0),
            new(None, Some(1), 0),
        ]))
        .await
        .unwrap();
    assert_eq!(
        out.added,
        vec![added("mine 1", 4, false), added("5", 5, true)]
    );
    assert_eq!(s.get(&q.job("mine 1")).await.unwrap().unwrap().version, 1);
    assert_eq!(s.zcard(&q.waiting()).await.unwrap(), 3);
    // Adds lease in rank order, then by seq.
    let out = s
        .queue_step(&QueueStep {
            keys: q.clone(),
            claim: claim(&["a", "b", "c"]),
            ..QueueStep::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = out.leased.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["5", "mine 1", "1"]);
    // lifo jobs go ahead of every waiting job, the newest first.
    let lifo = || Add {
        lifo: true,
        ..new(None, Some(0), 0)
    };
    s.queue_step(&adds(vec![new(None, Some(0), 0), lifo(), lifo()]))
        .await
        .unwrap();
    assert_eq!(
        s.zscore(&q.waiting(), "7#0").await.unwrap(),
        Some(lifo_score(7))
    );
    let out = s
        .queue_step(&QueueStep {
            keys: q.clone(),
            claim: claim(&["d", "e", "f"]),
            ..QueueStep::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = out.leased.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["8", "7", "6"]);
    // Bad adds are refused before anything is written.
    let mut leased = new(None, Some(1), 0);
    leased.header.lease_token = Some("t".into());
    for bad in [
        new(Some(""), Some(1), 0),
        new(None, Some(1 << 22), 0),
        Add {
            lifo: true,
            ..new(None, Some(1), 0)
        },
        leased,
    ] {
        let err = s.queue_step(&adds(vec![bad])).await.unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    }
    s.delete(&q.set("seq"), Expect::Any).await.unwrap();
    s.put(&q.set("seq"), Bytes::from_static(b"x"), Expect::Any, None)
        .await
        .unwrap();
    let err = s
        .queue_step(&adds(vec![new(None, Some(1), 0)]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::WrongType { .. }), "{err:?}");
}

/// Which records a step takes for records: the Redis script's header parser and
/// `decode_job` (the embedded store's) must accept exactly the same forms.
pub async fn queue_headers(s: &Store, p: &str) {
    let q = QueueKeys::new(&format!("{p}-qhdr"));
    let cases: &[(&str, bool)] = &[
        ("J1 w 0 1 5 0 0 0 - - -\n{}\n", true),
        ("J1 w 0 12 -5 3 2 -7 - - -\n{\"a\":1}\n", true),
        ("J1 w 0 1 5 0 0 0 123 4 -\n{}\nan old result", true),
        ("J1 w 0 1 5 0 0 0 -123 - -\n{}\n", true),
        ("J1 x 0 1 5 0 0 0 - - -\n{}\n", false),
        ("J1 ww 0 1 5 0 0 0 - - -\n{}\n", false),
        ("J1 w  0 1 5 0 0 0 - - -\n{}\n", false),
        ("J1 w 0 1 5 0 0 0 - - - \n{}\n", false),
        ("J1 w 0 1 5 0 0 0 - - - x\n{}\n", false),
        ("J1 w 0 1 5 0 0 0 - -\n{}\n", false),
        ("J1 w -0 1 5 0 0 0 - - -\n{}\n", false),
        ("J1 w 0 -1 5 0 0 0 - - -\n{}\n", false),
        ("J1 w 0 1 5 -1 0 0 - - -\n{}\n", false),
        ("J1 w 0 1 5 0 -1 0 - - -\n{}\n", false),
        ("J1 w 0 1 5 0 0 9a - - -\n{}\n", false),
        ("J1 w 0 1 5 0 0 - - - -\n{}\n", false),
        ("J1 w 0 1 5 0 0 0 x - -\n{}\n", false),
        ("J1 w 0 1 5 0 0 0 - x -\n{}\n", false),
        ("J1 w 0 1 5 0 0 0 - -7 -\n{}\n", false),
        ("J1 w 0 1 5 0 0 0 - - -\n{}\nresult\nmore", false),
        ("J1 w 0 1 5 0 0 0 - - -\n{}", false),
        ("J1 w 0 1 5 0 0 0 - - -", false),
        ("J2 w 0 1 5 0 0 0 - - -\n{}\n", false),
    ];
    for (i, (raw, leasable)) in cases.iter().enumerate() {
        let (id, member) = (format!("h{i}"), format!("h{i}#0"));
        let raw = Bytes::from_static(raw.as_bytes());
        s.put(&q.job(&id), raw.clone(), Expect::Any, None)
            .await
            .unwrap();
        s.zadd(&q.waiting(), &[(member.clone(), 0.0)])
            .await
            .unwrap();
        let step = QueueStep {
            keys: q.clone(),
            adds: Vec::new(),
            finish: None,
            claim: claim(&["tok"]),
        };
        let out = s.queue_step(&step).await.unwrap();
        if *leasable {
            assert_eq!(out.leased.len(), 1, "[{p}] {raw:?} is a record: {out:?}");
            assert!(out.others.is_empty(), "[{p}] {raw:?}: {out:?}");
        } else {
            assert!(
                out.leased.is_empty(),
                "[{p}] {raw:?} is not a record: {out:?}"
            );
            assert_eq!(out.others, vec![member.clone()], "[{p}] {raw:?}");
            let kept = s.get(&q.job(&id)).await.unwrap().unwrap();
            assert_eq!(kept.value, raw, "[{p}] {raw:?} was rewritten");
        }
        s.zrem(&q.active(), &[member]).await.unwrap();
    }
}
