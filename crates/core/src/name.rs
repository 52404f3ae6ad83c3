//! Resource names: the identifiers of buckets, queues, functions, jobs and the
//! other nouns of the architecture file. One rule for all of them, so a name
//! is safe as a directory name, a SQL value, a Docker label and a URL segment.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A validated resource name: 1–63 characters of lowercase ASCII letters,
/// digits, `-` and `_`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name `{name}` is {length} characters long; the limit is 63")]
    TooLong { name: String, length: usize },
    #[error("name `{name}` must start with a lowercase letter or a digit")]
    BadStart { name: String },
    #[error("name `{name}` contains `{character}`; use lowercase letters, digits, `-` and `_`")]
    BadCharacter { name: String, character: char },
}

impl Name {
    pub const MAX_LENGTH: usize = 63;
    /// Names starting with this belong to Mayfly's own resources (e.g. the
    /// internal queue of a function's asynchronous invocations); the
    /// architecture file may not declare them.
    pub const RESERVED_PREFIX: &'static str = "mayfly-";

    pub fn is_reserved(&self) -> bool {
        self.0.starts_with(Self::RESERVED_PREFIX)
    }

    pub fn new(name: impl Into<String>) -> Result<Name, NameError> {
        let name = name.into();
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        let length = name.chars().count();
        if length > Self::MAX_LENGTH {
            return Err(NameError::TooLong { name, length });
        }
        let first = name.chars().next().unwrap_or('-'); // not empty: checked above
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(NameError::BadStart { name });
        }
        if let Some(character) =
            name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
        {
            return Err(NameError::BadCharacter { name, character });
        }
        Ok(Name(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Name::new(value)
    }
}

impl From<Name> for String {
    fn from(value: Name) -> Self {
        value.0
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Name::new(s)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_names() {
        for ok in ["inbox", "to-code-dlq", "a", "job_2", "0day"] {
            assert!(Name::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_names_with_reason() {
        assert_eq!(Name::new(""), Err(NameError::Empty));
        assert!(matches!(Name::new("-x"), Err(NameError::BadStart { .. })));
        assert!(matches!(Name::new("Inbox"), Err(NameError::BadStart { .. })));
        assert_eq!(
            Name::new("a/b").unwrap_err().to_string(),
            "name `a/b` contains `/`; use lowercase letters, digits, `-` and `_`"
        );
        assert!(matches!(Name::new("a".repeat(64)), Err(NameError::TooLong { length: 64, .. })));
    }
}
