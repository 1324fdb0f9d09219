//! TLS with a real herd: the certificate files are replaced (unseen by the file watcher), and a
//! reload (SIGHUP or `POST /config/reload`) serves the new certificate to new handshakes while a
//! connection opened before keeps working.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// Writes a self-signed certificate for `localhost` as cert.pem / key.pem in `dir`. Every
/// version has the same sizes (padded with newlines) and the same modification time, so herd's
/// file watcher (which compares those) never notices: only an explicit reload picks it up.
fn write_cert(dir: &std::path::Path) -> CertificateDer<'static> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let same = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for (name, pem, size) in [
        ("cert.pem", ck.cert.pem(), 4096),
        ("key.pem", ck.key_pair.serialize_pem(), 2048),
    ] {
        assert!(pem.len() < size);
        let padded = format!("{pem}{}", "\n".repeat(size - pem.len()));
        let path = dir.join(name);
        std::fs::write(&path, padded).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(same).unwrap();
    }
    ck.cert.der().clone()
}

/// A TLS connection to herd's gateway that trusts `roots`.
async fn connect(port: u16, roots: &[&CertificateDer<'static>]) -> TlsStream<TcpStream> {
    connect_to(port, "localhost", roots).await.unwrap()
}

/// The same with `name` as the server name (SNI, and the name the certificate must carry).
async fn connect_to(
    port: u16,
    name: &str,
    roots: &[&CertificateDer<'static>],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
}

fn peer(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// One keep-alive HTTP/1.1 GET on `tls`; returns the status line.
async fn get(tls: &mut TlsStream<TcpStream>) -> String {
    tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut have = 0;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf[have..]))
            .await
            .expect("no answer")
            .unwrap();
        assert!(n > 0, "connection closed");
        have += n;
        let text = String::from_utf8_lossy(&buf[..have]);
        if text.contains("hello from") {
            return text.lines().next().unwrap().to_owned();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificates_are_served_after_a_reload_without_dropping_connections() {
    let certs = tempfile::tempdir().unwrap();
    let old = write_cert(certs.path());
    let config = format!(
        "{}\n[gateway.tls]\ncert = \"{}\"\nkey = \"{}\"\n{}",
        base_config(""),
        certs.path().join("cert.pem").display(),
        certs.path().join("key.pem").display(),
        demo_app("web", 1, "")
    );
    let herd = Herd::start(&config);
    herd.wait_ready("web", 1).await;
    let mut open = connect(herd.gateway, &[&old]).await;
    assert_eq!(peer(&open), old);
    assert_eq!(get(&mut open).await, "HTTP/1.1 200 OK");

    // Replace the files; POST /config/reload re-reads them.
    let new = write_cert(certs.path());
    let (code, body) = herd.reload_config().await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("tls: certificates re-read"), "{body}");
    let fresh = connect(herd.gateway, &[&old, &new]).await;
    assert_eq!(peer(&fresh), new);
    assert_eq!(
        get(&mut open).await,
        "HTTP/1.1 200 OK",
        "the old connection goes on"
    );

    // The watcher does not see a change it cannot notice (same sizes and times): still `new`.
    let newer = write_cert(certs.path());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let unseen = connect(herd.gateway, &[&new, &newer]).await;
    assert_eq!(peer(&unseen), new, "only a reload re-reads the files");

    // SIGHUP does.
    herd.signal(nix::sys::signal::Signal::SIGHUP);
    let mut served = None;
    for _ in 0..100 {
        let tls = connect(herd.gateway, &[&old, &new, &newer]).await;
        if peer(&tls) == newer {
            served = Some(tls);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut tls = served.expect("the newest certificate is served after SIGHUP");
    assert_eq!(get(&mut tls).await, "HTTP/1.1 200 OK");
    assert_eq!(
        get(&mut open).await,
        "HTTP/1.1 200 OK",
        "the first connection still goes on"
    );
    assert!(
        herd.log().contains("config reloaded on SIGHUP"),
        "{}",
        herd.log()
    );
    // A certificate file that cannot be loaded refuses the whole reload (a renewal hook
    // must not hear "reloaded" while the old certificate stays), and the one in force stays.
    std::fs::write(certs.path().join("cert.pem"), "garbage\n").unwrap();
    let (code, body) = herd.reload_config().await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("[gateway.tls]"), "{body}");
    assert!(body.contains("cert.pem"), "names the file: {body}");
    let still = connect(herd.gateway, &[&old, &new, &newer]).await;
    assert_eq!(peer(&still), newer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sni_certificate_added_by_a_config_reload_is_served_at_once() {
    let certs = tempfile::tempdir().unwrap();
    let default = write_cert(certs.path());
    let api_dir = certs.path().join("api");
    std::fs::create_dir(&api_dir).unwrap();
    let api = rcgen::generate_simple_self_signed(vec!["api.test".to_owned()]).unwrap();
    std::fs::write(api_dir.join("cert.pem"), api.cert.pem()).unwrap();
    std::fs::write(api_dir.join("key.pem"), api.key_pair.serialize_pem()).unwrap();
    let api_cert = api.cert.der().clone();
    let tls = format!(
        "\n[gateway.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        certs.path().join("cert.pem").display(),
        certs.path().join("key.pem").display(),
    );
    let herd = Herd::start(&format!(
        "{}{tls}{}",
        base_config(""),
        demo_app("web", 1, "")
    ));
    herd.wait_ready("web", 1).await;
    let roots = [&default, &api_cert];
    // Before: api.test gets the default certificate, which does not name it.
    assert!(connect_to(herd.gateway, "api.test", &roots).await.is_err());
    let mut open = connect(herd.gateway, &roots).await;
    assert_eq!(get(&mut open).await, "HTTP/1.1 200 OK");

    let sni = format!(
        "\n[[gateway.tls.sni]]\nhost = \"api.test\"\ncert = \"{}\"\nkey = \"{}\"\n",
        api_dir.join("cert.pem").display(),
        api_dir.join("key.pem").display(),
    );
    let text = std::fs::read_to_string(&herd.config).unwrap();
    std::fs::write(&herd.config, text.replace(&tls, &format!("{tls}{sni}"))).unwrap();
    let (code, body) = herd.reload_config().await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("SNI entries changed"), "{body}");
    assert!(!body.contains("needs_restart\":[\""), "{body}");
    let fresh = connect_to(herd.gateway, "api.test", &roots).await.unwrap();
    assert_eq!(peer(&fresh), api_cert);
    assert_eq!(peer(&connect(herd.gateway, &roots).await), default);
    assert_eq!(
        get(&mut open).await,
        "HTTP/1.1 200 OK",
        "the open connection goes on"
    );

    // A new entry whose file is missing refuses the reload; the set in force stays.
    let text = std::fs::read_to_string(&herd.config).unwrap();
    let broken = text.replace(
        &sni,
        &sni.replace("api.test", "b.test")
            .replace("api/cert.pem", "api/none.pem"),
    );
    std::fs::write(
        &herd.config,
        format!("{text}{}", &broken[text.len().min(broken.len())..]),
    )
    .unwrap();
    let with_missing = format!(
        "{text}\n[[gateway.tls.sni]]\nhost = \"b.test\"\ncert = \"{}\"\nkey = \"{}\"\n",
        api_dir.join("none.pem").display(),
        api_dir.join("key.pem").display(),
    );
    std::fs::write(&herd.config, with_missing).unwrap();
    let (code, body) = herd.reload_config().await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("none.pem"), "{body}");
    let still = connect_to(herd.gateway, "api.test", &roots).await.unwrap();
    assert_eq!(peer(&still), api_cert);
}
