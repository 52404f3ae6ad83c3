//! A `lambda`-runtime handler built on the unmodified `lambda_runtime` crate:
//! it polls the Runtime API named by `AWS_LAMBDA_RUNTIME_API`, acts on each
//! event's `mode` (see the crate docs) and returns the event, or an error
//! that the crate reports through `/invocation/{id}/error`.
//!
//! Logs go to stdout, as a Lambda function's do. With `MAYFLY_TEST_INIT_FAIL`
//! set the process exits during init, before polling.

use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use mayfly_test_handlers::{Behaviour, Mode, log_requested_line, run_mode};
use serde_json::Value;

/// The handled failure, reported through `/error` as `errorType` "RequestedFailure".
#[derive(Debug)]
struct RequestedFailure(String);

impl From<RequestedFailure> for Diagnostic {
    fn from(failure: RequestedFailure) -> Diagnostic {
        Diagnostic { error_type: "RequestedFailure".to_owned(), error_message: failure.0 }
    }
}

async fn handle(event: LambdaEvent<Value>) -> Result<Value, RequestedFailure> {
    let (payload, _context) = event.into_parts();
    let mut stdout = std::io::stdout();
    log_requested_line(&payload, &mut stdout);
    let mode = Mode::from_event(&payload);
    // The handler's blocking modes (sleep, allocate) block this runtime's only
    // task, which is what a synchronous handler does in AWS too.
    match run_mode(&mode, &payload, &mut stdout) {
        Behaviour::Respond(value) => Ok(value),
        Behaviour::Fail(message) => Err(RequestedFailure(message)),
        Behaviour::PrintInvalidJson => Ok(Value::String("this is not { json".to_owned())),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    if std::env::var_os("MAYFLY_TEST_INIT_FAIL").is_some() {
        println!("failing during init");
        std::process::exit(4);
    }
    lambda_runtime::run(service_fn(handle)).await
}
