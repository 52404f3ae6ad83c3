//! Object keys: the rules a key must follow before any backend sees it.
//!
//! The rules are the same for every backend, so a key accepted on the local
//! filesystem is accepted on S3 and the other way round. They are S3's rules
//! narrowed where a filesystem needs it: `/` separates folders, so no segment
//! may be empty, `.` or `..`, and a segment may not end in `#` and digits,
//! which object_store's local backend reserves for its in-progress uploads.

use std::fmt;

/// A key that passed [`ObjectKey::parse`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(String);

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidKeyReason {
    #[error("the key is empty")]
    Empty,
    #[error("the key is {length} bytes long; the limit is {limit} bytes", limit = ObjectKey::MAX_BYTES)]
    TooLong { length: usize },
    #[error("the key starts with `/`; keys are relative, write it without the leading `/`")]
    LeadingSlash,
    #[error("the key has an empty segment (`//` or a trailing `/`); remove the extra `/`")]
    EmptySegment,
    #[error("the key has a `{segment}` segment; `.` and `..` are not allowed as folder or object names")]
    DotSegment { segment: String },
    #[error("the key contains the control character {character:?} at byte {position}; use printable characters")]
    ControlCharacter { character: char, position: usize },
    #[error(
        "the segment `{segment}` is {length} bytes long; the limit per `/`-separated segment is {limit} bytes (filesystems allow 255, less room for upload suffixes)",
        limit = ObjectKey::MAX_SEGMENT_BYTES
    )]
    SegmentTooLong { segment: String, length: usize },
    #[error(
        "the segment `{segment}` ends in `#` and digits, which the local backend reserves for uploads in progress; use another suffix"
    )]
    ReservedUploadSuffix { segment: String },
    #[error("the object store refused it: {message}")]
    RefusedByObjectStore { message: String },
}

impl ObjectKey {
    /// S3's limit on a key's length.
    pub const MAX_BYTES: usize = 1024;
    /// A filesystem name may be 255 bytes; object_store appends `#<n>` to name
    /// an upload in progress, so keep some room for that suffix.
    pub const MAX_SEGMENT_BYTES: usize = 240;

    pub fn parse(key: &str) -> Result<ObjectKey, InvalidKeyReason> {
        if key.is_empty() {
            return Err(InvalidKeyReason::Empty);
        }
        if key.len() > Self::MAX_BYTES {
            return Err(InvalidKeyReason::TooLong { length: key.len() });
        }
        if let Some((position, character)) = key.char_indices().find(|(_, c)| c.is_control()) {
            return Err(InvalidKeyReason::ControlCharacter { character, position });
        }
        if key.starts_with('/') {
            return Err(InvalidKeyReason::LeadingSlash);
        }
        for segment in key.split('/') {
            check_segment(segment)?;
        }
        Ok(ObjectKey(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_segment(segment: &str) -> Result<(), InvalidKeyReason> {
    if segment.is_empty() {
        return Err(InvalidKeyReason::EmptySegment);
    }
    if segment == "." || segment == ".." {
        return Err(InvalidKeyReason::DotSegment { segment: segment.to_owned() });
    }
    if segment.len() > ObjectKey::MAX_SEGMENT_BYTES {
        return Err(InvalidKeyReason::SegmentTooLong { segment: segment.to_owned(), length: segment.len() });
    }
    if let Some((_, suffix)) = segment.rsplit_once('#')
        && !suffix.is_empty()
        && suffix.bytes().all(|byte| byte.is_ascii_digit())
    {
        return Err(InvalidKeyReason::ReservedUploadSuffix { segment: segment.to_owned() });
    }
    Ok(())
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_keys() {
        for key in ["a", "incoming/2024-01-01/chart 7.pdf", "x#y", "a#", "ünïcode/ключ", "..a/b..", "100%/x"] {
            assert_eq!(ObjectKey::parse(key).map(|k| k.0), Ok(key.to_owned()), "{key}");
        }
    }
}
