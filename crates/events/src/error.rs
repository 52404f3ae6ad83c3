//! What can be wrong with a function's answer.

/// A function's response could not be read as the format its trigger expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The bytes are not JSON at all.
    #[error("the {what} is not valid JSON ({detail}); the function must print or return one JSON value")]
    InvalidJson { what: &'static str, detail: String },
    /// The JSON does not have the shape the format requires; `detail` names the field.
    #[error("the {what} is malformed: {detail}")]
    Malformed { what: &'static str, detail: String },
}
