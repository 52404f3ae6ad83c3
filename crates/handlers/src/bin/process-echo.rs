//! A `process`-runtime handler: reads the event JSON on stdin, acts on its
//! `mode` (see the crate docs) and writes the result JSON on stdout, logs on
//! stderr. A handled error exits with status 1.

use std::io::{Read, Write};

use mayfly_test_handlers::{Behaviour, Mode, log_requested_line, run_mode};

fn main() {
    let mut input = Vec::new();
    if let Err(error) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("cannot read stdin: {error}");
        std::process::exit(2);
    }
    let event: serde_json::Value = match serde_json::from_slice(&input) {
        Ok(event) => event,
        Err(error) => {
            eprintln!("the event is not JSON: {error}");
            std::process::exit(2);
        }
    };
    let mut stderr = std::io::stderr();
    log_requested_line(&event, &mut stderr);
    let mode = Mode::from_event(&event);
    let mut stdout = std::io::stdout().lock();
    match run_mode(&mode, &event, &mut stderr) {
        Behaviour::Respond(value) => {
            let _ = serde_json::to_writer(&mut stdout, &value);
            let _ = stdout.flush();
        }
        Behaviour::Fail(message) => {
            eprintln!("handler failed: {message}");
            std::process::exit(1);
        }
        Behaviour::PrintInvalidJson => {
            let _ = stdout.write_all(b"this is not { json");
            let _ = stdout.flush();
        }
    }
}
