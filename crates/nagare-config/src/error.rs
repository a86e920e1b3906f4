//! The one error type of this crate: a message and, when known, where in which file.

use std::fmt;

use crate::tree::Span;

/// A configuration error: what is wrong and where (`file:line:col`).
///
/// Messages are lowercase and say what was expected, e.g.
/// `app.conf:12:3: invalid value for 'chunk_limit_size' in <buffer>: expected a size like 8m or 1g, got 'abc'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the problem is; `None` only when no position applies (e.g. an unreadable root file).
    pub span: Option<Span>,
    /// What is wrong, and what was expected instead.
    pub message: String,
}

impl ConfigError {
    /// An error at `span`.
    pub fn new(span: Span, message: impl Into<String>) -> Self {
        ConfigError {
            span: Some(span),
            message: message.into(),
        }
    }

    /// An error with no position.
    pub fn without_span(message: impl Into<String>) -> Self {
        ConfigError {
            span: None,
            message: message.into(),
        }
    }

    pub(crate) fn at(span: &Span, message: impl Into<String>) -> Self {
        Self::new(span.clone(), message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.span {
            Some(span) => write!(f, "{span}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::Arc;

    #[test]
    fn display_has_file_line_col_prefix() {
        let span = Span {
            file: Arc::new(PathBuf::from("a/b.conf")),
            line: 3,
            col: 7,
        };
        let e = ConfigError::new(span, "boom");
        assert_eq!(e.to_string(), "a/b.conf:3:7: boom");
        assert_eq!(ConfigError::without_span("boom").to_string(), "boom");
    }
}
