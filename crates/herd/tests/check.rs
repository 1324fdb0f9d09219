//! `herd check`: exit 0 on a good file; every error with file:line:col, key and hint, exit 64.

mod common;

use common::*;

/// Runs `herd ARGS... PATH`.
fn herd_on(args: &[&str], path: &std::path::Path) -> std::process::Output {
    std::process::Command::new(herd_bin())
        .args(args)
        .arg(path)
        .output()
        .unwrap()
}

fn check(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "herd.toml", text);
    let out = herd_on(&["check", "-c"], &path);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn the_shipped_example_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/herd.toml");
    let out = herd_on(
        &["check", "--config-only", "-c"],
        std::path::Path::new(example),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_app_that_cannot_be_started_is_refused_by_check_and_up() {
    let dir = tempfile::tempdir().unwrap();
    let app = |command: &str, cwd: &str| {
        format!("[[app]]\nname = \"web\"\ncommand = {command}\ncwd = \"{cwd}\"\n")
    };
    std::fs::create_dir(dir.path().join("srv")).unwrap();
    std::fs::write(dir.path().join("srv/notes.txt"), "x").unwrap();
    let cases: &[(String, &str)] = &[
        (app("[\"./serverx\"]", "srv"), "srv/serverx: no such file"),
        (
            app("[\"./notes.txt\"]", "srv"),
            "notes.txt: is not executable",
        ),
        (
            app("[\"nodee\", \"server.js\"]", "srv"),
            "program \"nodee\" not found on PATH",
        ),
        (app("[\"sh\"]", "gone"), "cwd: cannot use"),
    ];
    for (text, expected) in cases {
        let path = write(dir.path(), "herd.toml", text);
        let out = herd_on(&["check", "-c"], &path);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{text}\n{said}");
        assert!(
            said.contains(expected) && said.contains("hint:"),
            "{expected}:\n{said}"
        );
        // The file alone is fine.
        let out = herd_on(&["check", "--config-only", "-c"], &path);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // `herd up` refuses it before listening on anything.
        let out = herd_on(&["up", "-c"], &path);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{said}");
        assert!(
            said.contains(expected) && said.contains("not starting"),
            "{said}"
        );
    }
    // A program that is there: ok.
    let path = write(
        dir.path(),
        "herd.toml",
        &app("[\"sh\", \"-c\", \"true\"]", "srv"),
    );
    let out = herd_on(&["check", "-c"], &path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_unknown_key_is_reported_with_herds_name_for_pm2s() {
    let (code, out) = check("[[app]]\nname = \"web\"\ncommand = [\"sh\"]\nmax_memory_restart = \"300M\"\nexec_mode = \"cluster\"\n[gateway]\nlistn = \"127.0.0.1:80\"\n");
    assert_eq!(code, Some(64), "{out}");
    assert!(
        out.contains("herd.toml:4:1: app[0].max_memory_restart: unknown key"),
        "{out}"
    );
    assert!(
        out.contains("PM2's \"max_memory_restart\" is \"max_memory\" in herd"),
        "{out}"
    );
    assert!(
        out.contains("herd.toml:5:1: app[0].exec_mode: unknown key"),
        "{out}"
    );
    assert!(
        out.contains("herd.toml:7:1: gateway.listn: unknown key"),
        "{out}"
    );
    assert!(out.contains("3 error(s)"), "{out}");
}

#[test]
fn each_broken_config_names_line_and_key_and_exits_64() {
    let cases: &[(&str, &str, &str)] = &[
        ("[[app]]\nname = \"web\"\ncommand = [\"x\"]\ninstancez = 3\n", "herd.toml:4:", "instancez"),
        ("[[app]]\nname = \"web\"\ncommand = [\"x\"]\nkill_timeout = \"5 parsecs\"\n", "herd.toml:4:", "kill_timeout"),
        ("[[app]]\nname = \"web\"\ncommand = [\"x\"]\ninstances = 5\nport_range = \"20000-20002\"\n", "herd.toml:", "port_range"),
        ("[[app]]\nname = \"web\"\n", "herd.toml:1:", "command"),
        ("[[app]]\nname = \"web\"\ncommand = [\"x\"]\n\n[[app]]\nname = \"web\"\ncommand = [\"y\"]\n", "herd.toml:6:", "name"),
        ("[[app]]\nname = \"web\"\ncommand = [\"x\"]\n[app.health]\ninterval = \"2x\"\n", "herd.toml:5:", "health.interval"),
    ];
    for (text, location, key) in cases {
        let (code, out) = check(text);
        assert_eq!(code, Some(64), "{text}\n{out}");
        assert!(
            out.contains(location),
            "expected {location} in:\n{out}\nfor:\n{text}"
        );
        assert!(out.contains(key), "expected key {key} in:\n{out}");
        assert!(out.contains("hint:"), "expected a hint in:\n{out}");
    }
}

#[test]
fn all_errors_are_reported_at_once() {
    let (code, out) = check("[[app]]\nname = \"web\"\ncommand = [\"x\"]\nkill_timeout = \"nope\"\nmax_memory = \"lots\"\n[[route]]\napp = \"api\"\n");
    assert_eq!(code, Some(64));
    for k in ["kill_timeout", "max_memory", "route[0].app"] {
        assert!(out.contains(k), "{k} missing:\n{out}");
    }
}

#[test]
fn quick_mode_rejects_bad_flags_with_64() {
    let out = std::process::Command::new(herd_bin())
        .args(["up", "-i", "0", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max"));
    let out = std::process::Command::new(herd_bin())
        .args(["up", "--port-range", "21000-20000", "--", "true"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{said}");
    assert!(said.starts_with("command line: --port-range: "), "{said}");
    // PM2's `pm2 start server.js`: the command goes after `--`, and herd says so.
    let out = std::process::Command::new(herd_bin())
        .args(["up", "server.js"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{said}");
    assert!(said.contains("herd up -- node server.js"), "{said}");
}

#[test]
fn quick_mode_flags_with_a_config_file_are_refused_not_ignored() {
    let out = std::process::Command::new(herd_bin())
        .args([
            "up",
            "-c",
            "examples/demo.toml",
            "--port",
            "3000",
            "--admin",
            "127.0.0.1:9999",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{said}");
    assert!(
        said.contains("--port, --admin are for quick mode only"),
        "{said}"
    );
}

#[test]
fn a_config_file_with_a_quick_mode_command_is_refused_not_ignored() {
    let out = std::process::Command::new(herd_bin())
        .args(["up", "-c", "examples/demo.toml", "--", "node", "server.js"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{said}");
    assert!(said.contains("exclude each other"), "{said}");
}

#[test]
fn an_access_log_that_cannot_be_written_stops_check_and_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herd.toml");
    std::fs::write(
        &path,
        "[gateway]\naccess_log = \"/nonexistent-herd-dir/a.log\"\n[[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\n",
    )
    .unwrap();
    for args in [&["check", "-c"][..], &["up", "-c"][..]] {
        let out = std::process::Command::new(herd_bin())
            .args(args)
            .arg(&path)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {said}");
        assert!(
            said.contains("gateway.access_log:") && said.contains("does not exist"),
            "{args:?}: {said}"
        );
    }
}

#[test]
fn a_logs_dir_that_is_a_file_fails_check() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
    let path = dir.path().join("herd.toml");
    std::fs::write(
        &path,
        "[logs]\ndir = \"notes.txt\"\n[[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(herd_bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{said}");
    assert!(
        said.contains("logs.dir:") && said.contains("is a file"),
        "{said}"
    );
}

#[test]
fn unloadable_certificates_stop_up_with_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herd.toml");
    std::fs::write(
        &path,
        "[gateway]\nlisten = \"127.0.0.1:0\"\n[gateway.tls]\ncert = \"bad.pem\"\nkey = \"bad.key\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[app]]\nname = \"web\"\nservers = [\"127.0.0.1:1\"]\n",
    )
    .unwrap();
    // Files that exist but hold no certificate: only loading them finds out.
    std::fs::write(dir.path().join("bad.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("bad.key"), "not a key").unwrap();
    let out = herd_on(&["up", "-c"], &path);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{said}");
    assert!(
        said.contains("not starting: the certificates of [gateway.tls]"),
        "{said}"
    );
}

#[test]
fn an_embedded_store_that_cannot_be_created_is_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the store's directory should be.
    write(dir.path(), "blocker", "x");
    let (code, said) = check(&format!(
        "[store]\npath = \"{}/blocker/store.redb\"\n[[app]]\nname = \"web\"\ncommand = [\"sh\"]\n",
        dir.path().display()
    ));
    assert_eq!(code, Some(64), "{said}");
    assert!(
        said.contains("store.path: ") && said.contains("is not a directory"),
        "{said}"
    );
    // A directory where the store's file should be.
    let (code, said) = check(&format!(
        "[store]\npath = \"{}\"\n[[app]]\nname = \"web\"\ncommand = [\"sh\"]\n",
        dir.path().display()
    ));
    assert_eq!(code, Some(64), "{said}");
    assert!(said.contains("is a directory"), "{said}");
    // Without the services, herd opens no store.
    let (code, said) = check(&format!(
        "[services]\nenabled = false\n[store]\npath = \"{}/blocker/store.redb\"\n[[app]]\nname = \"web\"\ncommand = [\"sh\"]\n",
        dir.path().display()
    ));
    assert_eq!(code, Some(0), "{said}");
}
