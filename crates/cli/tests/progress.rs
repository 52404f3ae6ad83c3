//! `mayfly run`'s progress bar, drawn only on a terminal: the test runs the
//! real binary in a pseudo-terminal (util-linux `script`) and reads what a
//! person would see, then runs it again with stderr piped, as a script would.

mod support;

use std::process::Command;

use support::Project;

const SLEEPER: &str = "#!/bin/sh\ncat >/dev/null\nsleep 0.4\nprintf '{\"done\": true}'\n";

fn project_with_items(items: usize) -> Project {
    let name = support::unique_name("progress");
    let spec = format!(
        "version = 1\nname = \"{name}\"\n[buckets.scans]\n[functions.work]\ncommand = [\"sh\", \"functions/sleeper.sh\"]\n[jobs.scan]\nsource = {{ bucket = \"scans\", prefix = \"in/\" }}\nfunction = \"work\"\n"
    );
    let project = Project::with_spec(&spec);
    std::fs::create_dir_all(project.path("functions")).unwrap();
    std::fs::write(project.path("functions/sleeper.sh"), SLEEPER).unwrap();
    project.ok(&["deploy"]);
    for item in 0..items {
        let output = project.run_with_stdin(&["put", &format!("scans/in/{item:03}")], b"chart");
        support::assert_success(&output, &["put"]);
    }
    project
}

/// Runs `mayfly ARGS` with a pseudo-terminal as stdin, stdout and stderr; returns the transcript.
fn in_a_terminal(project: &Project, args: &str) -> (bool, String) {
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_mayfly"));
    let output = Command::new("script")
        .args(["--quiet", "--return", "--flush", "--command", &command, "/dev/null"])
        .current_dir(&project.root)
        .env_remove("MAYFLY_PROJECT")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color")
        .output()
        .expect("util-linux `script` runs");
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn run_draws_a_progress_bar_on_a_terminal_and_none_when_piped() {
    let project = project_with_items(6);
    let (succeeded, transcript) = in_a_terminal(&project, "run scan");
    assert!(succeeded, "{transcript}");
    assert!(transcript.contains("/6 items"), "the bar counts items of the run: {transcript}");
    assert!(transcript.contains("worker(s) live"), "the bar shows live workers: {transcript}");
    assert!(transcript.contains("6 done"), "the report follows the bar: {transcript}");

    let piped = project.command(&["run", "scan"]).env_remove("NO_COLOR").output().unwrap();
    support::assert_success(&piped, &["run", "scan"]);
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(!stderr.contains("items  "), "no bar when stderr is not a terminal: {stderr}");
}
