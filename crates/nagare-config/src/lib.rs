//! Fluentd's configuration language, classic and YAML, parsed into one tree of [`Section`]s
//! with source [`Span`]s, and typed, consuming parameter access ([`Params`]) that rejects
//! unknown parameters with `file:line:col`.
//!
//! ```
//! use std::path::Path;
//! use std::time::Duration;
//!
//! let root = nagare_config::parse_str(
//!     "<match app.**>\n  @type forward\n  <buffer>\n    flush_interval 5s\n  </buffer>\n</match>\n",
//!     Path::new("fluent.conf"),
//! )?;
//! let m = &root.children[0];
//! assert_eq!((m.name.as_str(), m.arg.as_str(), m.type_name()), ("match", "app.**", Some("forward")));
//! let mut p = m.params();
//! let buffer = p.section("buffer")?.expect("present");
//! p.finish()?;
//! let mut b = buffer.params();
//! assert_eq!(b.duration("flush_interval", Duration::from_secs(60))?, Duration::from_secs(5));
//! b.finish()?;
//! # Ok::<(), nagare_config::ConfigError>(())
//! ```
//!
//! # The tree
//!
//! [`parse_file`] returns the root, a [`Section`] named `ROOT` whose children are the
//! top-level directives (`<system>`, `<source>`, `<filter>`, `<match>`, `<label>`, ...) in
//! file order. Each section has a `name`, an `arg` (the text after the name: a tag pattern,
//! `@LABEL`, buffer chunk keys), `params` (in file order, `@type`/`@id`/`@label`/`@log_level`
//! included) and `children`. Both syntaxes build the same tree; the YAML rules are in the
//! [`yaml`](crate#yaml) section below.
//!
//! # Classic syntax (Fluentd v1)
//!
//! ```text
//! file      := line*
//! line      := blank | comment | open | close | include | param
//! comment   := '#' ... end-of-line            ('#' starts a comment at the start of a line's
//!                                              content or after whitespace: `a#b` is a value)
//! open      := '<' NAME (ws ARG)? ws? '>' eol  NAME = [A-Za-z0-9_]+; ARG = text up to '>', trimmed
//! close     := '</' NAME ws? '>' eol          must match the innermost open section
//! include   := '@include' ws PATH eol         anywhere; `include` (deprecated) at a file's top level
//! param     := KEY (ws VALUE)? eol            KEY = non-space run (or a quoted string);
//!                                              no VALUE (a bare key) means ""
//! VALUE     := '"' dq '"'                     escapes \" \' \\ \n \t \r \f \b \0, \<newline>
//!                                              joins lines, \<symbol> is the symbol, other
//!                                              \<letter> is an error; #{...} is evaluated (below);
//!                                              may span lines
//!            | '\'' sq '\''                   literal except \' and \\; may span lines
//!            | '[' ... ']' | '{' ... '}'      JSON, may span lines until the brackets balance
//!                                              ('#' outside JSON strings is a comment); stored
//!                                              as compact JSON, keys in order, as Fluentd does
//!            | unquoted                       to the end of the line or a comment, trimmed;
//!                                              `${tag}` and the like are kept verbatim
//! eol       := ws? comment? ('\n' | end-of-file)
//! ```
//!
//! `@include` takes a path relative to the including file (or absolute, or `file://...`); a
//! glob (`conf.d/*.conf`) includes every match in sorted order and may match nothing; a plain
//! path must exist. The included text is parsed in place, into the section that contains the
//! `@include`. Include cycles are an error.
//!
//! Keys starting with `@` are reserved: other than `@type`, `@id`, `@label`, `@log_level`
//! and `@include` they are an error at the top level and in `<source>`, `<match>`,
//! `<filter>` and `<system>` (as in Fluentd). A key set twice keeps both params in the tree;
//! typed access reads the last (as Fluentd) and a warning is logged.
//!
//! ## Embedded Ruby: the safe subset
//!
//! Inside double-quoted strings (also mid-string, several per string), and in YAML
//! `!fluent/s` strings, `#{...}` is evaluated by a small interpreter; nothing is executed.
//! Only these forms are accepted:
//!
//! | form | value |
//! | --- | --- |
//! | `ENV['NAME']`, `ENV["NAME"]` | the variable, or `""` when unset (Ruby's `nil`) |
//! | `ENV.fetch('NAME')` | the variable; an error when unset |
//! | `ENV.fetch('NAME', 'default')` | the variable, or the default when unset |
//! | `Socket.gethostname`, `hostname` | the hostname |
//! | `Socket.gethostname.split('.')[0]` (any separator, any index, `.first`, `.last`) | a part of it |
//! | `worker_id` | `"0"` (Nagare runs one worker) |
//! | `a \|\| b` | `a` unless it is nil (an unset `ENV[...]`), else `b`, like Ruby |
//! | `'literal'`, `""` (empty `#{}`) | itself |
//!
//! Anything else is a [`ConfigError`] listing these forms. An unquoted value containing `#{`
//! is an error too: Fluentd would keep it literally (it only evaluates inside double quotes),
//! which silently sends `#{ENV['X']}` as a value; quote it with `"` to evaluate or `'` to keep.
//!
//! The hostname is [`ParseOptions::hostname`] when set, else the environment variable
//! **`NAGARE_HOSTNAME`** when set (for tests and for containers whose hostname is not the
//! name to report), else the operating system's hostname. [`ParseOptions::env`] replaces the
//! process environment for `ENV[...]` (for tests).
//!
//! # YAML
//!
//! Fluentd's YAML format (`system:`, and `config:` as a list of `- source:`, `- match:`,
//! `- filter:`, `- label:`, `!include`) maps onto the same tree: `$type`, `$id`, `$label`,
//! `$log_level` become `@type`, `@id`, `@label`, `@log_level` params; `$tag` (match, filter),
//! `$name` (label) and `$arg` (any subsection) become the section's `arg`; a map value is a
//! subsection and a list of maps is one subsection per item; `!fluent/s` and `!fluent/json`
//! are supported. Spans are approximate in the presence of anchors and merge keys: see the
//! `yaml` module docs for details.
//!
//! # Values
//!
//! Typed getters ([`Params::size`], [`Params::duration`], ...) follow Fluentd's formats; the
//! parsers are public in [`value`] and document where Nagare is stricter (`1.5m` is 1.5 MiB
//! and `100ms` is 100 milliseconds here, whereas Fluentd reads 5 MiB and 100 minutes).

mod error;
mod include;
mod lexer;
mod params;
mod parser;
mod ruby;
mod tree;
pub mod value;
mod yaml;

use std::path::Path;

pub use error::ConfigError;
pub use params::Params;
pub use ruby::ParseOptions;
pub use tree::{Param, Section, Span};

/// Parses a configuration file: YAML when the extension is `.yaml` or `.yml`, else classic.
/// Includes are resolved relative to the including file. Uses [`ParseOptions::default`].
pub fn parse_file(path: &Path) -> Result<Section, ConfigError> {
    parse_file_with(path, &ParseOptions::default())
}

/// [`parse_file`] with explicit options for embedded Ruby.
pub fn parse_file_with(path: &Path, opts: &ParseOptions) -> Result<Section, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::without_span(format!("cannot read config file '{}': {e}", path.display()))
    })?;
    if is_yaml(path) {
        parse_yaml_str_with(&text, path, opts)
    } else {
        parse_str_with(&text, path, opts)
    }
}

/// Parses classic syntax; `file` names the text in spans and anchors relative `@include`s.
pub fn parse_str(text: &str, file: &Path) -> Result<Section, ConfigError> {
    parse_str_with(text, file, &ParseOptions::default())
}

/// [`parse_str`] with explicit options for embedded Ruby.
pub fn parse_str_with(
    text: &str,
    file: &Path,
    opts: &ParseOptions,
) -> Result<Section, ConfigError> {
    let mut loader = include::Loader::new(opts, file);
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    parser::parse_classic(text, file, &mut loader)
}

/// Parses Fluentd's YAML syntax; `file` names the text in spans and anchors `!include`s.
pub fn parse_yaml_str(text: &str, file: &Path) -> Result<Section, ConfigError> {
    parse_yaml_str_with(text, file, &ParseOptions::default())
}

/// [`parse_yaml_str`] with explicit options for embedded Ruby.
pub fn parse_yaml_str_with(
    text: &str,
    file: &Path,
    opts: &ParseOptions,
) -> Result<Section, ConfigError> {
    let mut loader = include::Loader::new(opts, file);
    yaml::parse_yaml(text, file, &mut loader)
}

fn is_yaml(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}
