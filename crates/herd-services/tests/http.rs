//! The HTTP API over real TCP against the embedded store: every endpoint, auth, errors.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_required_except_on_health_and_openapi() {
    let api = Api::start(false).await;
    let r = api.raw("GET", "/health", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["store"]["backend"], "embedded");
    // Where the store is, and its last error, only with the token.
    assert!(r.json()["store"].get("target").is_none(), "{}", r.text());
    let r = api.call("GET", "/health", b"").await;
    assert!(r.json()["store"]["target"].is_string(), "{}", r.text());
    let r = api.raw("GET", "/openapi.json", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["openapi"], "3.0.3");
    for (method, path) in [
        ("GET", "/v1/cache/stats"),
        ("POST", "/v1/sessions"),
        ("GET", "/nope"),
    ] {
        let r = api.raw(method, path, &[], b"").await;
        assert_eq!(r.status, 401, "{method} {path}");
        assert!(r.json()["hint"].as_str().unwrap().contains("Bearer"));
        let r = api
            .raw(
                method,
                path,
                &[("authorization", "Bearer wrong-token-0123456789")],
                b"",
            )
            .await;
        assert_eq!(r.status, 401, "{method} {path}");
    }
    let r = api.call("GET", "/nope", b"").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no such endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served() {
    let api = Api::start(false).await;
    let doc: serde_json::Value = serde_json::from_str(herd_services::http::OPENAPI).unwrap();
    let mut seen = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{id}", "x1")
            .replace("{ns}", "ns1")
            .replace("{key}", "k1")
            .replace("{q}", "q1")
            .replace("{name}", "n1");
        for method in ops.as_object().unwrap().keys() {
            let r = api
                .call(&method.to_ascii_uppercase(), &concrete, b"{}")
                .await;
            assert_ne!(r.status, 405, "{method} {path}: {}", r.text());
            if r.status == 404 && method != "head" {
                assert_ne!(r.json()["error"], "no such endpoint", "{method} {path}");
            }
            seen.insert((method.clone(), path.clone()));
        }
    }
    assert!(seen.len() > 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_crud_with_versions() {
    let api = Api::start(false).await;
    let r = api
        .json(
            "POST",
            "/v1/sessions",
            json!({"data": {"user": "ada"}, "ttl": "1h"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 22);
    assert_eq!(r.header("etag"), Some("\"1\""));
    let path = format!("/v1/sessions/{id}");

    let r = api.call("GET", &path, b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"]["user"], "ada");
    assert_eq!(r.json()["ttl_ms"], 3_600_000);

    // Replace at the right version, then a stale If-Match is 412.
    let body = json!({"data": {"user": "bob"}}).to_string();
    let auth = format!("Bearer {TOKEN}");
    let r = api
        .raw(
            "PUT",
            &path,
            &[("authorization", &auth), ("if-match", "\"1\"")],
            body.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], 2);
    let r = api
        .raw(
            "PUT",
            &path,
            &[("authorization", &auth), ("if-match", "\"1\"")],
            body.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 412, "{}", r.text());
    assert!(r.json()["hint"].as_str().unwrap().contains("If-Match"));

    // Merge: a field added, one removed.
    let r = api
        .json(
            "PATCH",
            &path,
            json!({"data": {"cart": [1, 2], "user": null}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = api.call("GET", &path, b"").await;
    assert_eq!(r.json()["data"], json!({"cart": [1, 2]}));

    assert_eq!(
        api.call("POST", &format!("{path}/touch"), b"").await.status,
        204
    );

    // A new TTL, kept from then on: by touch, by a merge of the TTL alone, by a replace.
    let ttl_of = |r: Resp| r.json()["ttl_ms"].as_u64().unwrap();
    let r = api
        .json("POST", &format!("{path}/touch"), json!({"ttl": "2h"}))
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(ttl_of(api.call("GET", &path, b"").await), 7_200_000);
    let r = api.json("PATCH", &path, json!({"ttl": "3h"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = api.call("GET", &path, b"").await;
    assert_eq!(r.json()["data"], json!({"cart": [1, 2]}));
    assert_eq!(ttl_of(r), 10_800_000);
    for bad in [json!({"ttl": "0s"}), json!({"ttl": "soon"})] {
        let r = api.json("POST", &format!("{path}/touch"), bad).await;
        assert_eq!(r.status, 400, "{}", r.text());
    }

    // Regenerate: same data under a new id, the old id gone.
    let r = api.call("POST", &format!("{path}/regenerate"), b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let new_id = r.json()["id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, id);
    assert_eq!(api.call("GET", &path, b"").await.status, 404);
    let r = api
        .call("GET", &format!("/v1/sessions/{new_id}"), b"")
        .await;
    assert_eq!(r.json()["data"], json!({"cart": [1, 2]}));

    let new_path = format!("/v1/sessions/{new_id}");
    // A replace with a short TTL: the store expires the session by it.
    let r = api
        .json("PUT", &new_path, json!({"data": {"a": 1}, "ttl": "150ms"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(api.call("GET", &new_path, b"").await.status, 404);
    let r = api.json("POST", "/v1/sessions", json!({"data": {}})).await;
    let new_path = format!("/v1/sessions/{}", r.json()["id"].as_str().unwrap());
    assert_eq!(api.call("DELETE", &new_path, b"").await.status, 204);
    assert_eq!(api.call("DELETE", &new_path, b"").await.status, 404);

    // Bad input: 400 with a hint.
    let r = api
        .json("POST", "/v1/sessions", json!({"data": {}, "ttl": "soon"}))
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["hint"].as_str().unwrap().contains("30s"),
        "{}",
        r.text()
    );
    let r = api.call("POST", "/v1/sessions", b"{not json").await;
    assert_eq!(r.status, 400);
    for cut in [&b"{\"data\": {\"a\": 1"[..], b"{\"data\": ", b"{"] {
        let r = api.call("POST", "/v1/sessions", cut).await;
        assert_eq!(r.status, 400);
        let error = r.json()["error"].as_str().unwrap().to_owned();
        assert!(!error.contains('?') && error.contains("EOF"), "{error}");
    }
    let r = api
        .json("POST", "/v1/sessions", json!({"data": {}, "tll": "1h"}))
        .await;
    assert_eq!(r.status, 400, "unknown fields are refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_patches_of_different_fields_all_survive() {
    let api = std::sync::Arc::new(Api::start(false).await);
    let r = api.json("POST", "/v1/sessions", json!({"data": {}})).await;
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let api = std::sync::Arc::clone(&api);
        let path = format!("/v1/sessions/{id}");
        tasks.push(tokio::spawn(async move {
            let r = api
                .json("PATCH", &path, json!({"data": {format!("f{i}"): i}}))
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let r = api.call("GET", &format!("/v1/sessions/{id}"), b"").await;
    let data = r.json()["data"].clone();
    for i in 0..20 {
        assert_eq!(data[format!("f{i}")], i, "field f{i} lost: {data}");
    }
    assert_eq!(r.json()["version"], 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_put_get_invalidate_and_stats() {
    let api = Api::start(false).await;
    let r = api
        .call(
            "PUT",
            "/v1/cache/users/u%3A1?ttl=1h&tags=team:a,vip",
            b"\x00raw\xffbytes",
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    api.call("PUT", "/v1/cache/users/u%3A2?tags=team:a", b"{\"n\":2}")
        .await;
    api.call("PUT", "/v1/cache/users/other", b"3").await;

    let r = api.call("GET", "/v1/cache/users/u%3A1", b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"\x00raw\xffbytes");
    assert_eq!(r.header("x-cache"), Some("HIT-L1"));
    assert_eq!(r.header("x-cache-freshness"), Some("fresh"));

    let r = api
        .json(
            "POST",
            "/v1/cache/users/invalidate",
            json!({"tag": "team:a"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["removed"], 2);
    assert_eq!(
        api.call("GET", "/v1/cache/users/u%3A1", b"").await.status,
        404
    );
    assert_eq!(
        api.call("GET", "/v1/cache/users/other", b"").await.status,
        200
    );

    let r = api
        .json(
            "POST",
            "/v1/cache/users/invalidate",
            json!({"prefix": "oth"}),
        )
        .await;
    assert_eq!(r.json()["removed"], 1);
    assert_eq!(
        api.call("GET", "/v1/cache/users/other", b"").await.status,
        404
    );

    api.call("PUT", "/v1/cache/users/del", b"x").await;
    assert_eq!(
        api.call("DELETE", "/v1/cache/users/del", b"").await.status,
        204
    );
    assert_eq!(
        api.call("DELETE", "/v1/cache/users/del", b"").await.status,
        404
    );

    let r = api
        .json("POST", "/v1/cache/users/invalidate", json!({}))
        .await;
    assert_eq!(r.status, 400);
    let r = api.call("PUT", "/v1/cache/users/k?ttl=0s", b"x").await;
    assert_eq!(r.status, 400);
    let r = api.call("PUT", "/v1/cache/users/k?colour=red", b"x").await;
    assert_eq!(r.status, 400);

    // The Content-Type given on PUT comes back on GET.
    let auth = format!("Bearer {TOKEN}");
    let r = api
        .raw(
            "PUT",
            "/v1/cache/users/doc",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            b"{\"a\":1}",
        )
        .await;
    assert_eq!(r.status, 204);
    let r = api.call("GET", "/v1/cache/users/doc", b"").await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["a"], 1);

    let r = api.call("GET", "/v1/cache/stats", b"").await;
    let s = r.json();
    assert!(s["l1_hits"].as_u64().unwrap() >= 2, "{s}");
    assert!(s["l1_misses"].as_u64().unwrap() >= 2, "{s}");
    assert!(s["invalidations"].as_u64().unwrap() >= 4, "{s}");

    // A key named like the invalidate endpoint is still a key.
    let r = api.call("PUT", "/v1/cache/pages/invalidate", b"v").await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = api.call("GET", "/v1/cache/pages/invalidate", b"").await;
    assert_eq!((r.status, r.text()), (200, "v".to_owned()));
    assert_eq!(
        api.call("DELETE", "/v1/cache/pages/invalidate", b"")
            .await
            .status,
        204
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_with_next_leases_the_following_job_in_the_same_call() {
    let api = Api::start(false).await;
    for name in ["a", "b"] {
        let r = api
            .json(
                "POST",
                "/v1/queues/chain/jobs",
                json!({"name": name, "remove_on_complete": true}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let r = api
        .json("POST", "/v1/queues/chain/reserve", json!({"max": 1}))
        .await;
    let first = r.json()["jobs"][0].clone();
    assert_eq!(first["name"], "a");
    let ack =
        |j: &serde_json::Value| format!("/v1/queues/chain/jobs/{}/ack", j["id"].as_str().unwrap());
    // Bad `next` is refused before the ack: the job stays leased.
    let r = api
        .json(
            "POST",
            &ack(&first),
            json!({"lease_token": first["lease_token"], "next": {"max": 0}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("next.max"), "{}", r.text());
    let r = api
        .json(
            "POST",
            &ack(&first),
            json!({"lease_token": first["lease_token"], "next": {"lease": "soon"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // Durations are bounded (ten years), so no deadline can overflow.
    let r = api
        .json(
            "POST",
            &ack(&first),
            json!({"lease_token": first["lease_token"], "next": {"lease": "4000d"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("ten years"), "{}", r.text());
    let r = api.call("GET", "/v1/queues/chain", b"").await;
    assert_eq!(r.json()["active"], 1, "{}", r.text());

    let r = api
        .json(
            "POST",
            &ack(&first),
            json!({"lease_token": first["lease_token"], "next": {"max": 5, "lease": "1m"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let jobs = r.json()["jobs"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 1, "{}", r.text());
    assert_eq!(jobs[0]["name"], "b");
    assert_eq!(jobs[0]["attempt"], 1);
    // The first job is gone (remove_on_complete), the second is leased.
    let r = api
        .call(
            "GET",
            &format!("/v1/queues/chain/jobs/{}", first["id"].as_str().unwrap()),
            b"",
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    // Acking again with the spent token is a lease conflict, and reserves nothing.
    let r = api
        .json(
            "POST",
            &ack(&first),
            json!({"lease_token": first["lease_token"], "next": {}}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    // Nothing left: 200 with an empty list; without `next`, 204 as before.
    let r = api
        .json(
            "POST",
            &ack(&jobs[0]),
            json!({"lease_token": jobs[0]["lease_token"], "next": {}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["jobs"], json!([]));
    let r = api.call("GET", "/v1/queues/chain", b"").await;
    assert_eq!(
        (r.json()["active"].as_u64(), r.json()["completed"].as_u64()),
        (Some(0), Some(0)),
        "{}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_add_reserve_and_ack() {
    let api = Api::start(false).await;
    let jobs: Vec<_> = (0..10)
        .map(|i| json!({"name": format!("j{i}"), "remove_on_complete": i % 2 == 0}))
        .collect();
    let r = api
        .json("POST", "/v1/queues/batch/jobs", json!({ "jobs": jobs }))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let ids = r.json()["ids"].as_array().unwrap().clone();
    assert_eq!(ids.len(), 10);
    // One bad job refuses the whole batch before anything is written.
    let r = api
        .json(
            "POST",
            "/v1/queues/batch/jobs",
            json!({"jobs": [{"name": "ok"}, {"name": "bad", "priority": 1_u64 << 40}]}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = api.call("GET", "/v1/queues/batch", b"").await;
    assert_eq!(r.json()["waiting"], 10, "{}", r.text());

    let r = api
        .json("POST", "/v1/queues/batch/reserve", json!({"max": 4}))
        .await;
    let held = r.json()["jobs"].as_array().unwrap().clone();
    let names: Vec<_> = held.iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["j0", "j1", "j2", "j3"], "added order is kept");
    // Three good acks, one stale token, one unknown job: each answered on its own, and the
    // next batch is leased all the same.
    let mut acks: Vec<_> = held[..3]
        .iter()
        .map(|j| json!({"id": j["id"], "lease_token": j["lease_token"], "result": {"ok": 1}}))
        .collect();
    acks.push(json!({"id": held[3]["id"], "lease_token": "stale"}));
    acks.push(json!({"id": "nope", "lease_token": "x"}));
    let r = api
        .json(
            "POST",
            "/v1/queues/batch/ack",
            json!({"acks": acks, "next": {"max": 3, "lease": "1m"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(
        body["acked"],
        json!([held[0]["id"], held[1]["id"], held[2]["id"]])
    );
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{body}");
    assert_eq!(errors[0]["id"], held[3]["id"]);
    assert_eq!(errors[0]["status"], 409, "{body}");
    assert_eq!(errors[1]["status"], 404, "{body}");
    let next: Vec<_> = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(next, ["j4", "j5", "j6"]);
    // j1 is kept completed with its result; j0 and j2 were removed on completion.
    let r = api
        .call(
            "GET",
            &format!("/v1/queues/batch/jobs/{}", held[1]["id"].as_str().unwrap()),
            b"",
        )
        .await;
    assert_eq!(r.json()["state"], "completed", "{}", r.text());
    assert_eq!(r.json()["result"], json!({"ok": 1}));
    let r = api.call("GET", "/v1/queues/batch", b"").await;
    let c = r.json();
    assert_eq!(
        (
            c["waiting"].as_u64(),
            c["active"].as_u64(),
            c["completed"].as_u64()
        ),
        (Some(3), Some(4), Some(1)),
        "{c}"
    );
    // Refused up front: more than 1000 acks, unknown fields, a bad `next`.
    let many: Vec<_> = (0..1001)
        .map(|i| json!({"id": format!("{i}"), "lease_token": "t"}))
        .collect();
    let r = api
        .json("POST", "/v1/queues/batch/ack", json!({ "acks": many }))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = api
        .json(
            "POST",
            "/v1/queues/batch/ack",
            json!({"acks": [], "nxt": {}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = api
        .json(
            "POST",
            "/v1/queues/batch/ack",
            json!({"acks": [], "next": {"max": 0}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // Dedupe inside a batch and against what is there: each id is added once.
    let r = api
        .json(
            "POST",
            "/v1/queues/dedupe/jobs",
            json!({"jobs": [{"name": "a", "job_id": "dup"}, {"name": "b", "job_id": "dup"}]}),
        )
        .await;
    assert_eq!(r.json()["ids"], json!(["dup", "dup"]), "{}", r.text());
    // The second one added nothing.
    assert_eq!(r.json()["duplicates"], json!(["dup"]), "{}", r.text());
    let r = api
        .json(
            "POST",
            "/v1/queues/dedupe/jobs",
            json!({"jobs": [{"name": "c"}, {"name": "d", "job_id": "dup"}]}),
        )
        .await;
    assert_eq!(r.json()["ids"][1], "dup", "{}", r.text());
    assert_eq!(r.json()["duplicates"], json!(["dup"]), "{}", r.text());
    let r = api.call("GET", "/v1/queues/dedupe", b"").await;
    assert_eq!(r.json()["waiting"], 2, "{}", r.text());
    let r = api.call("GET", "/v1/queues/dedupe/jobs/dup", b"").await;
    assert_eq!(r.json()["name"], "a", "the first add of an id wins");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_endpoints() {
    let api = Api::start(false).await;
    let r = api
        .json(
            "POST",
            "/v1/queues/mail/jobs",
            json!({"name": "send", "data": {"to": "a"}, "attempts": 2}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let r = api
        .json(
            "POST",
            "/v1/queues/mail/jobs",
            json!({"jobs": [{"name": "b1", "attempts": 5}, {"name": "b2", "job_id": "fixed", "attempts": 5}]}),
        )
        .await;
    assert_eq!(r.json()["ids"].as_array().unwrap().len(), 2);
    // Dedupe: the same job_id returns the existing id.
    let r = api
        .json(
            "POST",
            "/v1/queues/mail/jobs",
            json!({"name": "again", "job_id": "fixed"}),
        )
        .await;
    assert_eq!(r.json()["id"], "fixed");
    // Nothing was added: 200 and `duplicate`, not 201.
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["duplicate"], true);
    let r = api
        .json(
            "POST",
            "/v1/queues/other/jobs",
            json!({"name": "fresh", "job_id": "fresh"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json().get("duplicate"), None);
    let r = api.call("GET", "/v1/queues/mail", b"").await;
    assert_eq!(r.json()["waiting"], 3, "{}", r.text());

    let r = api
        .json(
            "POST",
            "/v1/queues/mail/reserve",
            json!({"max": 1, "lease": "30s"}),
        )
        .await;
    let job = r.json()["jobs"][0].clone();
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["attempt"], 1);
    let token = job["lease_token"].as_str().unwrap().to_owned();

    let base = format!("/v1/queues/mail/jobs/{id}");
    let r = api
        .json(
            "POST",
            &format!("{base}/ack"),
            json!({"lease_token": "nope"}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    let r = api
        .json(
            "POST",
            &format!("{base}/extend"),
            json!({"lease_token": token, "lease": "1m"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = api
        .json(
            "POST",
            &format!("{base}/fail"),
            json!({"lease_token": token, "error": "smtp down"}),
        )
        .await;
    assert_eq!(r.json()["state"], "waiting", "attempt 1 of 2 retries");
    // The retry waits behind the jobs already waiting (BullMQ appends it to the wait list).
    let r = api
        .call("GET", "/v1/queues/mail/jobs?state=waiting", b"")
        .await;
    let order: Vec<String> = r.json()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(order.last(), Some(&id), "{order:?}");
    assert_eq!(order.len(), 3, "{order:?}");
    // Take it out of turn for the rest of this test: the two ahead of it go back (a retry).
    let ahead = api
        .json("POST", "/v1/queues/mail/reserve", json!({"max": 3}))
        .await
        .json();
    let mut job = serde_json::Value::Null;
    for j in ahead["jobs"].as_array().unwrap() {
        if j["id"] == id.as_str() {
            job = j.clone();
        } else {
            let r = api
                .json(
                    "POST",
                    &format!("/v1/queues/mail/jobs/{}/fail", j["id"].as_str().unwrap()),
                    json!({"lease_token": j["lease_token"], "error": "not now"}),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    assert_eq!(
        (job["id"].as_str(), job["attempt"].as_u64()),
        (Some(id.as_str()), Some(2))
    );
    let token = job["lease_token"].as_str().unwrap().to_owned();
    let r = api
        .json(
            "POST",
            &format!("{base}/fail"),
            json!({"lease_token": token, "error": "smtp down"}),
        )
        .await;
    assert_eq!(r.json()["state"], "failed");

    let r = api.call("GET", &base, b"").await;
    assert_eq!(r.json()["state"], "failed");
    assert_eq!(r.json()["errors"].as_array().unwrap().len(), 2);
    assert!(r.json().get("lease_token").is_none());

    let r = api.call("GET", "/v1/queues/mail/dead", b"").await;
    assert_eq!(r.json()["jobs"][0]["id"], id.as_str());
    assert_eq!(
        api.call("POST", &format!("/v1/queues/mail/dead/{id}/retry"), b"")
            .await
            .status,
        204
    );
    let r = api.call("GET", "/v1/queues/mail", b"").await;
    assert_eq!(
        (r.json()["waiting"].as_u64(), r.json()["failed"].as_u64()),
        (Some(3), Some(0))
    );

    // Pause holds jobs back; resume releases them.
    assert_eq!(
        api.call("POST", "/v1/queues/mail/pause", b"").await.status,
        204
    );
    let r = api
        .json("POST", "/v1/queues/mail/reserve", json!({"max": 5}))
        .await;
    assert_eq!(r.json()["jobs"].as_array().unwrap().len(), 0);
    assert_eq!(
        api.call("GET", "/v1/queues/mail", b"").await.json()["paused"],
        3
    );
    assert_eq!(
        api.call("POST", "/v1/queues/mail/resume", b"").await.status,
        204
    );
    let r = api
        .json("POST", "/v1/queues/mail/reserve", json!({"max": 5}))
        .await;
    let jobs = r.json()["jobs"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 3);
    for j in &jobs {
        let r = api
            .json(
                "POST",
                &format!("/v1/queues/mail/jobs/{}/ack", j["id"].as_str().unwrap()),
                json!({"lease_token": j["lease_token"], "result": 1}),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let r = api
        .json(
            "POST",
            "/v1/queues/mail/clean",
            json!({"state": "completed", "grace": "0s"}),
        )
        .await;
    assert_eq!(
        r.json()["removed"].as_array().unwrap().len(),
        3,
        "{}",
        r.text()
    );
    let r = api
        .json("POST", "/v1/queues/mail/clean", json!({"state": "waiting"}))
        .await;
    assert_eq!(r.status, 400);
    // BullMQ's limit 0 (no limit) would answer success and remove nothing here: refused.
    for limit in [0, 10_001] {
        let r = api
            .json(
                "POST",
                "/v1/queues/mail/clean",
                json!({"state": "completed", "limit": limit}),
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("outside 1..10000"), "{}", r.text());
    }

    // Dead-letter delete.
    let r = api
        .json("POST", "/v1/queues/mail/jobs", json!({"name": "doomed"}))
        .await;
    let doomed = r.json()["id"].as_str().unwrap().to_owned();
    let r = api.json("POST", "/v1/queues/mail/reserve", json!({})).await;
    let t = r.json()["jobs"][0]["lease_token"]
        .as_str()
        .unwrap()
        .to_owned();
    api.json(
        "POST",
        &format!("/v1/queues/mail/jobs/{doomed}/fail"),
        json!({"lease_token": t, "retry": false}),
    )
    .await;
    assert_eq!(
        api.call("DELETE", &format!("/v1/queues/mail/dead/{doomed}"), b"")
            .await
            .status,
        204
    );
    assert_eq!(
        api.call("GET", &format!("/v1/queues/mail/jobs/{doomed}"), b"")
            .await
            .status,
        404
    );

    // Schedules.
    let r = api
        .json(
            "PUT",
            "/v1/queues/mail/schedules/digest",
            json!({"cron": "0 8 * * 1-5", "tz": "Europe/Paris", "job": {"name": "digest"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["next_ms"].as_i64().unwrap() > 0);
    let r = api
        .json(
            "PUT",
            "/v1/queues/mail/schedules/bad",
            json!({"cron": "0 8 * *", "job": {"name": "x"}}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["hint"].as_str().unwrap().contains("five fields"));
    assert_eq!(
        api.call("DELETE", "/v1/queues/mail/schedules/digest", b"")
            .await
            .status,
        204
    );
    assert_eq!(
        api.call("DELETE", "/v1/queues/mail/schedules/digest", b"")
            .await
            .status,
        404
    );

    let r = api
        .json(
            "POST",
            "/v1/queues/mail/jobs",
            json!({"name": "x", "priority": 99999999}),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = api
        .json("POST", "/v1/queues/mail/reserve", json!({"wait": "1h"}))
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_and_rate_limits() {
    let api = Api::start(false).await;
    let r = api
        .json("POST", "/v1/locks/sync", json!({"ttl": "30s"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let fence = r.json()["fence"].as_u64().unwrap();
    let r = api
        .json(
            "POST",
            "/v1/locks/sync",
            json!({"ttl": "30s", "wait": "100ms"}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    let r = api
        .json("POST", "/v1/locks/sync/renew", json!({"token": "wrong"}))
        .await;
    assert_eq!(r.status, 409);
    let r = api
        .json(
            "POST",
            "/v1/locks/sync/renew",
            json!({"token": token, "ttl": "1m"}),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = api
        .json("DELETE", "/v1/locks/sync", json!({"token": "wrong"}))
        .await;
    assert_eq!(r.status, 409);
    let r = api
        .json("DELETE", "/v1/locks/sync", json!({"token": token}))
        .await;
    assert_eq!(r.status, 204);
    let r = api.json("POST", "/v1/locks/sync", json!({})).await;
    assert!(r.json()["fence"].as_u64().unwrap() > fence);

    // 1 r/m with burst 2: three pass, the fourth is refused with Retry-After.
    for i in 0..3 {
        let r = api
            .json(
                "POST",
                "/v1/ratelimit/ip:1",
                json!({"rate": "1r/m", "burst": 2}),
            )
            .await;
        assert_eq!(r.json()["allowed"], true, "request {i}: {}", r.text());
    }
    let r = api
        .json(
            "POST",
            "/v1/ratelimit/ip:1",
            json!({"rate": "1r/m", "burst": 2}),
        )
        .await;
    assert_eq!(r.json()["allowed"], false);
    let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&after), "{after}");
    let r = api
        .json(
            "POST",
            "/v1/ratelimit/ip:1",
            json!({"rate": "10 per second"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["hint"].as_str().unwrap().contains("r/s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_in_json_bodies_may_be_numbers_of_milliseconds() {
    // BullMQ (`lease`, `every`, `grace`) and Redlock (`ttl`) count in milliseconds.
    let api = Api::start(false).await;
    let r = api
        .json("POST", "/v1/queues/ms/jobs", json!({"name": "a"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let r = api
        .json(
            "POST",
            "/v1/queues/ms/reserve",
            json!({"lease": 90_000, "wait": 0}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let job = r.json()["jobs"][0].clone();
    let (id, token) = (job["id"].as_str().unwrap(), job["lease_token"].as_str());
    let r = api
        .json(
            "POST",
            &format!("/v1/queues/ms/jobs/{id}/extend"),
            json!({"lease_token": token, "lease": 120_000}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let until = r.json()["lease_until_ms"].as_u64().unwrap();
    let from_now = u128::from(until) - before;
    assert!((119_000..=125_000).contains(&from_now), "{from_now} ms");
    let r = api
        .json(
            "PUT",
            "/v1/queues/ms/schedules/tick",
            json!({"every": 60_000, "job": {"name": "tick"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["every_ms"], 60_000, "{}", r.text());
    let r = api
        .json(
            "POST",
            "/v1/queues/ms/clean",
            json!({"state": "completed", "grace": 3_600_000}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = api
        .json("POST", "/v1/locks/ms", json!({"ttl": 2_000, "wait": 100}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let r = api
        .json(
            "POST",
            "/v1/locks/ms/renew",
            json!({"token": token, "ttl": 5_000}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    // Refused as text durations are: with the field named.
    for (path, body, field) in [
        ("/v1/queues/ms/reserve", json!({"lease": 0}), "lease"),
        ("/v1/queues/ms/reserve", json!({"wait": 300_001}), "wait"),
        ("/v1/queues/ms/reserve", json!({"lease": -5}), "lease"),
        ("/v1/queues/ms/reserve", json!({"lease": 1.5}), "lease"),
        ("/v1/locks/ms2", json!({"ttl": 0}), "ttl"),
        (
            "/v1/queues/ms/reserve",
            json!({"lease": 400_000_000_000_u64}),
            "lease",
        ),
    ] {
        let r = api.json("POST", path, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(field), "{body}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_is_503_with_the_reason_and_cache_answers_from_l1() {
    let api = Api::start(true).await;
    let r = api
        .json("POST", "/v1/sessions", json!({"data": {"a": 1}}))
        .await;
    let id = r.json()["id"].as_str().unwrap().to_owned();
    api.call("PUT", "/v1/cache/ns/hot", b"warm").await;

    api.store().unreliable().unwrap().set_down(true);
    let r = api.call("GET", &format!("/v1/sessions/{id}"), b"").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.json()["error"].as_str().unwrap().contains("unavailable"),
        "{}",
        r.text()
    );
    assert!(r.json()["hint"].as_str().unwrap().contains("retry"));
    let r = api.call("GET", "/v1/cache/ns/hot", b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, b"warm");
    assert_eq!(r.header("x-cache"), Some("HIT-L1"));
    assert_eq!(api.call("GET", "/v1/cache/ns/cold", b"").await.status, 503);
    assert_eq!(
        api.json("POST", "/v1/queues/q/jobs", json!({"name": "x"}))
            .await
            .status,
        503
    );
    assert_eq!(api.raw("GET", "/health", &[], b"").await.status, 503);

    api.store().unreliable().unwrap().set_down(false);
    assert_eq!(
        api.call("GET", &format!("/v1/sessions/{id}"), b"")
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_413() {
    let api = Api::start_with(false, herd_services::ServicesConfig::default(), 1024).await;
    let big = vec![b'x'; 4096];
    let r = api.call("PUT", "/v1/cache/ns/big", &big).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.json()["hint"].as_str().unwrap().contains("smaller"));
    let r = api.call("PUT", "/v1/cache/ns/small", &big[..100]).await;
    assert_eq!(r.status, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_strictly_increase_under_contention_over_http() {
    let api = std::sync::Arc::new(Api::start(false).await);
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let api = std::sync::Arc::clone(&api);
        tasks.push(tokio::spawn(async move {
            let mut fences = Vec::new();
            for _ in 0..4 {
                let r = api
                    .json(
                        "POST",
                        "/v1/locks/shared",
                        json!({"ttl": "30s", "wait": "60s"}),
                    )
                    .await;
                assert_eq!(r.status, 200, "{}", r.text());
                fences.push(r.json()["fence"].as_u64().unwrap());
                let token = r.json()["token"].clone();
                let r = api
                    .json("DELETE", "/v1/locks/shared", json!({"token": token}))
                    .await;
                assert_eq!(r.status, 204, "{}", r.text());
            }
            fences
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let fences = t.await.unwrap();
        assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
        all.extend(fences);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 24, "every acquisition has its own fence");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_field_and_refuse_what_would_be_ignored() {
    let api = Api::start(false).await;
    let error = |r: &Resp| r.json()["error"].as_str().unwrap_or_default().to_owned();
    // The bearer scheme is case-insensitive (RFC 9110).
    let token = format!("bearer {TOKEN}");
    let r = api
        .raw("GET", "/v1/cache/stats", &[("authorization", &token)], b"")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A wrong method is 405 with a JSON error.
    let r = api.call("PATCH", "/v1/cache/ns/k", b"").await;
    assert_eq!(r.status, 405);
    assert!(error(&r).contains("PATCH"), "{}", r.text());
    // Type errors name the field, never a Rust type.
    let r = api
        .json(
            "POST",
            "/v1/queues/e/jobs",
            json!({"name": "x", "remove_on_complete": -1}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(error(&r).contains("`remove_on_complete`"), "{}", r.text());
    assert!(!error(&r).contains("KeepSpec"), "{}", r.text());
    // BullMQ's KeepJobs: a misspelt key is named, an empty object refused with a hint.
    let r = api
        .json(
            "POST",
            "/v1/queues/e/jobs",
            json!({"name": "x", "remove_on_fail": {"agee": 60}}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(error(&r).contains("agee"), "{}", r.text());
    let r = api
        .json(
            "POST",
            "/v1/queues/e/jobs",
            json!({"name": "x", "remove_on_complete": {}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("neither"), "{}", r.text());
    let r = api
        .json(
            "POST",
            "/v1/queues/kept/jobs",
            json!({"name": "x", "remove_on_complete": {"count": 10, "age": "1h"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = api
        .json(
            "POST",
            "/v1/queues/e/jobs",
            json!({"name": "x", "remove_on_complete": {"age": -5}, }),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        error(&r).contains("expected a number of seconds or a duration")
            && !error(&r).contains("AgeSpec"),
        "{}",
        r.text()
    );
    let r = api
        .json(
            "POST",
            "/v1/queues/e/jobs",
            json!({"name": "x", "attempts": -1}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(!error(&r).contains("u32"), "{}", r.text());
    let r = api.call("POST", "/v1/queues/e/reserve", b"0").await;
    assert_eq!(r.status, 400);
    assert!(!error(&r).contains("Body"), "{}", r.text());
    let r = api
        .call("POST", "/v1/ratelimit/k", br#"["10r/s", 1]"#)
        .await;
    assert_eq!(r.status, 400, "an array is not an object: {}", r.text());
    // A bulk add says which job is wrong, and refuses fields beside `jobs`.
    let r = api
        .json(
            "POST",
            "/v1/queues/e/jobs",
            json!({"jobs": [{"name": "ok"}, {"name": "bad", "priority": -1}]}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(error(&r).contains("jobs[1].priority"), "{}", r.text());
    let r = api
        .json(
            "POST",
            "/v1/queues/e/jobs",
            json!({"jobs": [{"name": "ok"}, {"name": "big", "priority": 3_000_000}]}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(error(&r).contains("jobs[1].priority"), "{}", r.text());
    let r = api
        .json(
            "POST",
            "/v1/queues/e/jobs",
            json!({"jobs": [{"name": "ok"}], "name": "x"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(error(&r).contains("`name`"), "{}", r.text());
    // Nested options are objects, never arrays of fields by position.
    for (body, field) in [
        (
            json!({"name": "j", "backoff": ["fixed", "1s"]}),
            "`backoff`",
        ),
        (json!({"jobs": [{"name": "ok"}, ["j"]]}), "`jobs[1]`"),
    ] {
        let r = api.json("POST", "/v1/queues/e/jobs", body).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(
            error(&r).contains(field) && error(&r).contains("expected a JSON object"),
            "{}",
            r.text()
        );
    }
    // One object and nothing after it: a second object is not half accepted.
    let r = api
        .call("POST", "/v1/queues/e/jobs", br#"{"name":"a"}{"name":"b"}"#)
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(error(&r).contains("invalid JSON body"), "{}", r.text());
    assert_eq!(
        api.call("GET", "/v1/queues/e", b"").await.json()["waiting"],
        0
    );
    // An oversized id is not echoed whole.
    let long = "x".repeat(5000);
    let r = api
        .json(
            "POST",
            "/v1/queues/e/jobs",
            json!({"name": "x", "job_id": long}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text().len() < 1000, "{}", r.text().len());
    // Waits over 5 m are refused alike by reserve and locks; a 0 s extend is refused.
    for path in ["/v1/queues/e/reserve", "/v1/locks/l"] {
        let r = api.json("POST", path, json!({"wait": "6m"})).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(error(&r).contains("5m"), "{}", r.text());
    }
    let r = api
        .json("POST", "/v1/queues/e/jobs", json!({"name": "x"}))
        .await;
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let r = api.json("POST", "/v1/queues/e/reserve", json!({})).await;
    let token = r.json()["jobs"][0]["lease_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = api
        .json(
            "POST",
            &format!("/v1/queues/e/jobs/{id}/extend"),
            json!({"lease_token": token, "lease": "0s"}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // A retry after a backoff, and a job added with a delay, are `delayed`.
    let r = api
        .json(
            "POST",
            &format!("/v1/queues/e/jobs/{id}/fail"),
            json!({"lease_token": token}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "failed", "one attempt: dead-lettered");
    let r = api
        .json(
            "POST",
            "/v1/queues/e/jobs",
            json!({"name": "later", "delay": "1h"}),
        )
        .await;
    let later = r.json()["id"].as_str().unwrap().to_owned();
    let r = api
        .call("GET", &format!("/v1/queues/e/jobs/{later}"), b"")
        .await;
    assert_eq!(r.json()["state"], "delayed", "{}", r.text());
    // A rate the store cannot count is bad input, said as such.
    let r = api
        .json("POST", "/v1/ratelimit/k", json!({"rate": "1000000000r/s"}))
        .await;
    assert_eq!(r.status, 400);
    assert!(error(&r).contains("rate"), "{}", r.text());
    assert!(!r.text().contains("herd:{rl"), "{}", r.text());
    // Regenerate honours If-Match; a weak ETag never matches.
    let r = api.json("POST", "/v1/sessions", json!({"data": {}})).await;
    let sid = r.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/sessions/{sid}/regenerate");
    let auth = format!("Bearer {TOKEN}");
    let r = api
        .raw(
            "POST",
            &path,
            &[("authorization", &auth), ("if-match", "\"99\"")],
            b"",
        )
        .await;
    assert_eq!(r.status, 412, "{}", r.text());
    let r = api
        .raw(
            "POST",
            &path,
            &[("authorization", &auth), ("if-match", "W/\"1\"")],
            b"",
        )
        .await;
    assert_eq!(r.status, 412, "{}", r.text());
    assert_eq!(
        api.call("GET", &format!("/v1/sessions/{sid}"), b"")
            .await
            .status,
        200
    );
    // A schedule's job cannot carry a job_id (the schedule names its jobs).
    let r = api
        .json(
            "PUT",
            "/v1/queues/e/schedules/s1",
            json!({"every": "1m", "job": {"name": "x", "job_id": "fixed"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(error(&r).contains("job_id"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_listing_removal_drain_and_schedules() {
    let api = Api::start(false).await;
    for name in ["a", "b", "c"] {
        let r = api
            .json("POST", "/v1/queues/br/jobs", json!({ "name": name }))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let r = api
        .json("POST", "/v1/queues/br/reserve", json!({"max": 1}))
        .await;
    let leased = r.json()["jobs"][0]["id"].as_str().unwrap().to_owned();

    let r = api
        .call("GET", "/v1/queues/br/jobs?state=active", b"")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let active = &r.json()["jobs"][0];
    assert_eq!(active["state"], "active");
    assert!(active.get("lease_token").is_none(), "{active}");
    let r = api
        .call(
            "GET",
            "/v1/queues/br/jobs?state=waiting&offset=1&limit=5",
            b"",
        )
        .await;
    let names: Vec<String> = r.json()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["c"]);
    for (query, needle) in [
        ("", "missing query parameter `state`"),
        ("?state=nope", "not a job state"),
        ("?state=waiting&limit=x", "invalid query"),
        ("?state=waiting&sort=asc", "invalid query"),
    ] {
        let r = api
            .call("GET", &format!("/v1/queues/br/jobs{query}"), b"")
            .await;
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        assert!(r.text().contains(needle), "{query}: {}", r.text());
    }

    let r = api
        .call("DELETE", &format!("/v1/queues/br/jobs/{leased}"), b"")
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.json()["hint"].as_str().unwrap().contains("ack or fail"));
    let waiting = api
        .call("GET", "/v1/queues/br/jobs?state=waiting", b"")
        .await
        .json()["jobs"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/queues/br/jobs/{waiting}");
    assert_eq!(api.call("DELETE", &path, b"").await.status, 204);
    assert_eq!(api.call("DELETE", &path, b"").await.status, 404);
    assert_eq!(api.call("GET", &path, b"").await.status, 404);

    let r = api
        .json(
            "POST",
            "/v1/queues/br/jobs",
            json!({"name": "d", "delay": "1h"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let r = api.call("POST", "/v1/queues/br/drain", b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"waiting": 1, "delayed": 0}));
    let r = api
        .json("POST", "/v1/queues/br/drain", json!({"delayed": true}))
        .await;
    assert_eq!(r.json(), json!({"waiting": 0, "delayed": 1}));
    let r = api
        .json("POST", "/v1/queues/br/drain", json!({"delayd": true}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let counts = api.call("GET", "/v1/queues/br", b"").await.json();
    assert_eq!(
        (&counts["waiting"], &counts["delayed"], &counts["active"]),
        (&json!(0), &json!(0), &json!(1))
    );

    let r = api
        .json(
            "PUT",
            "/v1/queues/br/schedules/nightly",
            json!({"cron": "0 3 * * *", "tz": "Europe/Paris", "job": {"name": "report"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = api.call("GET", "/v1/queues/br/schedules", b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["schedules"][0]["name"], "nightly");
    let r = api
        .call("GET", "/v1/queues/br/schedules/nightly", b"")
        .await;
    assert_eq!(r.json()["tz"], "Europe/Paris");
    assert_eq!(r.json()["job"]["name"], "report");
    assert_eq!(
        api.call("GET", "/v1/queues/br/schedules/other", b"")
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_segment_that_is_not_utf8_gets_the_json_error() {
    let api = Api::start(false).await;
    for (method, path) in [
        ("PUT", "/v1/cache/keys/%FF"),
        ("GET", "/v1/sessions/%FF"),
        ("POST", "/v1/locks/%FF"),
    ] {
        let r = api.call(method, path, b"{}").await;
        assert_eq!(r.status, 400, "{method} {path}: {}", r.text());
        let v = r.json();
        assert!(v["error"].as_str().unwrap().contains("invalid path"), "{v}");
        assert!(v["hint"].is_string(), "{v}");
    }
}

/// Inputs that used to be ignored or to leak the store's own error: a query where none is
/// read, a compressed body, a TTL under the store's 1 ms resolution, a tag that could never
/// have been set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_that_would_be_ignored_or_leak_are_refused() {
    let api = Api::start(false).await;
    let auth = format!("Bearer {TOKEN}");
    let error = |r: &Resp| r.json()["error"].as_str().unwrap_or_default().to_owned();
    // A query where the endpoint reads none.
    let r = api.call("POST", "/v1/locks/l?ttl=1s&wait=5s", b"{}").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        error(&r).contains("\"ttl\", \"wait\"")
            && r.json()["hint"].as_str().unwrap().contains("body"),
        "{}",
        r.text()
    );
    let r = api.call("POST", "/v1/sessions?ttl=5s", b"{}").await;
    assert_eq!(r.status, 400, "{}", r.text());
    // Where a query is read, it still works.
    let r = api
        .call("PUT", "/v1/cache/ns/k?ttl=1h&tags=a,%20b", b"v")
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = api
        .call("GET", "/v1/queues/q/jobs?state=waiting", b"")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A compressed body: 415, not stored as its compressed bytes.
    let r = api
        .raw(
            "PUT",
            "/v1/cache/ns/gz",
            &[("authorization", &auth), ("content-encoding", "gzip")],
            b"\x1f\x8b",
        )
        .await;
    assert_eq!(r.status, 415, "{}", r.text());
    assert!(error(&r).contains("gzip"), "{}", r.text());
    // TTLs under 1 ms: the field and the rule, never the store's key.
    for (method, path, body) in [
        ("POST", "/v1/sessions", r#"{"ttl":"0.5ms"}"#),
        ("PUT", "/v1/cache/ns/k2?ttl=0.9ms", "v"),
        ("GET", "/v1/cache/ns/k3?fill=0.5ms", ""),
    ] {
        let r = api.call(method, path, body.as_bytes()).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(
            error(&r).contains("1ms") && !r.text().contains("herd:{"),
            "{path}: {}",
            r.text()
        );
    }
    let r = api
        .json("POST", "/v1/sessions", serde_json::json!({}))
        .await;
    let id = r.json()["id"].as_str().unwrap().to_owned();
    for (method, path) in [
        ("POST", format!("/v1/sessions/{id}/touch")),
        ("PATCH", format!("/v1/sessions/{id}")),
    ] {
        let r = api.call(method, &path, br#"{"ttl":"0.5ms"}"#).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(error(&r).contains("at least 1ms"), "{path}: {}", r.text());
    }
    // Tags: invalidate takes what put takes.
    let r = api
        .json(
            "POST",
            "/v1/cache/ns/invalidate",
            serde_json::json!({"tag": "b"}),
        )
        .await;
    assert_eq!(
        (r.status, &r.json()["removed"]),
        (200, &serde_json::json!(1)),
        "{}",
        r.text()
    );
    for bad in [" b", "", "{x}"] {
        let r = api
            .json(
                "POST",
                "/v1/cache/ns/invalidate",
                serde_json::json!({"tag": bad}),
            )
            .await;
        assert_eq!(r.status, 400, "{bad:?}: {}", r.text());
    }
    let r = api.call("PUT", "/v1/cache/ns/%00", b"v").await;
    assert!(error(&r).contains("contains NUL"), "{}", r.text());
    // A duration given as a number: the hint shows the form.
    let r = api
        .json("POST", "/v1/sessions", serde_json::json!({"ttl": 30}))
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["hint"]
            .as_str()
            .unwrap()
            .contains(r#""ttl": "1h""#),
        "{}",
        r.text()
    );
    // No body where one is needed: said so, not "at line 1 column 2".
    let r = api.call("DELETE", "/v1/locks/l", b"").await;
    assert_eq!(r.status, 400);
    assert!(
        error(&r).contains("needs a JSON body with `token`"),
        "{}",
        r.text()
    );
}

/// RFC 9110 conditions on sessions, and express-session's flow: the app makes the id, then
/// saves (`PUT` with `If-None-Match: *` creates it, never over an existing one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_conditions_and_caller_made_ids() {
    let api = Api::start(false).await;
    let auth = format!("Bearer {TOKEN}");
    let id = "k2GZ8jG4ZP1Zr0x0eTHWUvQv0q3n7-_A"; // 32 characters, as express-session's
    let create = |body: &'static str| {
        let auth = auth.clone();
        let api = &api;
        async move {
            api.raw(
                "PUT",
                &format!("/v1/sessions/{id}"),
                &[("authorization", &auth), ("if-none-match", "*")],
                body.as_bytes(),
            )
            .await
        }
    };
    let r = create(r#"{"data":{"user":"ada"}}"#).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("etag"), Some("\"1\""));
    let r = create(r#"{"data":{"user":"eve"}}"#).await;
    assert_eq!(r.status, 412, "never over an existing id: {}", r.text());
    let r = api.call("GET", &format!("/v1/sessions/{id}"), b"").await;
    assert_eq!(r.json()["data"]["user"], "ada");
    // A weak id is refused.
    let r = api
        .raw(
            "PUT",
            "/v1/sessions/short",
            &[("authorization", &auth), ("if-none-match", "*")],
            br#"{"data":{}}"#,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // If-None-Match on a read: 304 with the ETag, no body.
    let r = api
        .raw(
            "GET",
            &format!("/v1/sessions/{id}"),
            &[("authorization", &auth), ("if-none-match", "W/\"1\"")],
            b"",
        )
        .await;
    assert_eq!(
        (r.status, r.header("etag"), r.body.len()),
        (304, Some("\"1\""), 0)
    );
    // If-None-Match where it cannot be honoured is refused, never ignored; so is If-Match
    // on a touch. Nothing changes.
    for (method, path, header, body) in [
        ("PATCH", "", "if-none-match", &br#"{"data":{"x":1}}"#[..]),
        ("DELETE", "", "if-none-match", b""),
        ("POST", "/regenerate", "if-none-match", b""),
        ("POST", "/touch", "if-none-match", b"{}"),
        ("POST", "/touch", "if-match", b"{}"),
    ] {
        let r = api
            .raw(
                method,
                &format!("/v1/sessions/{id}{path}"),
                &[("authorization", &auth), (header, "*")],
                body,
            )
            .await;
        assert_eq!(r.status, 400, "{method} {path} {header}: {}", r.text());
        assert!(r.text().contains("If-"), "{}", r.text());
    }
    let r = api.call("GET", &format!("/v1/sessions/{id}"), b"").await;
    assert_eq!((r.status, r.header("etag")), (200, Some("\"1\"")));
    // Half a surrogate pair, as JSON.stringify writes `'😀'.slice(0, 1)`: saved, with U+FFFD
    // in its place (a Rust string cannot hold it).
    let r = api
        .call(
            "POST",
            "/v1/sessions",
            br#"{"data":{"t":"a\ud83d","ok":"\ud83d\ude00"}}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let sid = r.json()["id"].as_str().unwrap().to_owned();
    let r = api.call("GET", &format!("/v1/sessions/{sid}"), b"").await;
    assert_eq!(r.json()["data"]["t"], "a\u{fffd}");
    assert_eq!(r.json()["data"]["ok"], "\u{1f600}");
    // If-Match that no version could be, and If-Match on a missing session: 412.
    for tag in ["\"01\"", "\"abc\""] {
        let r = api
            .raw(
                "PUT",
                &format!("/v1/sessions/{id}"),
                &[("authorization", &auth), ("if-match", tag)],
                br#"{"data":{}}"#,
            )
            .await;
        assert_eq!(r.status, 412, "{tag}: {}", r.text());
    }
    let missing = "AAAAAAAAAAAAAAAAAAAAAA";
    for method in ["PUT", "PATCH", "DELETE"] {
        let r = api
            .raw(
                method,
                &format!("/v1/sessions/{missing}"),
                &[("authorization", &auth), ("if-match", "*")],
                br#"{"data":{}}"#,
            )
            .await;
        assert_eq!(r.status, 412, "{method}: {}", r.text());
    }
    let r = api
        .call("DELETE", &format!("/v1/sessions/{missing}"), b"")
        .await;
    assert_eq!(r.status, 404, "without a condition, missing is 404");
    // A save racing a logout: the ended id is not created again (express-session's store
    // falls back to a create when its replace finds no session).
    let ended = "Zx9GZ8jG4ZP1Zr0x0eTHWUvQv0q3n7-_";
    let put = |cond: Option<(&'static str, &'static str)>| {
        let auth = auth.clone();
        let api = &api;
        async move {
            let mut headers = vec![("authorization", auth.as_str())];
            headers.extend(cond);
            api.raw(
                "PUT",
                &format!("/v1/sessions/{ended}"),
                &headers,
                br#"{"data":{"user":"ada"}}"#,
            )
            .await
        }
    };
    assert_eq!(put(Some(("if-none-match", "*"))).await.status, 201);
    let r = api
        .call("DELETE", &format!("/v1/sessions/{ended}"), b"")
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(put(None).await.status, 404, "a replace finds no session");
    let r = put(Some(("if-none-match", "*"))).await;
    assert_eq!(
        r.status,
        412,
        "the logged-out id is not brought back: {}",
        r.text()
    );
    let r = api.call("GET", &format!("/v1/sessions/{ended}"), b"").await;
    assert_eq!(r.status, 404);
    let r = api
        .call("DELETE", &format!("/v1/sessions/{ended}"), b"")
        .await;
    assert_eq!(r.status, 404, "ended once");
    // A session cannot be PATCHed past the size a request may carry.
    let half = "x".repeat(600 * 1024);
    let r = api
        .json(
            "PATCH",
            &format!("/v1/sessions/{id}"),
            serde_json::json!({"data": {"a": half}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = api
        .json(
            "PATCH",
            &format!("/v1/sessions/{id}"),
            serde_json::json!({"data": {"b": half}}),
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.json()["hint"].as_str().unwrap().contains("max_body_size"));
    // The same after a regenerate (login): the pre-login id stays ended.
    let r = api
        .call("POST", &format!("/v1/sessions/{id}/regenerate"), b"")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = api
        .raw(
            "PUT",
            &format!("/v1/sessions/{id}"),
            &[("authorization", &auth), ("if-none-match", "*")],
            br#"{"data":{}}"#,
        )
        .await;
    assert_eq!(r.status, 412, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_uploading_past_the_limit_reads_the_413() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // No `Expect: 100-continue` (Node's fetch, Python's urllib): the client sends the whole
    // body while herd has already answered. A plain close would reset the upload.
    let api = Api::start(false).await;
    let mut s = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    let size = 16 << 20;
    let head = format!(
        "POST /v1/queues/big/jobs HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {size}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let body = vec![b' '; size];
    s.write_all(&body).await.expect("the upload is not reset");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
}
