//! Fixture-driven specification of the architecture file: every
//! `fixtures/valid/*.toml` must parse, and every `fixtures/invalid/NAME.toml`
//! must fail with exactly the diagnostics in `NAME.stderr`; and the same of
//! experiment files, under `fixtures/experiment/{valid,invalid}`.
//!
//! `MAYFLY_BLESS=1 cargo test -p mayfly-spec --test fixtures` rewrites the
//! `.stderr` files from the current output; read each rewritten file before
//! committing it.

use std::fs;
use std::path::{Path, PathBuf};

fn fixture_files(directory: &str) -> Vec<PathBuf> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(directory);
    let mut files: Vec<PathBuf> = fs::read_dir(&directory)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", directory.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "toml"))
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

fn bless() -> bool {
    std::env::var_os("MAYFLY_BLESS").is_some_and(|value| value == "1")
}

/// Checks every fixture of `directory`/valid parses and every one of
/// `directory`/invalid fails with its `.stderr`; returns how many of each
/// there were and what failed.
fn check_fixtures<T, E: std::fmt::Display>(
    directory: &str,
    parse: impl Fn(&str, &str) -> Result<T, E>,
) -> (usize, usize, Vec<String>) {
    let mut failures = Vec::new();
    let valid = fixture_files(&format!("{directory}valid"));
    for path in &valid {
        let source = fs::read_to_string(path).unwrap();
        if let Err(diagnostics) = parse(&file_name(path), &source) {
            failures.push(format!("{} should be valid, but:\n{diagnostics}", path.display()));
        }
    }

    let invalid = fixture_files(&format!("{directory}invalid"));
    for path in &invalid {
        let source = fs::read_to_string(path).unwrap();
        let expected_path = path.with_extension("stderr");
        let actual = match parse(&file_name(path), &source) {
            Ok(_) => {
                failures.push(format!("{} should be invalid, but it parsed", path.display()));
                continue;
            }
            Err(diagnostics) => format!("{diagnostics}\n"),
        };
        if bless() {
            fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        match fs::read_to_string(&expected_path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures
                .push(format!("{} diagnostics differ\n--- expected\n{expected}--- actual\n{actual}", path.display())),
            Err(_) => failures.push(format!("{} is missing; actual output:\n{actual}", expected_path.display())),
        }
    }
    (valid.len(), invalid.len(), failures)
}

#[test]
fn fixtures() {
    let (valid, invalid, failures) = check_fixtures("", mayfly_spec::parse);
    assert!(valid >= 3, "expected valid fixtures, found {valid}");
    assert!(invalid >= 30, "expected at least 30 invalid fixtures, found {invalid}");
    assert!(failures.is_empty(), "{} fixture failures:\n\n{}", failures.len(), failures.join("\n\n"));
}

#[test]
fn experiment_fixtures() {
    let (valid, invalid, failures) = check_fixtures("experiment/", mayfly_spec::parse_experiment);
    assert!(valid >= 1, "expected valid experiment fixtures, found {valid}");
    assert!(invalid >= 3, "expected at least 3 invalid experiment fixtures, found {invalid}");
    assert!(failures.is_empty(), "{} fixture failures:\n\n{}", failures.len(), failures.join("\n\n"));
}

#[test]
fn scaffold_fixture_is_what_init_writes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/scaffold.toml");
    let scaffold = mayfly_spec::scaffold(&mayfly_core::Name::new("demo").unwrap());
    if bless() {
        fs::write(&path, &scaffold).unwrap();
    }
    assert_eq!(fs::read_to_string(&path).unwrap(), scaffold);
}
