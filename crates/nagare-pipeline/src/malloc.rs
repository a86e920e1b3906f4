//! Capping glibc's malloc arenas.
//!
//! glibc gives every thread that allocates under contention its own arena (up to 8 per core)
//! and keeps what is freed in each of them for later: the tokio workers and the blocking
//! threads that read chunks back and encode S3 objects each end up holding megabytes nobody
//! uses again. On the forwarder example pipeline (`crates/nagare-loadgen/pipeline.sh`) the
//! arenas were a quarter of the peak RSS (71 MB with glibc's default, 49-59 MB with one or two
//! arenas) for the same CPU time; see docs/benchmarks.md. Fluent Bit and Vector ship jemalloc
//! for the same reason; a replacement allocator tried here (mimalloc) doubled the peak instead.
//!
//! glibc reads `MALLOC_ARENA_MAX` once, at startup, and setting it later needs `mallopt`
//! through FFI, which this code base does not use. So at the very start of `main`, before any
//! thread exists, a process whose environment does not set `MALLOC_ARENA_MAX` executes itself
//! again (same PID, same arguments, `/proc/self/exe`) with [`DEFAULT_MALLOC_ARENA_MAX`] set.
//! Set the variable yourself to choose another cap (glibc's default behaviour: `8` per core
//! times the cores); set `NAGARE_MALLOC_TUNING=off` to skip the re-execution entirely. If the
//! re-execution fails (no `/proc`, say), the process carries on with glibc's default.

use std::ffi::OsString;

/// Arenas when the environment does not say.
pub const DEFAULT_MALLOC_ARENA_MAX: &str = "2";
/// glibc's variable.
pub const ARENA_VAR: &str = "MALLOC_ARENA_MAX";
/// `off` leaves the allocator as glibc configures it.
pub const TUNING_VAR: &str = "NAGARE_MALLOC_TUNING";

/// What [`cap_arenas`] would do in an environment (pure: tested without exec).
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Leave the process as it is.
    Keep,
    /// Execute again with `MALLOC_ARENA_MAX` set to this.
    Reexec(&'static str),
}

/// The decision, from the two variables' values.
pub fn plan(arena: Option<&OsString>, tuning: Option<&OsString>) -> Plan {
    let glibc = cfg!(all(target_os = "linux", target_env = "gnu"));
    let off = tuning.is_some_and(|v| v.eq_ignore_ascii_case("off"));
    if !glibc || off || arena.is_some() {
        Plan::Keep
    } else {
        Plan::Reexec(DEFAULT_MALLOC_ARENA_MAX)
    }
}

/// Call first thing in `main`, while the process has one thread: re-executes with the arena cap
/// set when the environment does not set one (see the module docs). Returns only when the
/// process goes on as it is.
pub fn cap_arenas() {
    let arena = std::env::var_os(ARENA_VAR);
    let tuning = std::env::var_os(TUNING_VAR);
    let Plan::Reexec(value) = plan(arena.as_ref(), tuning.as_ref()) else {
        return;
    };
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| OsString::from("nagare"));
        let err = std::process::Command::new("/proc/self/exe")
            .arg0(arg0)
            .args(args)
            .env(ARENA_VAR, value)
            .exec();
        // exec returns only on failure: say so once and carry on untuned.
        eprintln!("note: could not re-execute with {ARENA_VAR}={value} ({err}); glibc's default arenas stay");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reexecs_only_when_nothing_is_set() {
        let glibc = cfg!(all(target_os = "linux", target_env = "gnu"));
        let want = if glibc {
            Plan::Reexec(DEFAULT_MALLOC_ARENA_MAX)
        } else {
            Plan::Keep
        };
        assert_eq!(plan(None, None), want);
        assert_eq!(plan(Some(&"8".into()), None), Plan::Keep);
        assert_eq!(plan(None, Some(&"OFF".into())), Plan::Keep);
        assert_eq!(plan(None, Some(&"on".into())), want);
    }
}
