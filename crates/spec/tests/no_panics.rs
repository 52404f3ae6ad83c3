//! Robustness: parsing never panics, whatever the input. Feeds a few hundred
//! mutations of the fixtures (deleted, duplicated and swapped lines, inserted
//! characters including multi-byte ones, truncations) through `parse`.

use std::fs;
use std::path::Path;

fn fixture_sources() -> Vec<String> {
    let mut sources = Vec::new();
    for directory in ["valid", "invalid"] {
        let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(directory);
        for entry in fs::read_dir(directory).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|extension| extension == "toml") {
                sources.push(fs::read_to_string(path).unwrap());
            }
        }
    }
    sources.sort();
    sources
}

const INSERTIONS: &[&str] = &[
    "\"",
    "'",
    "[",
    "]",
    "{",
    "}",
    "=",
    ",",
    ".",
    "\n",
    "é",
    "😀",
    "\t",
    "#",
    "[[routes]]\n",
    "0",
    "-",
    "\"\"\"",
    "x = 1\n",
    "[queues.é]\n",
    "1e400",
    "\r\n",
    "/",
    "%",
    ">=",
];

fn mutate(source: &str, random: &mut fastrand::Rng) -> String {
    let mut lines: Vec<String> = source.lines().map(str::to_owned).collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    for _ in 0..random.usize(1..4) {
        let index = random.usize(..lines.len());
        match random.u8(..6) {
            0 if lines.len() > 1 => {
                lines.remove(index);
            }
            1 => {
                let copy = lines[index].clone();
                lines.insert(random.usize(..=lines.len()), copy);
            }
            2 => {
                let other = random.usize(..lines.len());
                lines.swap(index, other);
            }
            3 => {
                let mut characters: Vec<char> = lines[index].chars().collect();
                let at = random.usize(..=characters.len());
                let insertion = INSERTIONS[random.usize(..INSERTIONS.len())];
                characters.splice(at..at, insertion.chars());
                lines[index] = characters.into_iter().collect();
            }
            4 => {
                let characters: Vec<char> = lines[index].chars().collect();
                let keep = random.usize(..=characters.len());
                lines[index] = characters[..keep].iter().collect();
            }
            _ => {
                let characters: Vec<char> = lines[index].chars().collect();
                if !characters.is_empty() {
                    let at = random.usize(..characters.len());
                    lines[index] = characters.iter().enumerate().filter(|(i, _)| *i != at).map(|(_, c)| c).collect();
                }
            }
        }
    }
    lines.join("\n")
}

#[test]
fn parse_never_panics_on_mutated_fixtures() {
    let sources = fixture_sources();
    assert!(!sources.is_empty());
    let mut random = fastrand::Rng::with_seed(0x6d61_7966_6c79);
    let mut inputs = 0;
    for round in 0..400 {
        let source = &sources[round % sources.len()];
        let mutated = mutate(source, &mut random);
        let outcome = std::panic::catch_unwind(|| mayfly_spec::parse("mayfly.toml", &mutated));
        match outcome {
            Ok(Err(diagnostics)) => {
                // Every diagnostic must render and point inside the input.
                let rendered = diagnostics.to_string();
                assert!(rendered.contains("mayfly.toml:"), "{rendered}");
                for diagnostic in &diagnostics.diagnostics {
                    assert!(diagnostic.span.end <= mutated.len());
                    assert!(diagnostic.line >= 1 && diagnostic.column >= 1);
                }
            }
            Ok(Ok(_)) => {}
            Err(_) => panic!("parse panicked on input:\n{mutated}"),
        }
        inputs += 1;
    }
    for source in [
        "",
        "\u{feff}",
        "version",
        "=",
        "[",
        "[[a]]",
        "version = 1\nname = \"x\"\n[api]\n[[api.routes]]\n",
        "a.b.c.d.e = 1",
    ] {
        let _ = mayfly_spec::parse("mayfly.toml", source);
    }
    assert_eq!(inputs, 400);
}
