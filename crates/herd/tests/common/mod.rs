//! Test harness: real `herd` processes on loopback, real demo-app instances, a small HTTP client.
#![allow(dead_code, unreachable_pub)]

pub mod crash;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub fn herd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_herd"))
}

/// `<target>/test-artifacts`, next to the `debug`/`release` folder holding the herd binary:
/// what tests keep for people to look at (screenshots, the crash tests' reports). The test
/// script prints the reports at its end.
#[allow(dead_code)]
pub fn artifacts_dir() -> PathBuf {
    let bin = herd_bin();
    let target = bin
        .parent()
        .and_then(std::path::Path::parent)
        .expect("herd binary lives in <target>/<profile>/");
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The demo app binary, built next to `herd` (built on demand when a plain `cargo test` ran).
pub fn demo_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let path = herd_bin().with_file_name("demo-app");
            let status = Command::new(env!("CARGO"))
                .args(["build", "-q", "-p", "demo-app"])
                .status()
                .expect("failed to run cargo to build demo-app");
            assert!(status.success(), "building demo-app failed");
            assert!(path.exists(), "demo-app not found at {}", path.display());
            path
        })
        .clone()
}

/// A free loopback port (bound then released), never the same one twice in this test process:
/// concurrent tests must not end up sharing a listener address.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A block of `n` consecutive ports that are free now, for an app's `port_range`.
pub fn free_range(n: u16) -> (u16, u16) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let salt = NEXT.fetch_add(1, Ordering::Relaxed) as u16;
        // Below Linux's ephemeral range (32768+), where `free_port` and outgoing connections
        // take their ports, so an app's instances never race a listener of another test.
        let base = 10000 + ((std::process::id() as u16 % 200) * 97 + salt * 53) % 22000;
        let all_free =
            (base..base + n).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return (base, base + n - 1);
        }
    }
}

pub struct Herd {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub gateway: u16,
    pub admin: u16,
    /// The services API's port (`{services}`; a `[services]` section with it is added when the
    /// config has none, so parallel tests never share the default 127.0.0.1:9091).
    pub services: u16,
    pub config: PathBuf,
    /// Extra environment of the herd process (kept across restarts).
    pub env: Vec<(String, String)>,
}

impl Herd {
    /// Writes `config` (with `{gateway}`, `{admin}`, `{demo}`, `{logs}` substituted) and starts
    /// `herd up -c` on it; waits until the admin API answers.
    pub fn start(config: &str) -> Herd {
        Herd::start_with_env(config, &[])
    }

    /// [`Herd::start`] with extra environment variables for the herd process.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Herd {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let gateway = free_port();
        let admin = free_port();
        let services = free_port();
        let mut config = config.to_owned();
        if !config.contains("[services]") {
            config.push_str("\n[services]\nlisten = \"{services}\"\n");
        }
        let text = config
            .replace("{gateway}", &format!("127.0.0.1:{gateway}"))
            .replace("{services}", &format!("127.0.0.1:{services}"))
            .replace("{admin}", &format!("127.0.0.1:{admin}"))
            .replace("{demo}", &demo_bin().display().to_string())
            .replace("{logs}", &dir.path().join("logs").display().to_string());
        let path = dir.path().join("herd.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::File::create(dir.path().join("herd.log")).unwrap();
        let child = spawn_herd(&path, &dir.path().join("herd.log"), &env);
        let mut herd = Herd {
            child: Some(child),
            dir,
            gateway,
            admin,
            services,
            config: path,
            env,
        };
        herd.wait_admin();
        herd
    }

    /// SIGKILLs herd (its instances die with it) and starts it again on the same config file,
    /// ports and store; waits until the admin API answers again.
    pub fn kill9_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let before = self.log().matches("admin API listening").count();
        self.child = Some(spawn_herd(
            &self.config,
            &self.dir.path().join("herd.log"),
            &self.env,
        ));
        self.wait_admin_n(before + 1);
    }

    pub fn services_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.services)
    }

    fn wait_admin(&mut self) {
        self.wait_admin_n(1);
    }

    /// Waits until the admin API answers and herd has logged it is listening `n` times.
    fn wait_admin_n(&mut self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "herd exited ({status}) before its admin API came up; log:\n{}",
                    self.log()
                );
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.admin)).is_ok()
                && self.log().matches("admin API listening").count() >= n
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("herd admin API did not come up; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("herd.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.gateway)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    /// `POST /config/reload`: the status and body of the answer.
    pub async fn reload_config(&self) -> (u16, String) {
        request(
            http::Method::POST,
            &self.admin_url("/config/reload"),
            bytes::Bytes::new(),
        )
        .await
        .unwrap()
    }

    pub async fn status(&self) -> Value {
        // herd reads its admin token from its environment too.
        let bearer = self
            .env
            .iter()
            .find(|(k, _)| k == "HERD_ADMIN_TOKEN")
            .map(|(_, t)| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .iter()
            .map(|b| ("authorization", b.as_str()))
            .collect();
        let (code, _, body) = call(
            http::Method::GET,
            &self.admin_url("/cluster/status"),
            &headers,
            Bytes::new(),
        )
        .await
        .unwrap();
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub async fn instances(&self, app: &str) -> Vec<Value> {
        let s = self.status().await;
        s["apps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == app)
            .map(|a| a["instances"].as_array().unwrap().clone())
            .unwrap_or_default()
    }

    /// Waits (bounded) until `pred` holds for the app's instances.
    pub async fn wait_for(
        &self,
        app: &str,
        what: &str,
        limit: Duration,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let inst = self.instances(app).await;
            if pred(&inst) {
                return inst;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; instances: {inst:#?}\nlog:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_ready(&self, app: &str, n: usize) -> Vec<Value> {
        self.wait_for(
            app,
            &format!("{n} ready instances of {app}"),
            Duration::from_secs(20),
            |i| i.iter().filter(|x| x["state"] == "ready").count() == n && i.len() == n,
        )
        .await
    }

    /// Runs the herd CLI against this herd's admin API.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(herd_bin())
            .args(args)
            .env("HERD_ADMIN_URL", format!("http://127.0.0.1:{}", self.admin))
            .output()
            .unwrap()
    }

    /// Replaces the demo-app `command` in the config file with `command` (a TOML array) and
    /// applies it with `herd reload --config`, which must accept it.
    pub fn reload_with_command(&self, command: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let demo = demo_bin().display().to_string();
        let changed = text.replacen(
            &format!("command = [\"{demo}\"]"),
            &format!("command = {command}"),
            1,
        );
        assert_ne!(changed, text, "no demo-app command to replace");
        std::fs::write(&self.config, changed).unwrap();
        let out = self.cli(&["reload", "--config"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for herd to exit (bounded), returning its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn spawn_herd(config: &Path, log: &Path, env: &[(String, String)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .unwrap();
    Command::new(herd_bin())
        .args(["up", "-c"])
        .arg(config)
        .env("HERD_LOG", "info")
        // Only what a test passes: a token in the caller's shell would lock its admin API.
        .env_remove("HERD_ADMIN_TOKEN")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

impl Drop for Herd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGKILL: the instances die with herd (parent-death signal).
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

pub fn pids(instances: &[Value]) -> Vec<i32> {
    instances
        .iter()
        .filter_map(|i| i["pid"].as_i64())
        .map(|p| p as i32)
        .collect()
}

fn client() -> &'static Client<HttpConnector, Full<Bytes>> {
    static C: OnceLock<Client<HttpConnector, Full<Bytes>>> = OnceLock::new();
    C.get_or_init(|| {
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(2))
            .build_http()
    })
}

/// GET returning (status, body text).
pub async fn get(url: &str) -> Result<(u16, String), String> {
    request(http::Method::GET, url, Bytes::new()).await
}

pub async fn request(
    method: http::Method,
    url: &str,
    body: Bytes,
) -> Result<(u16, String), String> {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), client().request(req))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Any request with headers; returns (status, response headers, body text).
pub async fn call(
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<(u16, http::HeaderMap, String), String> {
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(body.into()))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), client().request(req))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

/// Outcome counts of a load run.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub ok: u64,
    pub failed: u64,
    pub failures: Vec<String>,
}

/// Runs `workers` clients, each sending GET `url` every `pace` until `stop` is set.
pub fn load(
    url: String,
    workers: usize,
    pace: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<LoadReport> {
    tokio::spawn(async move {
        let mut handles = Vec::new();
        for _ in 0..workers {
            let url = url.clone();
            let stop = Arc::clone(&stop);
            handles.push(tokio::spawn(async move {
                let mut r = LoadReport::default();
                let mut tick = tokio::time::interval(pace);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    match get(&url).await {
                        Ok((200, _)) => r.ok += 1,
                        Ok((code, body)) => {
                            r.failed += 1;
                            r.failures.push(format!("{code}: {body}"));
                        }
                        Err(e) => {
                            r.failed += 1;
                            r.failures.push(e);
                        }
                    }
                }
                r
            }));
        }
        let mut total = LoadReport::default();
        for h in handles {
            let r = h.await.unwrap();
            total.ok += r.ok;
            total.failed += r.failed;
            total.failures.extend(r.failures);
        }
        total
    })
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The `[gateway]`, `[admin]` (with `admin_extra` lines) and `[logs]` sections every test uses.
pub fn base_config(admin_extra: &str) -> String {
    format!(
        "[gateway]\nlisten = \"{{gateway}}\"\n[admin]\nlisten = \"{{admin}}\"\n{admin_extra}\n[logs]\ndir = \"{{logs}}\"\n"
    )
}

/// One `[[app]]` running demo-app with its own free port range, plus `extra` keys.
pub fn demo_app(name: &str, instances: u32, extra: &str) -> String {
    let (a, b) = free_range(12);
    format!(
        "\n[[app]]\nname = \"{name}\"\ncommand = [\"{{demo}}\"]\ninstances = {instances}\nport_range = \"{a}-{b}\"\n{extra}\n"
    )
}

/// A real `redis-server` on a free loopback port, without persistence, with its files in a
/// temp dir; killed on drop (herd-store's testkit).
pub struct Redis {
    server: herd_store::testkit::RedisServer,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let server = herd_store::testkit::RedisServer::start(
            dir.path(),
            herd_store::testkit::free_port(),
            false,
        );
        Redis { server, _dir: dir }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Starts the server again on the same port (empty: nothing was saved).
    pub fn restart(&mut self) {
        self.server.restart();
    }

    /// SIGKILLs the server.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): a hung server, that takes connections and never
    /// answers.
    #[allow(dead_code)]
    pub fn freeze(&self, frozen: bool) {
        self.server.freeze(frozen);
    }

    /// Runs `redis-cli` against the server; its output.
    #[allow(dead_code)]
    pub fn cli(&self, args: &[&str]) -> String {
        herd_store::testkit::cli(self.server.port, args)
    }
}
