//! The data plane through the real herd binary: an app spoken to over h2c (demo-app's listener
//! speaks HTTP/2 with prior knowledge) on the number of gateway threads `[gateway] threads` sets.

mod common;

use common::{base_config, demo_app, get, Herd};

#[tokio::test]
async fn an_h2c_app_is_reached_over_http2_on_the_configured_threads() {
    let config = base_config("").replace("[admin]", "threads = 2\n[admin]")
        + &demo_app("web", 1, "protocol = \"h2c\"");
    let herd = Herd::start(&config);
    herd.wait_ready("web", 1).await;
    for _ in 0..5 {
        let (status, body) = get(&herd.url("/version")).await.unwrap();
        assert_eq!((status, body.as_str()), (200, "HTTP/2.0"), "{}", herd.log());
    }
    let (status, body) = get(&herd.url("/")).await.unwrap();
    assert_eq!(status, 200);
    assert!(body.starts_with("hello from web-"), "{body}");
    // The log may be coloured: strip the escapes before looking for the field.
    let raw = herd.log();
    let mut pieces = raw.split('\x1b');
    let mut log = pieces.next().unwrap_or("").to_owned();
    for p in pieces {
        log.push_str(p.split_once('m').map_or(p, |(_, rest)| rest));
    }
    // Two gateway threads (shards), each with its own listening socket.
    assert!(
        log.lines()
            .any(|l| l.contains("gateway listening") && l.contains("threads=2")),
        "{log}"
    );
}
