//! A check file: a SELECT returning the failing rows, under a leading block of
//! `-- key: value` comment lines.

use std::path::{Path, PathBuf};

use crate::CheckError;
use crate::threshold::Threshold;

/// When a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Source,
    Curated,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Curated => "curated",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Warn,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// A parsed check file.
#[derive(Debug, Clone)]
pub struct CheckFile {
    pub path: PathBuf,
    pub name: String,
    pub description: String,
    pub severity: Severity,
    pub warn_if: Option<Threshold>,
    pub error_if: Option<Threshold>,
    pub stages: Vec<Stage>,
    /// The whole file: comments are SQL comments, so line numbers in errors are the file's.
    pub sql: String,
}

const KEYS: [&str; 6] = [
    "name",
    "description",
    "severity",
    "warn_if",
    "error_if",
    "stage",
];

impl CheckFile {
    /// Parses `text` read from `path`. Errors name the file and the line.
    pub fn parse(path: &Path, text: &str) -> Result<Self, CheckError> {
        let err = |line: usize, message: String| CheckError::File {
            path: path.to_path_buf(),
            line,
            message,
        };
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (mut name, mut description, mut severity, mut warn_if, mut error_if, mut stages) =
            (None, None, None, None, None, None);
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let trimmed = line.trim();
            if trimmed.is_empty() {
                continue;
            }
            let Some(comment) = trimmed.strip_prefix("--") else {
                break;
            };
            let comment = comment.trim();
            let Some((key, value)) = comment.split_once(':') else {
                continue;
            };
            let key = key.trim();
            if key.contains(' ') || key.is_empty() {
                // prose in the header, e.g. "-- see: the README" is still checked below
                continue;
            }
            let value = value.trim();
            if !KEYS.contains(&key) {
                return Err(err(
                    line_no,
                    format!("unknown metadata key `{key}` (known: {})", KEYS.join(", ")),
                ));
            }
            let dup = |seen: bool| {
                if seen {
                    Err(err(line_no, format!("metadata key `{key}` is given twice")))
                } else {
                    Ok(())
                }
            };
            match key {
                "name" => {
                    dup(name.is_some())?;
                    if value.is_empty()
                        || !value
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                    {
                        return Err(err(
                            line_no,
                            format!("name `{value}`: use letters, digits, `_`, `-` or `.`"),
                        ));
                    }
                    name = Some(value.to_string());
                }
                "description" => {
                    dup(description.is_some())?;
                    description = Some(value.to_string());
                }
                "severity" => {
                    dup(severity.is_some())?;
                    severity = Some(match value {
                        "warn" => Severity::Warn,
                        "error" => Severity::Error,
                        other => {
                            return Err(err(
                                line_no,
                                format!("severity must be `warn` or `error`, found `{other}`"),
                            ));
                        }
                    });
                }
                "warn_if" | "error_if" => {
                    let t =
                        Threshold::parse(value).map_err(|m| err(line_no, format!("{key}: {m}")))?;
                    let slot = if key == "warn_if" {
                        &mut warn_if
                    } else {
                        &mut error_if
                    };
                    dup(slot.is_some())?;
                    *slot = Some(t);
                }
                "stage" => {
                    dup(stages.is_some())?;
                    stages = Some(match value {
                        "source" => vec![Stage::Source],
                        "curated" => vec![Stage::Curated],
                        "both" => vec![Stage::Source, Stage::Curated],
                        other => {
                            return Err(err(
                                line_no,
                                format!(
                                    "stage must be `source`, `curated` or `both`, found `{other}`"
                                ),
                            ));
                        }
                    });
                }
                _ => unreachable!("checked against KEYS"),
            }
        }
        let body_is_empty = text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim().starts_with("--"));
        if body_is_empty {
            return Err(err(
                1,
                "no SQL: a check is a SELECT returning the failing rows".into(),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            name: name.unwrap_or(stem),
            description: description.unwrap_or_default(),
            severity: severity.unwrap_or(Severity::Error),
            warn_if,
            error_if,
            stages: stages
                .ok_or_else(|| err(1, "missing metadata `-- stage: source|curated|both`".into()))?,
            sql: text.to_string(),
        })
    }
}

/// Every `*.sql` file directly in `dirs`, parsed, sorted by name. A folder that does not
/// exist is an error; so are two checks with one name.
pub fn load_checks(dirs: &[String]) -> Result<Vec<CheckFile>, CheckError> {
    let mut files = Vec::new();
    for dir in dirs {
        let dir_path = Path::new(dir.strip_prefix("file://").unwrap_or(dir));
        let entries = std::fs::read_dir(dir_path).map_err(|e| CheckError::Dir {
            path: dir_path.to_path_buf(),
            message: e.to_string(),
        })?;
        for entry in entries {
            let p = entry
                .map_err(|e| CheckError::Dir {
                    path: dir_path.to_path_buf(),
                    message: e.to_string(),
                })?
                .path();
            if p.extension().is_some_and(|e| e == "sql") && p.is_file() {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut checks: Vec<CheckFile> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| CheckError::File {
            path: f.clone(),
            line: 1,
            message: e.to_string(),
        })?;
        let check = CheckFile::parse(&f, &text)?;
        if let Some(other) = checks.iter().find(|c| c.name == check.name) {
            return Err(CheckError::File {
                path: f.clone(),
                line: 1,
                message: format!(
                    "check name `{}` is also used by {}",
                    check.name,
                    other.path.display()
                ),
            });
        }
        checks.push(check);
    }
    checks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CheckFile, CheckError> {
        CheckFile::parse(Path::new("/checks/c.sql"), text)
    }

    #[test]
    fn reads_the_header_and_keeps_the_whole_file_as_sql() {
        let c = parse("-- name: c1\n-- description: d: with a colon\n-- severity: warn\n-- stage: both\n-- warn_if: > 2%\n\nSELECT 1\n-- trailing: not metadata\n").unwrap();
        assert_eq!(c.name, "c1");
        assert_eq!(c.description, "d: with a colon");
        assert_eq!(c.severity, Severity::Warn);
        assert_eq!(c.stages, [Stage::Source, Stage::Curated]);
        assert_eq!(c.warn_if.unwrap().to_string(), "> 2%");
        assert!(c.sql.starts_with("-- name: c1"));
    }

    #[test]
    fn defaults_name_from_the_file_and_severity_error() {
        let c = parse("-- stage: source\nSELECT 1").unwrap();
        assert_eq!((c.name.as_str(), c.severity), ("c", Severity::Error));
    }

    #[test]
    fn rejects_duplicates_and_empty_checks() {
        assert!(
            parse("-- stage: source\n-- stage: curated\nSELECT 1")
                .unwrap_err()
                .to_string()
                .contains("c.sql:2: metadata key `stage` is given twice")
        );
        assert!(
            parse("-- stage: source\n")
                .unwrap_err()
                .to_string()
                .contains("no SQL")
        );
        assert!(
            parse("-- name: a b\n-- stage: source\nSELECT 1")
                .unwrap_err()
                .to_string()
                .contains("c.sql:1: name `a b`")
        );
    }
}
