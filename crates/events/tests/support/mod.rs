//! Comparing the shape of Mayfly's event JSON with `aws_lambda_events`'
//! fixtures (copied into `tests/fixtures/`, see `ORIGIN.md` there).

use std::collections::BTreeSet;

use serde_json::Value;

pub fn fixture(file: &str) -> Value {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {path}: {error}"));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("parse {path}: {error}"))
}

/// How to compare one fixture with one value Mayfly emitted.
pub struct ShapeComparison<'a> {
    /// Objects whose keys are data (header names, attribute names), not
    /// fields: every value in the fixture's map is compared with the first
    /// value of Mayfly's. Paths as in mismatch messages, e.g. `headers`.
    pub maps_keyed_by_data: &'a [&'a str],
    /// Fixture keys Mayfly leaves out on purpose, each with the reason.
    /// Listing a key Mayfly does emit is itself a mismatch, so the list stays true.
    pub deliberately_absent: &'a [(&'a str, &'a str)],
}

impl ShapeComparison<'_> {
    /// Every key of `fixture`, at every depth, must exist in `ours` with a
    /// compatible JSON type (a `null` in the fixture matches anything). Panics
    /// listing all mismatches at once.
    #[track_caller]
    pub fn assert_fixture_keys_are_in(&self, fixture: &Value, ours: &Value) {
        let mut mismatches = Vec::new();
        let mut absent_seen = BTreeSet::new();
        self.compare("", fixture, ours, &mut mismatches, &mut absent_seen);
        for (path, reason) in self.deliberately_absent {
            if !absent_seen.contains(*path) {
                mismatches.push(format!(
                    "{path}: listed as deliberately absent ({reason}) but Mayfly emits it or the fixture lacks it; update the list"
                ));
            }
        }
        assert!(mismatches.is_empty(), "{} shape mismatches:\n  {}", mismatches.len(), mismatches.join("\n  "));
    }

    fn compare(
        &self,
        path: &str,
        fixture: &Value,
        ours: &Value,
        mismatches: &mut Vec<String>,
        absent_seen: &mut BTreeSet<String>,
    ) {
        if fixture.is_null() {
            return;
        }
        if kind(fixture) != kind(ours) {
            mismatches.push(format!("{}: the fixture has {}, Mayfly has {}", shown(path), kind(fixture), kind(ours)));
            return;
        }
        match (fixture, ours) {
            (Value::Object(fixture_map), Value::Object(our_map)) if self.maps_keyed_by_data.contains(&path) => {
                let Some(our_first) = our_map.values().next() else {
                    if !fixture_map.is_empty() {
                        mismatches.push(format!("{}: Mayfly's map is empty; cannot compare its values", shown(path)));
                    }
                    return;
                };
                for fixture_value in fixture_map.values() {
                    self.compare(&format!("{path}.*"), fixture_value, our_first, mismatches, absent_seen);
                }
            }
            (Value::Object(fixture_map), Value::Object(our_map)) => {
                for (key, fixture_value) in fixture_map {
                    let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                    match our_map.get(key) {
                        Some(our_value) => {
                            if self.deliberately_absent.iter().any(|(absent, _)| *absent == child) {
                                continue; // reported as listed-but-present
                            }
                            self.compare(&child, fixture_value, our_value, mismatches, absent_seen)
                        }
                        None if self.deliberately_absent.iter().any(|(absent, _)| *absent == child) => {
                            absent_seen.insert(child);
                        }
                        None => mismatches.push(format!("{child}: missing (the fixture has {})", kind(fixture_value))),
                    }
                }
            }
            (Value::Array(fixture_items), Value::Array(our_items)) => {
                if let Some(our_first) = our_items.first() {
                    for fixture_item in fixture_items {
                        self.compare(&format!("{path}[]"), fixture_item, our_first, mismatches, absent_seen);
                    }
                }
            }
            _ => {}
        }
    }
}

fn shown(path: &str) -> &str {
    if path.is_empty() { "(top level)" } else { path }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
