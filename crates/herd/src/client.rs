//! The CLI side of the admin API: `herd status`, `scale`, `reload`, `logs`.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{anyhow, Context as _};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::cli::{ClientArgs, Target};

const EX_UNAVAILABLE: u8 = 69;

pub(crate) enum Action {
    Status,
    Scale {
        app: String,
        instances: crate::cli::Count,
        reason: Option<String>,
    },
    Reload {
        app: Option<String>,
    },
    ReloadConfig,
    Logs {
        app: String,
        follow: bool,
        lines: usize,
    },
}

pub(crate) fn run(args: ClientArgs, action: Action) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herd: failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let target = match args.target() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("herd: {e}");
            return ExitCode::from(crate::EX_CONFIG);
        }
    };
    match rt.block_on(execute(&target, action)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herd: {e:#}");
            ExitCode::from(e.downcast_ref::<Failure>().map_or(1, |f| f.code))
        }
    }
}

/// What `herd scale` asks the running herd for (`None`: `auto`): a count, or `"max"`, which
/// that herd resolves against its own machine's cores. `+N`/`-N` start from the app's
/// desired count there.
async fn resolve_count(
    args: &Target,
    app: &str,
    count: crate::cli::Count,
) -> anyhow::Result<Option<Value>> {
    use crate::cli::Count;
    let delta = match count {
        Count::Auto => return Ok(None),
        Count::Set(n) => return Ok(Some(json!(n))),
        Count::Max => return Ok(Some(json!("max"))),
        Count::Add(n) => i64::from(n),
        Count::Remove(n) => -i64::from(n),
    };
    let v = request(args, Method::GET, "/cluster/status", None).await?;
    let desired = v["apps"]
        .as_array()
        .and_then(|apps| apps.iter().find(|a| a["name"] == app))
        .and_then(|a| a["desired"].as_i64())
        .ok_or_else(|| anyhow::anyhow!("no app named {app:?} in the running herd"))?;
    if desired + delta < 0 || (desired + delta == 0 && delta < 0) {
        // A relative count that would reach zero is most likely a slip (`-5` for `-1`): zero
        // stops every instance, so it is said outright.
        anyhow::bail!(
            "{app} runs {desired} instance(s); removing {} would leave {}: to stop every instance, run `herd scale {app} 0`",
            -delta,
            if desired + delta < 0 { "fewer than none".to_owned() } else { "none".to_owned() }
        );
    }
    Ok(Some(json!(
        u32::try_from(desired + delta).unwrap_or(u32::MAX)
    )))
}

/// A failure with its own exit code: 69 when the admin API could not be reached at all, 64
/// when the running herd refused the config file (as `herd check`); other errors exit 1.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn unreachable(message: String) -> Self {
        Failure {
            code: EX_UNAVAILABLE,
            message,
        }
    }

    fn rejected(message: String) -> Self {
        Failure {
            code: crate::EX_CONFIG,
            message,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

async fn execute(args: &Target, action: Action) -> anyhow::Result<()> {
    match action {
        Action::Status => {
            let mut v = request(args, Method::GET, "/cluster/status", None).await?;
            // Each app's autoscaler, for what overrides it (a manual count, a pause).
            if let Ok(scaling) = request(args, Method::GET, "/scaling/status", None).await {
                let by_name = scaling["apps"].as_array().cloned().unwrap_or_default();
                if let Some(apps) = v["apps"].as_array_mut() {
                    for app in apps {
                        if let Some(s) = by_name.iter().find(|s| s["name"] == app["name"]) {
                            app["scaling"] = s.clone();
                        }
                    }
                }
            }
            print!("{}", crate::table::render(&v));
        }
        Action::Scale {
            app,
            instances,
            reason,
        } => {
            let Some(instances) = resolve_count(args, &app, instances).await? else {
                let body = json!({"app": app, "clear": true});
                request(args, Method::POST, "/scaling/manual", Some(body)).await?;
                println!("{app}: manual count dropped; the autoscaler decides again");
                return Ok(());
            };
            let body = json!({"app": app, "instances": instances, "reason": reason.unwrap_or_else(|| "herd scale".into())});
            let v = request(args, Method::POST, "/scaling/manual", Some(body)).await?;
            match (v["instances"].as_u64(), v["requested"].as_u64()) {
                (Some(n), Some(asked)) if n != asked => println!(
                    "{app}: scaling to {n} instance(s) (asked for {asked}; autoscaling's min/max bound it)"
                ),
                (Some(0), _) => println!(
                    "{app}: scaling to 0 instances: every request gets 503 until it is scaled up again"
                ),
                (Some(n), _) => println!("{app}: scaling to {n} instance(s)"),
                _ => println!("{app}: scaling to {instances} instance(s)"),
            }
        }
        Action::Reload { app } => {
            let body = json!({"app": app});
            request(args, Method::POST, "/reload", Some(body)).await?;
            println!("{}: reloaded", app.as_deref().unwrap_or("all apps"));
        }
        Action::ReloadConfig => {
            let resp = send(args, Method::POST, "/config/reload", None).await?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if let Some(errors) = v["errors"].as_array() {
                let lines: Vec<&str> = errors.iter().filter_map(Value::as_str).collect();
                return Err(Failure::rejected(format!(
                    "{status}: the new config was not applied; the running config stays in force\n{}",
                    lines.join("\n")
                ))
                .into());
            }
            if !status.is_success() {
                return Err(api_error(status, &bytes));
            }
            let list = |key: &str| -> Vec<String> {
                v["report"][key]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let (changes, restart) = (list("changes"), list("needs_restart"));
            match (changes.is_empty(), restart.is_empty()) {
                (true, true) => println!("config reloaded: nothing changed"),
                (true, false) => println!("config reloaded: nothing applied live"),
                _ => {}
            }
            for c in changes {
                println!("changed: {c}");
            }
            for r in restart {
                println!("needs a restart: {r}");
            }
        }
        Action::Logs { app, follow, lines } => {
            let path = format!("/logs/{app}?lines={lines}&follow={follow}");
            let resp = send(args, Method::GET, &path, None).await?;
            let status = resp.status();
            let mut body = resp.into_body();
            if !status.is_success() {
                let bytes = body.collect().await?.to_bytes();
                return Err(api_error(status, &bytes));
            }
            let mut out = std::io::stdout().lock();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    match out.write_all(&data).and_then(|()| out.flush()) {
                        Ok(()) => {}
                        // The reader went away (`herd logs -f | head`): done, as `tail -f`.
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            if follow {
                // Following ends only when herd ends the stream: say so, rather than leave
                // the user wondering whether the app went quiet.
                eprintln!("herd: the log stream ended (herd is stopping, or its admin API closed the stream)");
            }
        }
    }
    Ok(())
}

async fn send(
    args: &Target,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
    let base = args.admin.trim_end_matches('/');
    // A bare address (what `herd up --admin` takes) means http://.
    let scheme = if base.contains("://") { "" } else { "http://" };
    let uri = format!("{scheme}{base}{path}");
    let mut req = Request::builder().method(method).uri(&uri);
    if let Some(token) = &args.token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let payload = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(serde_json::to_vec(&v)?)
        }
        None => Bytes::new(),
    };
    let req = req.body(Full::new(payload)).with_context(|| {
        format!("invalid admin URL {uri:?} (expected e.g. http://127.0.0.1:9090)")
    })?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    client.request(req).await.map_err(|e| {
        anyhow!(Failure::unreachable(format!(
            "cannot reach the admin API at {base}: {e} (is `herd up` running? set --admin or HERD_ADMIN_URL)"
        )))
    })
}

fn api_error(status: StatusCode, body: &[u8]) -> anyhow::Error {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let msg = v["error"]
        .as_str()
        .map_or_else(|| String::from_utf8_lossy(body).into_owned(), str::to_owned);
    match v["hint"].as_str() {
        Some(h) => anyhow!("{status}: {msg}\n  hint: {h}"),
        None => anyhow!("{status}: {msg}"),
    }
}

async fn request(
    args: &Target,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let resp = send(args, method, path, body).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(api_error(status, &bytes));
    }
    serde_json::from_slice(&bytes).map_err(|_| {
        anyhow!(
            "{} answered {path} with something that is not JSON: is it herd's admin API? (check --admin or HERD_ADMIN_URL: the admin listener, [admin] listen, not the gateway)",
            args.admin
        )
    })
}
