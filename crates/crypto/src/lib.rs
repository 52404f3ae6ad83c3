//! Envelope encryption at rest for Mayfly's stored data.
//!
//! Every object gets a random 256-bit data key; its body is sealed with
//! AES-256-GCM in 64 KiB chunks under that key (so bodies of any size stream
//! in constant memory), and the data key is stored in the object's header,
//! wrapped by a key-encryption key (KEK) from the project's [`Keyring`].
//! Rotating the keyring adds a KEK for new writes; [`rewrap_header`] moves an
//! object to the current KEK by rewriting only its 94-byte header.
//!
//! Each envelope is bound to a caller-supplied context (for bucket objects,
//! `bucket/key`): moving an envelope to another object makes it fail to
//! decrypt. Reordered, dropped, appended or altered chunks fail too, and a
//! failed check never yields unverified bytes. The format is specified in
//! the [`envelope`] module.
//!
//! The cryptography is RustCrypto's `aes-gcm`; this crate only frames it.

pub mod envelope;
mod error;
mod keyring;
mod stream;

pub use crate::envelope::{
    CHUNK_SIZE, HEADER_LEN, decrypt_bytes, encrypt_bytes, envelope_key_id, envelope_len, plaintext_len, rewrap_header,
};
pub use crate::error::{CryptoError, KeyringError};
pub use crate::keyring::{KEYRING_ENV_VAR, Kek, KeyRemovalError, Keyring, MAX_KEY_ID_LENGTH};
pub use crate::stream::{DecryptingReader, EncryptingReader, decrypt_stream, encrypt_stream};
