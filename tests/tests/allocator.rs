//! The binaries cap glibc's malloc arenas (crates/nagare-pipeline/src/malloc.rs): started
//! without `MALLOC_ARENA_MAX`, a running process has it set (it executed itself again, same
//! PID: `Proc` checks the ready file's pid); a value from the environment is kept, and
//! `NAGARE_MALLOC_TUNING=off` leaves the environment alone.

use nagare_e2e::*;

const CONFIG: &str = "<source>\n  @type forward\n  bind 127.0.0.1\n  port 0\n</source>\n<match **>\n  @type null\n</match>\n";

/// Extra environment for a start.
type Env<'a> = &'a [(&'a str, &'a str)];

/// `MALLOC_ARENA_MAX` in the running process's environment.
fn arena_max(p: &Proc) -> Option<String> {
    let env = std::fs::read(format!("/proc/{}/environ", p.pid)).expect("read /proc/PID/environ");
    env.split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix("MALLOC_ARENA_MAX=").map(str::to_string))
}

#[test]
fn arenas_are_capped_unless_the_environment_says_otherwise() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    // Whatever runs the tests may set these itself: the expectations follow.
    let inherited = std::env::var("MALLOC_ARENA_MAX").ok();
    let tuning_off =
        std::env::var("NAGARE_MALLOC_TUNING").is_ok_and(|v| v.eq_ignore_ascii_case("off"));
    let default = match (&inherited, tuning_off) {
        (Some(v), _) => Some(v.clone()),
        (None, true) => None,
        (None, false) => Some("2".to_string()),
    };
    let dir = TempDir::new("allocator");
    let cases: [(&str, Env, Option<String>); 3] = [
        ("default", &[], default),
        ("chosen", &[("MALLOC_ARENA_MAX", "4")], Some("4".into())),
        ("off", &[("NAGARE_MALLOC_TUNING", "off")], inherited.clone()),
    ];
    for (name, env, want) in cases {
        for role in [Role::Forwarder, Role::Aggregator] {
            let label = format!("{name}-{}", role.binary_name());
            let mut p = Proc::start_with_env(role, &label, dir.path(), CONFIG, env);
            assert_eq!(arena_max(&p), want, "{label}");
            p.stop_ok();
        }
    }
}
