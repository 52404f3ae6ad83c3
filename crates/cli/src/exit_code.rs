//! Exit codes that mean something, derived from the error's cause chain so
//! commands just return errors with context.

use mayfly_buckets::BucketError;
use mayfly_spec::LoadError;
use mayfly_state::StateError;

pub const FAILURE: u8 = 1;
/// What clap exits with for a bad command line; [`UsageError`] for what clap cannot check.
pub const USAGE: u8 = 2;
pub const INVALID_ARCHITECTURE: u8 = 3;
pub const NOT_FOUND: u8 = 4;
pub const REFUSED: u8 = 5;
pub const LIMIT_EXCEEDED: u8 = 6;
pub const DISK_FULL: u8 = 7;
pub const FUNCTION_FAILED: u8 = 8;
pub const DATA_DAMAGED: u8 = 9;
pub const VIOLATIONS_FOUND: u8 = 10;
pub const COMPLETED_WITH_FAILURES: u8 = 11;

/// A command line clap accepted but the command cannot (e.g. an attribute given twice).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// An error the command itself decided to refuse with (e.g. would lose data);
/// the host's refusals are the same type.
pub use mayfly_host::Refused;

/// A function invoked by the command ran and failed (the result was still printed).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FunctionFailed(pub String);

/// `mayfly audit` found policy violations (the findings were still printed).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ViolationsFound(pub String);

/// A run ended `completed_with_failures`: every item settled, some
/// dead-lettered (the report was still printed).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CompletedWithFailures(pub String);

/// An error for something that does not exist (e.g. a bucket in a CLI
/// address); the host's (nothing deployed yet) are the same type.
pub use mayfly_host::NotFound;

fn code_for_state_error(error: &StateError) -> u8 {
    match error {
        StateError::NotFound { .. } => NOT_FOUND,
        StateError::AlreadyExists { .. }
        | StateError::Conflict(_)
        | StateError::LeaseLost { .. }
        | StateError::Fenced { .. }
        | StateError::KeyringLacksKeys { .. } => REFUSED,
        StateError::Rule(_) => LIMIT_EXCEEDED,
        StateError::DiskFull => DISK_FULL,
        StateError::Damaged { .. } => DATA_DAMAGED,
        _ => FAILURE,
    }
}

pub fn for_error(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(load) = cause.downcast_ref::<LoadError>() {
            return match load {
                LoadError::Invalid(_) => INVALID_ARCHITECTURE,
                _ => FAILURE,
            };
        }
        if cause.downcast_ref::<mayfly_spec::Diagnostics>().is_some() {
            return INVALID_ARCHITECTURE;
        }
        if let Some(state) = cause.downcast_ref::<StateError>() {
            return code_for_state_error(state);
        }
        if let Some(bucket) = cause.downcast_ref::<BucketError>() {
            return match bucket {
                BucketError::NoSuchBucket { .. } | BucketError::NoSuchKey { .. } => NOT_FOUND,
                BucketError::BucketNotEmpty { .. } | BucketError::AlreadyExists { .. } => REFUSED,
                BucketError::InvalidKey { .. } => LIMIT_EXCEEDED,
                BucketError::DiskFull { .. } => DISK_FULL,
                BucketError::Decrypt { .. } => DATA_DAMAGED,
                BucketError::State(state) => code_for_state_error(state),
                _ => FAILURE,
            };
        }
        if let Some(mayfly_control::jobs::JobError::UnknownJob { .. }) = cause.downcast_ref() {
            return NOT_FOUND;
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return USAGE;
        }
        if cause.downcast_ref::<Refused>().is_some() {
            return REFUSED;
        }
        if cause.downcast_ref::<NotFound>().is_some() {
            return NOT_FOUND;
        }
        if cause.downcast_ref::<FunctionFailed>().is_some() {
            return FUNCTION_FAILED;
        }
        if cause.downcast_ref::<ViolationsFound>().is_some() {
            return VIOLATIONS_FOUND;
        }
        if cause.downcast_ref::<CompletedWithFailures>().is_some() {
            return COMPLETED_WITH_FAILURES;
        }
    }
    FAILURE
}

/// Print an error on stderr: the outermost message, then each cause.
/// Architecture-file diagnostics are printed as they render (they carry their own locations).
pub fn print_error(error: &anyhow::Error) {
    for cause in error.chain() {
        let diagnostics = cause
            .downcast_ref::<LoadError>()
            .and_then(|load| match load {
                LoadError::Invalid(diagnostics) => Some(diagnostics),
                _ => None,
            })
            .or_else(|| cause.downcast_ref::<mayfly_spec::Diagnostics>());
        if let Some(diagnostics) = diagnostics {
            eprintln!("{diagnostics}");
            return;
        }
    }
    eprintln!("error: {error}");
    for cause in error.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}
