//! Fixture-driven specification of the architecture file: every
//! `fixtures/valid/*.toml` must parse, and every `fixtures/invalid/NAME.toml`
//! must fail with exactly the diagnostics in `NAME.stderr`.
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

#[test]
fn fixtures() {
    let bless = std::env::var_os("MAYFLY_BLESS").is_some_and(|value| value == "1");
    let mut failures = Vec::new();

    let valid = fixture_files("valid");
    for path in &valid {
        let source = fs::read_to_string(path).unwrap();
        if let Err(diagnostics) = mayfly_spec::parse(&file_name(path), &source) {
            failures.push(format!("{} should be valid, but:\n{diagnostics}", path.display()));
        }
    }

    let invalid = fixture_files("invalid");
    for path in &invalid {
        let source = fs::read_to_string(path).unwrap();
        let expected_path = path.with_extension("stderr");
        let actual = match mayfly_spec::parse(&file_name(path), &source) {
            Ok(_) => {
                failures.push(format!("{} should be invalid, but it parsed", path.display()));
                continue;
            }
            Err(diagnostics) => format!("{diagnostics}\n"),
        };
        if bless {
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

    assert!(valid.len() >= 3, "expected valid fixtures, found {}", valid.len());
    assert!(invalid.len() >= 30, "expected at least 30 invalid fixtures, found {}", invalid.len());
    assert!(failures.is_empty(), "{} fixture failures:\n\n{}", failures.len(), failures.join("\n\n"));
}

#[test]
fn scaffold_fixture_is_what_init_writes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/scaffold.toml");
    let scaffold = mayfly_spec::scaffold(&mayfly_core::Name::new("demo").unwrap());
    if std::env::var_os("MAYFLY_BLESS").is_some_and(|value| value == "1") {
        fs::write(&path, &scaffold).unwrap();
    }
    assert_eq!(fs::read_to_string(&path).unwrap(), scaffold);
}
