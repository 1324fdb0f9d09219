//! `herd check`: exit 0 on a good file; every error with file:line:col, key and hint, exit 64.

mod common;

use common::*;

fn check(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "herd.toml", text);
    let out = std::process::Command::new(herd_bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn the_shipped_example_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/herd.toml");
    let out = std::process::Command::new(herd_bin())
        .args(["check", "-c", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
}
