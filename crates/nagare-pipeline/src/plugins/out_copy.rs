//! `@type copy`: every `<store>` gets the events; the emit commits only when every store
//! committed (a store with `ignore_error true` may fail without failing the copy, counted).
//! `<store ignore_if_prev_success>` is skipped when the store just before it took the events
//! (Fluentd's `success[i - 1]`: a skipped store does not count as a success), so
//! `<store ignore_error>primary</store><store ignore_if_prev_success ignore_error>backup</store>`
//! sends to the backup only what the primary refused.

use crate::plugin::{OutputPlugin, Tasks};
use crate::BuildCtx;
use nagare_config::{ConfigError, Section};
use nagare_core::ack::Committed;
use nagare_core::metrics::ReasonCounters;
use nagare_core::ratelimit::LogLimiter;
use nagare_core::{EmitError, EventStream};
use std::sync::Arc;

/// The words a `<store ...>` argument may hold.
#[derive(Debug, Clone, Copy, Default)]
struct StoreFlags {
    ignore_error: bool,
    ignore_if_prev_success: bool,
}

pub struct CopyOutput {
    id: String,
    stores: Vec<(Arc<dyn OutputPlugin>, StoreFlags)>,
    /// Events a store under `ignore_error` did not take, by the store's reason.
    ignored: ReasonCounters,
    limiter: LogLimiter,
}

pub fn build(
    sec: &Section,
    ctx: &mut BuildCtx,
    tasks: &mut Tasks,
) -> Result<Arc<dyn OutputPlugin>, ConfigError> {
    let id = super::plugin_id(sec, ctx, "copy");
    let mut p = sec.params();
    p.ignore("@type");
    p.ignore("@id");
    p.ignore("@log_level");
    let _mode = p.enumeration(
        "copy_mode",
        &["no_copy", "shallow", "deep", "marshal"],
        "no_copy",
    )?;
    let mut stores = Vec::new();
    for s in p.sections("store") {
        let flags = store_flags(s, stores.is_empty())?;
        stores.push((super::build_output(s, ctx, tasks)?, flags));
    }
    p.finish()?;
    if stores.is_empty() {
        return Err(ConfigError::new(
            sec.span.clone(),
            "copy needs at least one <store>",
        ));
    }
    Ok(Arc::new(CopyOutput {
        ignored: ReasonCounters::new(
            "nagare_copy_store_errors_ignored_total",
            "Events a copy store under ignore_error failed to take",
            &[("plugin_id", &id)],
        ),
        id,
        stores,
        limiter: LogLimiter::default(),
    }))
}

/// Reads the words of `<store ...>`. Fluentd tests `arg.include?("ignore_error")` (a
/// substring); here each word must be one of the two, so a typo fails the load instead of
/// silently changing delivery.
fn store_flags(s: &Section, first: bool) -> Result<StoreFlags, ConfigError> {
    let mut f = StoreFlags::default();
    for w in s.arg.split_whitespace() {
        match w {
            "ignore_error" => f.ignore_error = true,
            "ignore_if_prev_success" => f.ignore_if_prev_success = true,
            other => {
                return Err(ConfigError::new(
                    s.span.clone(),
                    format!("unknown <store> argument '{other}': expected ignore_error and/or ignore_if_prev_success, separated by spaces"),
                ))
            }
        }
    }
    if first && f.ignore_if_prev_success {
        return Err(ConfigError::new(
            s.span.clone(),
            "ignore_if_prev_success must be on the 2nd or a later <store> (it refers to the store before it)",
        ));
    }
    Ok(f)
}

impl CopyOutput {
    /// One store's emit: `Ok(true)` if it took the events, `Ok(false)` if it failed under
    /// `ignore_error` (counted, logged and swallowed).
    async fn emit_to(&self, i: usize, stream: EventStream) -> Result<bool, EmitError> {
        let (store, flags) = &self.stores[i];
        let events = stream.len() as u64;
        match store.emit(stream).await {
            Ok(_) => Ok(true),
            Err(e) if flags.ignore_error => {
                self.ignored.add(e.reason, events);
                if let Some(suppressed) = self.limiter.check(e.reason) {
                    tracing::warn!(plugin_id = %self.id, store = i, reason = e.reason, events, suppressed, "a copy store under ignore_error did not take these events: counted, not retried");
                }
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether store `i` is skipped: it has `ignore_if_prev_success` and store `i - 1` took
    /// the events (`prev` is `None` when store `i - 1` was itself skipped).
    fn skip(&self, i: usize, prev: Option<bool>) -> bool {
        self.stores[i].1.ignore_if_prev_success && prev == Some(true)
    }
}

#[async_trait::async_trait]
impl OutputPlugin for CopyOutput {
    async fn emit(&self, stream: EventStream) -> Result<Committed, EmitError> {
        // Records share their bytes, so a copy per store is cheap (reference counts); the last
        // store takes the stream itself.
        let last = self.stores.len() - 1;
        // Whether the previous store took the events; `None` if it was skipped.
        let mut prev = None;
        for i in 0..last {
            prev = if self.skip(i, prev) {
                None
            } else {
                Some(self.emit_to(i, stream.clone()).await?)
            };
        }
        if !self.skip(last, prev) {
            self.emit_to(last, stream).await?;
        }
        Ok(Committed::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nagare_core::{Event, EventTime, Record, Tag};
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A store that takes (counting the events) or refuses every emit.
    struct Fake {
        refuse: bool,
        took: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl OutputPlugin for Fake {
        async fn emit(&self, stream: EventStream) -> Result<Committed, EmitError> {
            if self.refuse {
                return Err(EmitError::new("buffer_full"));
            }
            self.took.fetch_add(stream.len(), Ordering::SeqCst);
            Ok(Committed::new())
        }
    }

    fn copy(stores: &[(bool, &str)]) -> (CopyOutput, Vec<Arc<Fake>>) {
        let fakes: Vec<Arc<Fake>> = stores
            .iter()
            .map(|(refuse, _)| {
                Arc::new(Fake {
                    refuse: *refuse,
                    took: AtomicUsize::new(0),
                })
            })
            .collect();
        let out = CopyOutput {
            id: "copy_test".into(),
            stores: fakes
                .iter()
                .zip(stores)
                .map(|(f, (_, arg))| {
                    let sec = Section {
                        name: "store".into(),
                        arg: arg.to_string(),
                        params: Vec::new(),
                        children: Vec::new(),
                        span: nagare_config::parse_str("", Path::new("t.conf"))
                            .unwrap()
                            .span,
                    };
                    let flags = store_flags(&sec, false).unwrap();
                    (f.clone() as Arc<dyn OutputPlugin>, flags)
                })
                .collect(),
            ignored: ReasonCounters::new(
                "nagare_copy_store_errors_ignored_total",
                "test",
                &[("plugin_id", "copy_test")],
            ),
            limiter: LogLimiter::default(),
        };
        (out, fakes)
    }

    fn stream(n: usize) -> EventStream {
        let ev = Event {
            time: EventTime::new(1, 0),
            record: Record::from_pairs(&[("k", "v")]),
        };
        EventStream::new(Tag::new("t"), vec![ev; n])
    }

    fn took(f: &[Arc<Fake>]) -> Vec<usize> {
        f.iter().map(|f| f.took.load(Ordering::SeqCst)).collect()
    }

    #[tokio::test]
    async fn ignore_if_prev_success_skips_the_backup_when_the_primary_took_the_events() {
        let (out, f) = copy(&[
            (false, "ignore_error"),
            (false, "ignore_if_prev_success ignore_error"),
        ]);
        out.emit(stream(3)).await.unwrap();
        assert_eq!(took(&f), [3, 0]);
    }

    #[tokio::test]
    async fn ignore_if_prev_success_sends_to_the_backup_when_the_primary_failed() {
        let (out, f) = copy(&[
            (true, "ignore_error"),
            (false, "ignore_if_prev_success ignore_error"),
        ]);
        out.emit(stream(3)).await.unwrap();
        assert_eq!(took(&f), [0, 3]);
    }

    #[tokio::test]
    async fn a_skipped_store_is_not_a_success_for_the_next() {
        // Fluentd: `success[i - 1]` is unset for a skipped store, so the third store runs.
        let (out, f) = copy(&[
            (false, ""),
            (false, "ignore_if_prev_success"),
            (false, "ignore_if_prev_success"),
        ]);
        out.emit(stream(2)).await.unwrap();
        assert_eq!(took(&f), [2, 0, 2]);
    }

    fn load_err(text: &str) -> String {
        let root = nagare_config::parse_str(text, Path::new("t.conf")).unwrap();
        let mut tasks = Tasks::default();
        match build(&root.children[0], &mut BuildCtx::default(), &mut tasks) {
            Ok(_) => panic!("loaded"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn store_arguments_are_checked_at_load() {
        let e = load_err("<match **>\n  @type copy\n  <store ignore_if_prev_success>\n    @type null\n  </store>\n</match>\n");
        assert!(
            e.contains("t.conf:3") && e.contains("2nd or a later"),
            "{e}"
        );
        let e = load_err("<match **>\n  @type copy\n  <store>\n    @type null\n  </store>\n  <store ignore_errors>\n    @type null\n  </store>\n</match>\n");
        assert!(
            e.contains("t.conf:6") && e.contains("'ignore_errors'"),
            "{e}"
        );
    }
}
