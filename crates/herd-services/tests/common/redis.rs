//! Real redis-server processes for the Redis runs: one server, or a 3-master cluster, on free
//! ports under a temp dir, killed on drop (the pattern of herd-store's test harness).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_store::{Store, StoreOptions};

use super::TempDir;

/// How long a server may take to answer its first PING (generous: shared CI machines).
const READY: Duration = Duration::from_secs(20);

/// A free port whose cluster bus port (+10000) is free as well.
fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// One redis-server child.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: std::path::PathBuf,
    cluster: bool,
}

impl RedisServer {
    pub fn start(dir: &TempDir, cluster: bool) -> RedisServer {
        let mut s = RedisServer {
            port: free_port(),
            child: None,
            dir: dir.0.clone(),
            cluster,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        cmd.arg("--dir").arg(&self.dir);
        if self.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "5000",
                "--cluster-config-file",
            ])
            .arg(self.dir.join(format!("nodes-{port}.conf")));
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        self.child = Some(
            cmd.spawn()
                .expect("failed to spawn redis-server (install redis-server)"),
        );
        let deadline = Instant::now() + READY;
        while cli(self.port, &["ping"]).trim() != "PONG" {
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not answer PING",
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

    /// A new connection (one herd node's store handle).
    pub async fn store(&self) -> Arc<Store> {
        Arc::new(
            Store::open(&StoreOptions::Redis {
                urls: vec![self.url()],
                cluster: false,
                timeout: Duration::from_secs(5),
            })
            .await
            .unwrap(),
        )
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 3-master Redis Cluster.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(dir: &TempDir) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start(dir, true)).collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
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
                assert!(Instant::now() < deadline, "cluster not ok within 30 s");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        RedisCluster { nodes }
    }

    pub async fn store(&self) -> Arc<Store> {
        Arc::new(
            Store::open(&StoreOptions::Redis {
                urls: self.nodes.iter().map(RedisServer::url).collect(),
                cluster: true,
                timeout: Duration::from_secs(5),
            })
            .await
            .unwrap(),
        )
    }
}
