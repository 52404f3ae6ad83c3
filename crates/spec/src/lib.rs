//! The architecture file, `mayfly.toml` (schema version 1): parsing into the
//! typed [`Architecture`], validation that reports every problem at once with
//! `file:line:col`, the source line and a hint, a JSON Schema for editors, the
//! file `mayfly init` writes, and the diff between two versions that
//! `mayfly deploy` shows as a plan.
//!
//! This is the only crate that knows TOML. The walk goes over toml's spanned
//! tree (`toml::de::DeTable`) rather than through serde derive, so that one
//! run finds every error in the file and can point at each.

mod diagnostic;
mod diff;
mod experiment;
mod lower;
mod model;
mod reader;
mod scaffold;
mod schema;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use diagnostic::{Diagnostic, Diagnostics};
pub use diff::{ArchitectureDiff, Change, ChangeAction, diff};
pub use experiment::{DEFAULT_REPETITIONS, ExperimentSpec, VariantSpec, WorkloadInput, WorkloadSpec, parse_experiment};
pub use lower::{OtlpEndpointError, check_otlp_endpoint};
pub use model::*;
pub use scaffold::scaffold;
pub use schema::json_schema;

/// An architecture file read from disk, with the text it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub architecture: Architecture,
    pub source: String,
    /// [`content_hash`] of `source`, identifying this version of the file.
    pub content_hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the architecture file {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// Read and validate the architecture file at `path`.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Io { path: path.to_owned(), source })?;
    let file_name = path.display().to_string();
    let source = String::from_utf8(bytes).map_err(|error| LoadError::Invalid(not_text(&file_name, &error)))?;
    let architecture = parse(&file_name, &source).map_err(LoadError::Invalid)?;
    let content_hash = content_hash(&source);
    Ok(Loaded { architecture, source, content_hash })
}

/// The diagnostic for a file that is not UTF-8 text (a binary file, another
/// encoding): an invalid architecture file (exit code 3), pointing at the
/// first byte that is not UTF-8, not an I/O failure.
fn not_text(file_name: &str, error: &std::string::FromUtf8Error) -> Diagnostics {
    let valid = error.utf8_error().valid_up_to();
    // The bytes before `valid_up_to` are valid UTF-8 by definition.
    let before = std::str::from_utf8(&error.as_bytes()[..valid]).unwrap_or_default();
    let mut reader = reader::Reader::new(file_name, before);
    reader.error(
        valid..valid,
        format!("the architecture file is not UTF-8 text: byte {valid} is not valid UTF-8"),
        Some(
            "mayfly.toml is a TOML text file in UTF-8; is this the right file, or was it saved in another encoding?"
                .to_owned(),
        ),
    );
    Diagnostics { diagnostics: reader.diagnostics }
}

/// Parse and validate `source`; diagnostics name `file_name`.
pub fn parse(file_name: &str, source: &str) -> Result<Architecture, Diagnostics> {
    parse_document(file_name, source, "the architecture file", lower::lower_document)
}

/// Parse `source` as TOML and walk it with `lower`, collecting every
/// diagnostic (a TOML syntax error is one, located); the value only when
/// nothing was reported. `what` names the document's root in messages.
pub(crate) fn parse_document<T>(
    file_name: &str,
    source: &str,
    what: &str,
    lower: impl FnOnce(&mut reader::Reader<'_>, &reader::Table<'_, '_>) -> Option<T>,
) -> Result<T, Diagnostics> {
    let mut reader = reader::Reader::new(file_name, source);
    let value = match toml::de::DeTable::parse(source) {
        Ok(document) => {
            let root = reader::Table { entries: document.get_ref(), span: 0..0, what: what.to_owned() };
            lower(&mut reader, &root)
        }
        Err(error) => {
            reader.error(
                error.span().unwrap_or(0..0),
                format!("invalid TOML: {}", error.message().trim_end()),
                Some("fix the TOML syntax here; the rest of the file is checked once it parses".to_owned()),
            );
            None
        }
    };
    match value {
        Some(value) if reader.diagnostics.is_empty() => Ok(value),
        _ => {
            let mut diagnostics = reader.diagnostics;
            diagnostics.sort_by_key(|diagnostic| diagnostic.span.start);
            Err(Diagnostics { diagnostics })
        }
    }
}

/// Only the `[state]` table of `source` (where the project's state store
/// is), for opening a project before its architecture is read; errors are
/// located as [`parse`]'s. The rest of the file is not checked here.
pub fn state_settings(file_name: &str, source: &str) -> Result<StateSpec, Diagnostics> {
    let mut reader = reader::Reader::new(file_name, source);
    let state = match toml::de::DeTable::parse(source) {
        Ok(document) => {
            let root =
                reader::Table { entries: document.get_ref(), span: 0..0, what: "the architecture file".to_owned() };
            lower::lower_state(&mut reader, &root)
        }
        Err(error) => {
            reader.error(
                error.span().unwrap_or(0..0),
                format!("invalid TOML: {}", error.message().trim_end()),
                Some("fix the TOML syntax here; the rest of the file is checked once it parses".to_owned()),
            );
            StateSpec::default()
        }
    };
    if reader.diagnostics.is_empty() { Ok(state) } else { Err(Diagnostics { diagnostics: reader.diagnostics }) }
}

/// Only the `[storage]` table of `source` (where the buckets' objects are),
/// for opening a project before its architecture is read; errors are
/// located as [`parse`]'s. The rest of the file is not checked here.
pub fn storage_settings(file_name: &str, source: &str) -> Result<StorageSpec, Diagnostics> {
    let mut reader = reader::Reader::new(file_name, source);
    let storage = match toml::de::DeTable::parse(source) {
        Ok(document) => {
            let root =
                reader::Table { entries: document.get_ref(), span: 0..0, what: "the architecture file".to_owned() };
            lower::lower_storage(&mut reader, &root)
        }
        Err(error) => {
            reader.error(
                error.span().unwrap_or(0..0),
                format!("invalid TOML: {}", error.message().trim_end()),
                Some("fix the TOML syntax here; the rest of the file is checked once it parses".to_owned()),
            );
            StorageSpec::default()
        }
    };
    if reader.diagnostics.is_empty() { Ok(storage) } else { Err(Diagnostics { diagnostics: reader.diagnostics }) }
}

/// Only the `[telemetry]` table of `source` (where traces are exported),
/// for the host starting `mayfly up` or `mayfly serve`; errors are located
/// as [`parse`]'s. The rest of the file is not checked here.
pub fn telemetry_settings(file_name: &str, source: &str) -> Result<TelemetrySpec, Diagnostics> {
    let mut reader = reader::Reader::new(file_name, source);
    let telemetry = match toml::de::DeTable::parse(source) {
        Ok(document) => {
            let root =
                reader::Table { entries: document.get_ref(), span: 0..0, what: "the architecture file".to_owned() };
            lower::lower_telemetry(&mut reader, &root)
        }
        Err(error) => {
            reader.error(
                error.span().unwrap_or(0..0),
                format!("invalid TOML: {}", error.message().trim_end()),
                Some("fix the TOML syntax here; the rest of the file is checked once it parses".to_owned()),
            );
            TelemetrySpec::default()
        }
    };
    if reader.diagnostics.is_empty() { Ok(telemetry) } else { Err(Diagnostics { diagnostics: reader.diagnostics }) }
}

/// The hex SHA-256 of the file's text: the identity of one version of the architecture.
pub fn content_hash(source: &str) -> String {
    hex::encode(Sha256::digest(source.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hash_is_hex_sha256() {
        assert_eq!(content_hash(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn load_reports_missing_file_with_its_path() {
        let error = load(Path::new("/nonexistent/mayfly.toml")).unwrap_err();
        assert!(matches!(error, LoadError::Io { .. }));
        assert!(error.to_string().contains("/nonexistent/mayfly.toml"), "{error}");
    }

    #[test]
    fn architecture_serializes_durations_as_text_and_merges_tags() {
        let source = "version = 1\nname = \"demo\"\ntags = { owner = \"a\", tier = \"x\" }\n[queues.work]\nvisibility_timeout = \"2m\"\ntags = { tier = \"hot\" }\n";
        let architecture = parse("mayfly.toml", source).unwrap();
        let json = serde_json::to_value(&architecture).unwrap();
        assert_eq!(json["queues"]["work"]["visibility_timeout"], "2m");
        assert_eq!(json["queues"]["work"]["delay"], serde_json::Value::Null);
        let work = &architecture.queues[&mayfly_core::Name::new("work").unwrap()];
        let tags = architecture.effective_tags(&work.tags);
        assert_eq!(tags["owner"], "a");
        assert_eq!(tags["tier"], "hot");
        assert_eq!(work.config().visibility_timeout, std::time::Duration::from_secs(120));
    }

    #[test]
    fn diagnostics_serialize_for_json_output() {
        let diagnostics = parse("mayfly.toml", "version = 1\nname = \"demo\"\n[queues.work]\ndelay = 5\n").unwrap_err();
        let json = serde_json::to_value(&diagnostics).unwrap();
        let first = &json["diagnostics"][0];
        assert_eq!(
            (first["file"].as_str(), first["line"].as_u64(), first["column"].as_u64()),
            (Some("mayfly.toml"), Some(4), Some(9))
        );
        assert!(first["hint"].as_str().unwrap().contains("\"5s\""));
        assert_eq!(diagnostics.to_string().lines().last(), Some("error: mayfly.toml has 1 error"));
    }

    #[test]
    fn metric_written_with_escapes_points_at_the_whole_string() {
        let source =
            "version = 1\nname = \"demo\"\n[alarms.a]\nmetric = \"queue.w\\u006Frk.visible\"\nwhen = \">= 1 for 1m\"\n";
        let diagnostics = parse("mayfly.toml", source).unwrap_err();
        assert_eq!(diagnostics.len(), 1, "{diagnostics}");
        assert_eq!(diagnostics.diagnostics[0].column, 10);
        assert!(diagnostics.diagnostics[0].message.contains("`work`"), "{diagnostics}");
    }

    #[test]
    fn an_edge_case_diagnostic_never_lacks_a_location() {
        let diagnostics = parse("m.toml", "").unwrap_err();
        assert_eq!(diagnostics.len(), 2, "{diagnostics}");
        assert!(diagnostics.diagnostics.iter().all(|diagnostic| diagnostic.line == 1 && diagnostic.column == 1));
    }
}
