//! Test support for crates that need real Redis servers (feature `testkit`, for dev-dependencies
//! only): one redis-server or a 3-master Redis Cluster on free loopback ports, files under a
//! temp dir, killed when dropped. Missing redis-server is a panic that says how to install it,
//! never a skipped test.

#![allow(clippy::missing_panics_doc)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer its first PING (generous: shared CI machines).
const READY: Duration = Duration::from_secs(20);

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/opt/homebrew/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    if Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
    {
        return PathBuf::from(name);
    }
    panic!("{name} not found: install redis-server (scripts/test.sh does)");
}

/// A free port whose cluster bus port (+10000) is free as well.
pub fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// One redis-server child process.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    cluster: bool,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on `port` with its files under `dir` and waits until it answers PING.
    pub fn start(dir: &Path, port: u16, cluster: bool) -> RedisServer {
        RedisServer::start_with(dir, port, cluster, &[])
    }

    /// As [`RedisServer::start`], with extra server arguments (e.g. `--requirepass`).
    pub fn start_with(dir: &Path, port: u16, cluster: bool, extra: &[&str]) -> RedisServer {
        let extra = extra.iter().map(|a| (*a).to_owned()).collect();
        let mut s = RedisServer {
            port,
            dir: dir.to_path_buf(),
            cluster,
            extra,
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut cmd = Command::new(tool("redis-server"));
        cmd.args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]);
        cmd.arg("--dir").arg(&self.dir);
        if self.cluster {
            let conf = self.dir.join(format!("nodes-{port}.conf"));
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "5000",
                "--cluster-config-file",
            ])
            .arg(conf);
        }
        cmd.args(&self.extra);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("failed to spawn redis-server"));
        let deadline = Instant::now() + READY;
        let auth: Vec<&str> = match self.extra.iter().position(|a| a == "--requirepass") {
            Some(i) => vec!["--no-auth-warning", "-a", &self.extra[i + 1], "ping"],
            None => vec!["ping"],
        };
        while cli(self.port, &auth).trim() != "PONG" {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within {READY:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): a frozen server accepts connections and never answers.
    pub fn freeze(&self, frozen: bool) {
        let pid = self
            .child
            .as_ref()
            .expect("server running")
            .id()
            .to_string();
        let sig = if frozen { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .map(|s| s.success());
        assert!(
            matches!(ok, Ok(true)),
            "failed to send {sig} to redis-server {pid}"
        );
    }

    /// Starts again on the same port (empty: nothing was saved).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs redis-cli against `port`; its stdout.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new(tool("redis-cli"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// A 3-master Redis Cluster.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start(dir.path(), free_port(), true))
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new(tool("redis-cli"))
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("failed to run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in &nodes {
            while !cli(n.port, &["cluster", "info"]).contains("cluster_state:ok") {
                assert!(
                    Instant::now() < deadline,
                    "cluster did not reach cluster_state:ok within 30 s"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        RedisCluster { nodes, _dir: dir }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}
