//! `@include` (classic) and `!include` (YAML): path resolution, globbing, cycle detection.
//!
//! A relative path is relative to the directory of the file that includes it; `file://` is
//! accepted and stripped; remote (`http://`) includes are not supported. A pattern with glob
//! characters (`*`, `?`, `[`) expands to its matches sorted by path, and may match nothing
//! (Fluentd's `Dir.glob`); a plain path that does not exist is an error (Fluentd silently
//! includes nothing, which hides typos).

use std::path::{Path, PathBuf};

use crate::error::ConfigError;
use crate::ruby::ParseOptions;
use crate::tree::Span;

/// Includes nested deeper than this are an error (a cycle through a glob, most likely).
pub(crate) const MAX_INCLUDE_DEPTH: usize = 32;

/// State shared by a whole parse: options and the stack of files being read.
pub(crate) struct Loader<'o> {
    pub(crate) opts: &'o ParseOptions,
    stack: Vec<PathBuf>,
}

impl<'o> Loader<'o> {
    pub(crate) fn new(opts: &'o ParseOptions, root: &Path) -> Self {
        Loader {
            opts,
            stack: vec![canonical(root)],
        }
    }

    /// The files `pattern` names, relative to the directory of `including`.
    pub(crate) fn resolve(
        &self,
        pattern: &str,
        including: &Path,
        span: &Span,
    ) -> Result<Vec<PathBuf>, ConfigError> {
        let pattern = pattern.strip_prefix("file://").unwrap_or(pattern);
        if pattern.contains("://") {
            return Err(ConfigError::at(
                span,
                format!("include of '{pattern}': only local files can be included"),
            ));
        }
        let path = match including.parent() {
            Some(dir) if Path::new(pattern).is_relative() => dir.join(pattern),
            _ => PathBuf::from(pattern),
        };
        if !pattern.contains(['*', '?', '[']) {
            if !path.is_file() {
                return Err(ConfigError::at(
                    span,
                    format!("include of '{}': no such file", path.display()),
                ));
            }
            return Ok(vec![path]);
        }
        let text = path.to_string_lossy();
        let paths = glob::glob(&text).map_err(|e| {
            ConfigError::at(
                span,
                format!("include of '{text}': invalid glob pattern: {e}"),
            )
        })?;
        let mut found = Vec::new();
        for entry in paths {
            let p =
                entry.map_err(|e| ConfigError::at(span, format!("include of '{text}': {e}")))?;
            if p.is_file() {
                found.push(p);
            }
        }
        found.sort();
        if found.is_empty() {
            tracing::warn!(pattern = %text, at = %span, "include pattern matches no files");
        }
        Ok(found)
    }

    /// Reads an included file, refusing cycles and excessive depth; pair with [`Loader::leave`].
    pub(crate) fn enter(&mut self, path: &Path, span: &Span) -> Result<String, ConfigError> {
        let canon = canonical(path);
        if let Some(pos) = self.stack.iter().position(|p| *p == canon) {
            let chain: Vec<String> = self.stack[pos..]
                .iter()
                .chain(std::iter::once(&canon))
                .map(|p| p.display().to_string())
                .collect();
            return Err(ConfigError::at(
                span,
                format!("include cycle: {}", chain.join(" -> ")),
            ));
        }
        if self.stack.len() > MAX_INCLUDE_DEPTH {
            return Err(ConfigError::at(
                span,
                format!("includes nested deeper than {MAX_INCLUDE_DEPTH} levels"),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::at(
                span,
                format!("cannot read included file '{}': {e}", path.display()),
            )
        })?;
        self.stack.push(canon);
        Ok(text)
    }

    pub(crate) fn leave(&mut self) {
        self.stack.pop();
    }
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}
