//! The directive tree every syntax parses into: [`Section`]s holding [`Param`]s, each with a [`Span`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::params::Params;

/// A position in a configuration file: 1-based line and column (columns count characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    /// The file as it was named (the root path given by the caller, or the resolved include path).
    pub file: Arc<PathBuf>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub col: u32,
}

impl Span {
    /// A span at `line:col` of `file`.
    pub fn new(file: &Arc<PathBuf>, line: u32, col: u32) -> Self {
        Span {
            file: Arc::clone(file),
            line,
            col,
        }
    }

    /// The start of `file`.
    pub fn start_of(file: &Path) -> Self {
        Span {
            file: Arc::new(file.to_path_buf()),
            line: 1,
            col: 1,
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// One `key value` line (or YAML `key: value`), after unquoting, JSON normalisation and
/// evaluation of the supported embedded Ruby.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// The key, e.g. `@type`, `flush_interval`.
    pub key: String,
    /// The value as Fluentd would see it; `""` for a bare key.
    pub value: String,
    /// Where the key is.
    pub span: Span,
}

/// A `<name arg> ... </name>` block, or the root (named `ROOT`).
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// `source`, `match`, `filter`, `label`, `system`, `store`, `buffer`, ... or `ROOT`.
    pub name: String,
    /// The text between the name and `>`, trimmed: a tag pattern, `@LABEL`, buffer chunk keys
    /// (`tag,time`), ...; `""` if none.
    pub arg: String,
    /// Parameters in file order (included files in place); `@type`, `@id`, `@label` and
    /// `@log_level` are ordinary params here. A key set twice appears twice; the last wins.
    pub params: Vec<Param>,
    /// Subsections in file order.
    pub children: Vec<Section>,
    /// Where the opening `<name` is (the YAML key for YAML; `file:1:1` for the root).
    pub span: Span,
}

impl Section {
    /// An empty section.
    pub fn new(name: impl Into<String>, arg: impl Into<String>, span: Span) -> Self {
        Section {
            name: name.into(),
            arg: arg.into(),
            params: Vec::new(),
            children: Vec::new(),
            span,
        }
    }

    /// Consuming, typed access to the params and subsections; see [`Params`].
    pub fn params(&self) -> Params<'_> {
        Params::new(self)
    }

    /// The plugin type: `@type`, or the legacy `type` when there is no `@type`.
    pub fn type_name(&self) -> Option<&str> {
        self.param("@type")
            .or_else(|| self.param("type"))
            .map(|p| p.value.as_str())
    }

    /// The last param named `key`, without marking anything used (for framework-level reads
    /// such as `@label`; plugins should use [`Section::params`]).
    pub fn param(&self, key: &str) -> Option<&Param> {
        self.params.iter().rev().find(|p| p.key == key)
    }

    /// Subsections named `name`, in file order, without marking anything used.
    pub fn children_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s Section> + 's {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// How messages name this section: `<match docker.**>`, `<source>`, or `the top level`.
    pub fn describe(&self) -> String {
        if self.name == "ROOT" {
            "the top level".to_string()
        } else if self.arg.is_empty() {
            format!("<{}>", self.name)
        } else {
            format!("<{} {}>", self.name, self.arg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span() -> Span {
        Span::start_of(Path::new("t.conf"))
    }

    #[test]
    fn type_name_prefers_at_type_over_legacy() {
        let mut s = Section::new("match", "**", span());
        s.params.push(Param {
            key: "type".into(),
            value: "old".into(),
            span: span(),
        });
        assert_eq!(s.type_name(), Some("old"));
        s.params.push(Param {
            key: "@type".into(),
            value: "new".into(),
            span: span(),
        });
        assert_eq!(s.type_name(), Some("new"));
    }

    #[test]
    fn describe_names_sections() {
        assert_eq!(
            Section::new("match", "a.**", span()).describe(),
            "<match a.**>"
        );
        assert_eq!(Section::new("source", "", span()).describe(), "<source>");
        assert_eq!(Section::new("ROOT", "", span()).describe(), "the top level");
        assert_eq!(span().to_string(), "t.conf:1:1");
    }
}
