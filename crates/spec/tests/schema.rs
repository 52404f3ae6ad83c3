//! The JSON Schema for editors: a valid draft 2020-12 schema that accepts
//! every valid fixture and the scaffold, and rejects unknown keys.

use std::fs;
use std::path::Path;

use serde_json::Value as Json;

fn toml_to_json(source: &str) -> Json {
    toml::from_str(source).expect("fixture is TOML")
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&mayfly_spec::json_schema()).expect("schema compiles")
}

fn schema_errors(validator: &jsonschema::Validator, instance: &Json) -> Vec<String> {
    validator.iter_errors(instance).map(|error| format!("{} at {}", error, error.instance_path())).collect()
}

#[test]
fn schema_is_a_valid_draft_2020_12_schema() {
    let schema = mayfly_spec::json_schema();
    if let Err(error) = jsonschema::meta::validate(&schema) {
        panic!("not a valid schema: {error}");
    }
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
}

#[test]
fn schema_accepts_valid_fixtures_and_the_scaffold() {
    let validator = validator();
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid");
    let mut failures = Vec::new();
    for entry in fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|extension| extension != "toml") {
            continue;
        }
        let errors = schema_errors(&validator, &toml_to_json(&fs::read_to_string(&path).unwrap()));
        if !errors.is_empty() {
            failures.push(format!("{}: {}", path.display(), errors.join("; ")));
        }
    }
    let scaffold = mayfly_spec::scaffold(&mayfly_core::Name::new("demo").unwrap());
    let errors = schema_errors(&validator, &toml_to_json(&scaffold));
    if !errors.is_empty() {
        failures.push(format!("scaffold: {}", errors.join("; ")));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn schema_rejects_unknown_keys_bad_durations_and_bad_enums() {
    let validator = validator();
    for (what, source) in [
        ("unknown top-level key", "version = 1\nname = \"x\"\nbukets = {}\n"),
        ("unknown queue key", "version = 1\nname = \"x\"\n[queues.q]\nvisiblity_timeout = \"1m\"\n"),
        ("bad duration", "version = 1\nname = \"x\"\n[queues.q]\nvisibility_timeout = \"2 minutes\"\n"),
        ("bad runtime", "version = 1\nname = \"x\"\n[functions.f]\nruntime = \"java\"\ncommand = [\"x\"]\n"),
        ("missing version", "name = \"x\"\n"),
        (
            "unknown provisioner kind",
            "version = 1\nname = \"x\"\n[jobs.j]\nsource = { queue = \"q\" }\nfunction = \"f\"\nprovisioner = { kind = \"kubernetes\" }\n",
        ),
        ("bad name", "version = 1\nname = \"Chart Coding\"\n"),
        (
            "route with two targets",
            "version = 1\nname = \"x\"\n[[routes]]\nfrom = { bucket = \"b\" }\nto = { queue = \"q\", function = \"f\" }\n",
        ),
    ] {
        assert!(!validator.is_valid(&toml_to_json(source)), "schema accepted {what}");
    }
}

#[test]
fn schema_carries_descriptions_for_editors() {
    let schema = mayfly_spec::json_schema();
    let queue = &schema["$defs"]["QueueFile"];
    assert_eq!(queue["additionalProperties"], false);
    let visibility = queue["properties"]["visibility_timeout"].to_string();
    assert!(visibility.contains("invisible"), "{visibility}");
    let runtime = schema["$defs"]["RuntimeText"].to_string();
    assert!(runtime.contains("lambda") && runtime.contains("process"), "{runtime}");
    // The kinds come from the provisioner registry, the list the spec validates against.
    let kinds = schema["$defs"]["ProvisionerKindText"].to_string();
    assert!(
        kinds.contains("\"local\"") && kinds.contains("\"docker\"") && kinds.contains("Docker containers"),
        "{kinds}"
    );
}
