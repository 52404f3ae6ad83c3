//! Request ids: what names one invocation to its instance.
//!
//! A request id travels in the URL path of the Runtime API
//! (`/2018-06-01/runtime/invocation/{id}/response`), in a header and in
//! environment variables, so it must be opaque and URL-safe everywhere: it
//! never carries data such as an item id or an object key (those travel in the
//! event). Ids are lowercase hex in the UUID layout Lambda uses, either random
//! or derived from what identifies the invocation (so a retried attempt gets
//! a new id and the same attempt always the same).

use sha2::{Digest, Sha256};

/// The longest request id the runtime passes on.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// A random request id in the UUID layout: `8-4-4-4-12` lowercase hex digits.
pub fn random_request_id() -> String {
    uuid_layout(&rand::random::<[u8; 16]>())
}

/// A request id derived from `parts` (e.g. run, item, attempt): the first 16
/// bytes of the SHA-256 of the parts, each length-prefixed so that no two
/// lists of parts collide by concatenation, in the UUID layout.
pub fn derived_request_id(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    uuid_layout(&first)
}

/// Whether `id` can be sent as a request id as it is: 1 to
/// [`MAX_REQUEST_ID_BYTES`] of URL-unreserved characters (letters, digits,
/// `-`, `.`, `_`, `~`), which need no escaping in a path, a header or an
/// environment variable.
pub fn is_url_safe_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_BYTES
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn uuid_layout(bytes: &[u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_url_safe_stable_and_distinct() {
        let awkward = ["k/sp ace.txt", "k/hash#x.txt", "k/qm?x.txt", "k/pct%20.txt", "k/\"q'\".txt", "k/é🙂.txt"];
        let mut seen = std::collections::BTreeSet::new();
        for item in awkward {
            let id = derived_request_id(&["run-1", item, "1"]);
            assert!(is_url_safe_request_id(&id), "{id}");
            assert_eq!(id.len(), 36);
            assert_eq!(id, derived_request_id(&["run-1", item, "1"]), "the same attempt, the same id");
            assert_ne!(id, derived_request_id(&["run-1", item, "2"]), "another attempt, another id");
            assert!(seen.insert(id));
        }
        assert_ne!(derived_request_id(&["ab", "c"]), derived_request_id(&["a", "bc"]), "parts do not run together");
        assert!(is_url_safe_request_id(&derived_request_id(&["run", &"x".repeat(1024), "1"])));
    }

    #[test]
    fn random_ids_are_url_safe_and_differ() {
        let (a, b) = (random_request_id(), random_request_id());
        assert!(is_url_safe_request_id(&a) && is_url_safe_request_id(&b));
        assert_ne!(a, b);
    }

    #[test]
    fn only_unreserved_characters_are_url_safe() {
        for safe in ["req-1", "a.b_c~d", "0123456789abcdef"] {
            assert!(is_url_safe_request_id(safe), "{safe}");
        }
        for unsafe_id in ["", "run-k/a", "a b", "a#b", "a?b", "a%20", "é", &"a".repeat(129)] {
            assert!(!is_url_safe_request_id(unsafe_id), "{unsafe_id}");
        }
    }
}
