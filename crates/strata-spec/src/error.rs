use std::path::{Path, PathBuf};

/// A problem with a pipeline spec, located as precisely as the spec allows.
///
/// Displays as one line, `FILE:LINE:COL: key `KEY`: MESSAGE`, so a scheduler log or a
/// terminal shows exactly where to look.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{}: cannot read pipeline spec: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}{}: {}{message}", path.display(), location.as_ref().map(|l| format!(":{l}")).unwrap_or_default(), key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        location: Option<Location>,
        key: Option<String>,
        message: String,
    },
}

/// A 1-based line and column in the spec file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

impl Location {
    /// Locates a byte offset in `text`.
    pub fn of_offset(text: &str, offset: usize) -> Self {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Self { line, column }
    }
}

/// Collects spec errors against one file so each names the file and its line.
#[derive(Debug)]
pub(crate) struct Reporter<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Reporter<'_> {
    pub fn at(
        &self,
        span: Option<std::ops::Range<usize>>,
        key: &str,
        message: impl Into<String>,
    ) -> SpecError {
        SpecError::Invalid {
            path: self.path.to_path_buf(),
            location: span.map(|s| Location::of_offset(self.text, s.start)),
            key: Some(key.to_string()),
            message: message.into(),
        }
    }

    pub fn toml(&self, err: &toml::de::Error) -> SpecError {
        // toml's own Display spans several lines with a caret diagram; keep its message
        // (first line) and rebuild the location so the error stays on one line.
        let message = err
            .message()
            .lines()
            .next()
            .unwrap_or("malformed TOML")
            .trim()
            .to_string();
        SpecError::Invalid {
            path: self.path.to_path_buf(),
            location: err.span().map(|s| Location::of_offset(self.text, s.start)),
            key: None,
            message,
        }
    }
}
