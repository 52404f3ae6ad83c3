//! The envelope format, version 1: a fixed-size header, then the body in
//! chunks, each sealed with AES-256-GCM under the object's own random data key.
//!
//! ```text
//! header (94 bytes)
//!   0  8   magic "MAYFLYE1"
//!   8  1   format version (1)
//!   9  1   key id length n (1..=16)
//!   10 16  key id of the KEK (ASCII, zero padded)
//!   26 4   chunk size, u32 big-endian (65536 when written by this version)
//!   30 4   nonce prefix (random per object)
//!   34 12  nonce of the key wrapping (random)
//!   46 48  data key (32 bytes) sealed with AES-256-GCM under the KEK, tag included
//! chunks
//!   each: ciphertext (chunk size bytes; the last one 0..=chunk size) + 16-byte tag
//! ```
//!
//! The data key's wrapping authenticates header bytes 0..34 and the context
//! (so the header cannot be altered, nor moved to another object). Chunk `i`
//! uses the nonce `prefix ‖ i (u64 big-endian)` and authenticates the
//! version, chunk size, context, `i` and whether it is the final chunk: a
//! reordered, dropped, appended or moved chunk fails its tag. An empty body is
//! one empty final chunk, so every envelope ends with a final chunk and a
//! stream that stops before it is detected as truncated.
//!
//! `rewrap` replaces only the key id, wrapping nonce and wrapped data key: the
//! chunks do not depend on the KEK, so the body stays as it is.

use aes_gcm::aead::{AeadInPlace, OsRng, rand_core::RngCore};
use aes_gcm::{Nonce, Tag};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, UnboundKey};
use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::keyring::{Kek, Keyring, MAX_KEY_ID_LENGTH};

pub const MAGIC: &[u8; 8] = b"MAYFLYE1";
pub const FORMAT_VERSION: u8 = 1;
/// The size of the header, whatever the key id.
pub const HEADER_LEN: usize = 94;
/// The plaintext bytes in every chunk but the last.
pub const CHUNK_SIZE: usize = 64 * 1024;
/// The AES-GCM tag that follows every chunk.
pub const TAG_LEN: usize = 16;
/// Chunk sizes a reader accepts (the header is authenticated, so only a
/// writer holding the KEK can choose one).
const MAX_CHUNK_SIZE: usize = 1024 * 1024;

const AUTHENTICATED_HEADER_LEN: usize = 34;
const WRAPPED_KEY_LEN: usize = 32 + TAG_LEN;

/// A parsed header.
#[derive(Clone)]
pub(crate) struct Header {
    pub(crate) kek_id: String,
    pub(crate) chunk_size: usize,
    nonce_prefix: [u8; 4],
    wrap_nonce: [u8; 12],
    wrapped_key: [u8; WRAPPED_KEY_LEN],
}

impl Header {
    /// Parse the first [`HEADER_LEN`] bytes (fewer if the stream is shorter).
    pub(crate) fn parse(bytes: &[u8], context: &str) -> Result<Header, CryptoError> {
        let compared = bytes.len().min(MAGIC.len());
        if bytes[..compared] != MAGIC[..compared] || bytes.is_empty() {
            return Err(CryptoError::NotEncrypted { context: context.to_owned() });
        }
        if bytes.len() < HEADER_LEN {
            return Err(CryptoError::Truncated { context: context.to_owned() });
        }
        let bad = |detail: String| CryptoError::BadHeader { context: context.to_owned(), detail };
        if bytes[8] != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {} is not supported; this Mayfly reads version {FORMAT_VERSION}",
                bytes[8]
            )));
        }
        let id_length = usize::from(bytes[9]);
        if id_length == 0 || id_length > MAX_KEY_ID_LENGTH {
            return Err(bad(format!("key id length {id_length}")));
        }
        let kek_id = std::str::from_utf8(&bytes[10..10 + id_length])
            .map_err(|_| bad("the key id is not text".to_owned()))?
            .to_owned();
        let chunk_size = u32::from_be_bytes(bytes[26..30].try_into().expect("4 bytes")) as usize;
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(bad(format!("chunk size {chunk_size}")));
        }
        Ok(Header {
            kek_id,
            chunk_size,
            nonce_prefix: bytes[30..34].try_into().expect("4 bytes"),
            wrap_nonce: bytes[34..46].try_into().expect("12 bytes"),
            wrapped_key: bytes[46..94].try_into().expect("48 bytes"),
        })
    }

    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[..AUTHENTICATED_HEADER_LEN].copy_from_slice(&self.authenticated_part());
        bytes[34..46].copy_from_slice(&self.wrap_nonce);
        bytes[46..94].copy_from_slice(&self.wrapped_key);
        bytes
    }

    fn authenticated_part(&self) -> [u8; AUTHENTICATED_HEADER_LEN] {
        let mut bytes = [0u8; AUTHENTICATED_HEADER_LEN];
        bytes[..8].copy_from_slice(MAGIC);
        bytes[8] = FORMAT_VERSION;
        // Key ids are validated to at most MAX_KEY_ID_LENGTH (16) bytes.
        bytes[9] = self.kek_id.len() as u8;
        bytes[10..10 + self.kek_id.len()].copy_from_slice(self.kek_id.as_bytes());
        // chunk_size <= MAX_CHUNK_SIZE fits u32.
        bytes[26..30].copy_from_slice(&(self.chunk_size as u32).to_be_bytes());
        bytes[30..34].copy_from_slice(&self.nonce_prefix);
        bytes
    }

    fn wrap_aad(&self, context: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(64 + context.len());
        aad.extend_from_slice(b"mayfly key wrap\0");
        aad.extend_from_slice(&self.authenticated_part());
        aad.extend_from_slice(&(context.len() as u64).to_be_bytes());
        aad.extend_from_slice(context.as_bytes());
        aad
    }

    /// Wrap `data_key` under `kek`, filling the key id, wrapping nonce and wrapped key.
    /// `wrap_nonce` must be fresh random bytes.
    fn wrap(&mut self, kek: &Kek, data_key: &[u8; 32], wrap_nonce: [u8; 12], context: &str) {
        self.kek_id = kek.id().to_owned();
        self.wrap_nonce = wrap_nonce;
        let aad = self.wrap_aad(context);
        let mut sealed = [0u8; 32];
        sealed.copy_from_slice(data_key);
        let tag = kek
            .cipher()
            .encrypt_in_place_detached(Nonce::from_slice(&self.wrap_nonce), &aad, &mut sealed)
            .expect("AES-GCM seals 32 bytes");
        self.wrapped_key[..32].copy_from_slice(&sealed);
        self.wrapped_key[32..].copy_from_slice(&tag);
    }

    /// The data key, unwrapped with the KEK the header names.
    fn unwrap(&self, keyring: &Keyring, context: &str) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        let kek = keyring
            .get(&self.kek_id)
            .ok_or_else(|| CryptoError::UnknownKey { id: self.kek_id.clone(), context: context.to_owned() })?;
        let mut data_key = Zeroizing::new([0u8; 32]);
        data_key.copy_from_slice(&self.wrapped_key[..32]);
        kek.cipher()
            .decrypt_in_place_detached(
                Nonce::from_slice(&self.wrap_nonce),
                &self.wrap_aad(context),
                data_key.as_mut(),
                Tag::from_slice(&self.wrapped_key[32..]),
            )
            .map_err(|_| CryptoError::Tampered { context: context.to_owned() })?;
        Ok(data_key)
    }
}

/// Seals and opens the chunks of one envelope. The chunks are AES-256-GCM
/// through ring, whose AES-GCM uses the CPU's vector AES and carry-less
/// multiply (VAES, VPCLMULQDQ) where it has them: several times the speed of
/// the `aes-gcm` crate, which the key wrapping keeps (32 bytes per object).
/// Both are the same AES-256-GCM, so envelopes written by either read with
/// the other.
pub(crate) struct ChunkCipher {
    cipher: LessSafeKey,
    nonce_prefix: [u8; 4],
    pub(crate) chunk_size: usize,
    context: String,
}

impl ChunkCipher {
    /// A new envelope for `context`: a fresh data key wrapped under the
    /// keyring's current KEK. Returns the header to write first.
    pub(crate) fn for_new_envelope(keyring: &Keyring, context: &str) -> (ChunkCipher, [u8; HEADER_LEN]) {
        // One call to the OS for all of an envelope's randomness: data key, nonce prefix, wrapping nonce.
        let mut random = Zeroizing::new([0u8; 48]);
        OsRng.fill_bytes(random.as_mut());
        let mut data_key = Zeroizing::new([0u8; 32]);
        data_key.copy_from_slice(&random[..32]);
        let mut nonce_prefix = [0u8; 4];
        nonce_prefix.copy_from_slice(&random[32..36]);
        let mut wrap_nonce = [0u8; 12];
        wrap_nonce.copy_from_slice(&random[36..48]);
        let mut header = Header {
            kek_id: String::new(),
            chunk_size: CHUNK_SIZE,
            nonce_prefix,
            wrap_nonce: [0; 12],
            wrapped_key: [0; WRAPPED_KEY_LEN],
        };
        header.wrap(keyring.current(), &data_key, wrap_nonce, context);
        let cipher = ChunkCipher {
            cipher: chunk_key(&data_key),
            nonce_prefix,
            chunk_size: CHUNK_SIZE,
            context: context.to_owned(),
        };
        (cipher, header.encode())
    }

    /// The cipher of an existing envelope, from its header.
    pub(crate) fn for_header(header: &Header, keyring: &Keyring, context: &str) -> Result<ChunkCipher, CryptoError> {
        let data_key = header.unwrap(keyring, context)?;
        Ok(ChunkCipher {
            cipher: chunk_key(&data_key),
            nonce_prefix: header.nonce_prefix,
            chunk_size: header.chunk_size,
            context: context.to_owned(),
        })
    }

    fn nonce(&self, index: u64) -> [u8; 12] {
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&self.nonce_prefix);
        nonce[4..].copy_from_slice(&index.to_be_bytes());
        nonce
    }

    fn aad(&self, index: u64, is_final: bool) -> Vec<u8> {
        let mut aad = Vec::with_capacity(40 + self.context.len());
        aad.extend_from_slice(b"mayfly chunk\0");
        aad.push(FORMAT_VERSION);
        aad.extend_from_slice(&(self.chunk_size as u64).to_be_bytes());
        aad.extend_from_slice(&(self.context.len() as u64).to_be_bytes());
        aad.extend_from_slice(self.context.as_bytes());
        aad.extend_from_slice(&index.to_be_bytes());
        aad.push(u8::from(is_final));
        aad
    }

    /// Encrypt `plaintext` as chunk `index` and append it with its tag to `out`.
    pub(crate) fn seal_chunk(&self, index: u64, is_final: bool, plaintext: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(self.nonce(index)),
                Aad::from(self.aad(index, is_final)),
                &mut out[start..],
            )
            .expect("AES-GCM seals a chunk far below its length limit");
        out.extend_from_slice(tag.as_ref());
    }

    /// Verify and decrypt chunk `index` (ciphertext with its tag) in place,
    /// leaving the plaintext in `sealed` (shortened by the tag). On failure
    /// `sealed` holds no plaintext (ring zeroes what it decrypted before the
    /// tag failed); a caller that tries the other `is_final` keeps a copy.
    pub(crate) fn open_chunk(&self, index: u64, is_final: bool, sealed: &mut Vec<u8>) -> Result<(), ()> {
        let Some(body_len) = sealed.len().checked_sub(TAG_LEN) else { return Err(()) };
        let opened = self.cipher.open_in_place(
            ring::aead::Nonce::assume_unique_for_key(self.nonce(index)),
            Aad::from(self.aad(index, is_final)),
            sealed.as_mut_slice(),
        );
        match opened {
            Ok(plaintext) => {
                debug_assert_eq!(plaintext.len(), body_len);
                sealed.truncate(body_len);
                Ok(())
            }
            Err(ring::error::Unspecified) => Err(()),
        }
    }

    /// Open the stream's last chunk: it must verify as final. One that
    /// verifies as non-final means the chunks after it were cut off.
    pub(crate) fn open_last_chunk(&self, index: u64, sealed: &mut Vec<u8>) -> Result<(), CryptoError> {
        if sealed.len() < TAG_LEN {
            return Err(CryptoError::Truncated { context: self.context.clone() });
        }
        // A full-size last chunk may be a non-final one (the stream was cut
        // after it): keep its sealed bytes for the second try.
        let full_size = sealed.len() == self.chunk_size + TAG_LEN;
        let kept = full_size.then(|| sealed.clone());
        if self.open_chunk(index, true, sealed).is_ok() {
            return Ok(());
        }
        if let Some(kept) = kept {
            *sealed = kept;
        }
        if full_size && self.open_chunk(index, false, sealed).is_ok() {
            sealed.clear();
            return Err(CryptoError::Truncated { context: self.context.clone() });
        }
        Err(CryptoError::Tampered { context: self.context.clone() })
    }

    pub(crate) fn tampered(&self) -> CryptoError {
        CryptoError::Tampered { context: self.context.clone() }
    }
}

/// The AES-256-GCM key of an envelope's chunks.
fn chunk_key(data_key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, data_key).expect("a data key is 32 bytes, AES-256's key size"))
}

/// Encrypt a whole body in memory under the keyring's current KEK, bound to `context`.
pub fn encrypt_bytes(keyring: &Keyring, context: &str, plaintext: &[u8]) -> Vec<u8> {
    let (cipher, header) = ChunkCipher::for_new_envelope(keyring, context);
    let mut out = Vec::with_capacity(envelope_len(plaintext.len() as u64) as usize);
    out.extend_from_slice(&header);
    let mut chunks = plaintext.chunks(CHUNK_SIZE).peekable();
    if chunks.peek().is_none() {
        cipher.seal_chunk(0, true, &[], &mut out);
    }
    let mut index = 0;
    while let Some(chunk) = chunks.next() {
        cipher.seal_chunk(index, chunks.peek().is_none(), chunk, &mut out);
        index += 1;
    }
    out
}

/// Verify and decrypt a whole envelope in memory. Nothing is returned unless
/// every chunk verifies and the final chunk is present.
pub fn decrypt_bytes(keyring: &Keyring, context: &str, envelope: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let header = Header::parse(&envelope[..envelope.len().min(HEADER_LEN)], context)?;
    let cipher = ChunkCipher::for_header(&header, keyring, context)?;
    let sealed_chunk_len = cipher.chunk_size + TAG_LEN;
    let body = &envelope[HEADER_LEN..];
    let mut plaintext = Vec::with_capacity(body.len());
    let mut chunk = Vec::with_capacity(sealed_chunk_len);
    let mut offset = 0;
    let mut index = 0u64;
    // A full chunk with more bytes after it is not the last; whatever is left
    // at the end (possibly nothing) must be the final chunk.
    while body.len() - offset > sealed_chunk_len {
        chunk.clear();
        chunk.extend_from_slice(&body[offset..offset + sealed_chunk_len]);
        cipher.open_chunk(index, false, &mut chunk).map_err(|()| cipher.tampered())?;
        plaintext.extend_from_slice(&chunk);
        offset += sealed_chunk_len;
        index += 1;
    }
    chunk.clear();
    chunk.extend_from_slice(&body[offset..]);
    cipher.open_last_chunk(index, &mut chunk)?;
    plaintext.extend_from_slice(&chunk);
    Ok(plaintext)
}

/// The key id named in an envelope's header.
pub fn envelope_key_id(header: &[u8], context: &str) -> Result<String, CryptoError> {
    Header::parse(&header[..header.len().min(HEADER_LEN)], context).map(|header| header.kek_id)
}

/// Re-wrap an envelope's data key under the keyring's current KEK, given the
/// envelope's first [`HEADER_LEN`] bytes. Returns the new header, which
/// replaces the old one in front of the unchanged chunks, or `None` if the
/// current KEK already wraps it. The old KEK must be in the keyring.
pub fn rewrap_header(keyring: &Keyring, context: &str, header: &[u8]) -> Result<Option<[u8; HEADER_LEN]>, CryptoError> {
    let mut parsed = Header::parse(&header[..header.len().min(HEADER_LEN)], context)?;
    if parsed.kek_id == keyring.current().id() {
        // Still check it opens, so rewrap reports a damaged header now.
        parsed.unwrap(keyring, context)?;
        return Ok(None);
    }
    let data_key = parsed.unwrap(keyring, context)?;
    let mut wrap_nonce = [0u8; 12];
    OsRng.fill_bytes(&mut wrap_nonce);
    parsed.wrap(keyring.current(), &data_key, wrap_nonce, context);
    Ok(Some(parsed.encode()))
}

/// The size of an envelope holding `plaintext_len` bytes, as written by this version.
pub fn envelope_len(plaintext_len: u64) -> u64 {
    let chunk = CHUNK_SIZE as u64;
    let chunks = plaintext_len.div_ceil(chunk).max(1);
    HEADER_LEN as u64 + plaintext_len + chunks * TAG_LEN as u64
}

/// The plaintext size of an envelope of `envelope_len` bytes written by this
/// version (64 KiB chunks), or `None` if no such envelope has that size. Lets
/// a listing report plaintext sizes without reading every object.
pub fn plaintext_len(envelope_len: u64) -> Option<u64> {
    let body = envelope_len.checked_sub(HEADER_LEN as u64)?;
    let sealed_chunk = (CHUNK_SIZE + TAG_LEN) as u64;
    let (full_chunks, rest) = (body / sealed_chunk, body % sealed_chunk);
    match rest {
        0 if full_chunks > 0 => Some(full_chunks * CHUNK_SIZE as u64),
        rest if rest >= TAG_LEN as u64 => Some(full_chunks * CHUNK_SIZE as u64 + rest - TAG_LEN as u64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    use aes_gcm::{Aes256Gcm, Nonce, Tag};

    use super::*;

    fn cipher(key: &[u8; 32]) -> ChunkCipher {
        ChunkCipher {
            cipher: chunk_key(key),
            nonce_prefix: [7, 8, 9, 10],
            chunk_size: CHUNK_SIZE,
            context: "inbox/scan.dcm".to_owned(),
        }
    }

    /// Chunks written before the switch to ring (by RustCrypto's `aes-gcm`)
    /// open with ring, and ring's chunks open with `aes-gcm`: the format
    /// did not change.
    #[test]
    fn ring_chunks_and_aes_gcm_chunks_are_the_same_format() {
        let key = [0x42u8; 32];
        let chunks = cipher(&key);
        let reference = Aes256Gcm::new((&key).into());
        let plaintext: Vec<u8> = (0..CHUNK_SIZE + 3).map(|index| (index * 31 % 251) as u8).collect();
        for (index, is_final, body) in [(0u64, false, &plaintext[..CHUNK_SIZE]), (1, true, &plaintext[CHUNK_SIZE..])] {
            let nonce = chunks.nonce(index);
            let aad = chunks.aad(index, is_final);

            // Written as before: aes-gcm, body then tag.
            let mut old = body.to_vec();
            let tag = reference.encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut old).unwrap();
            old.extend_from_slice(&tag);
            let mut sealed = Vec::new();
            chunks.seal_chunk(index, is_final, body, &mut sealed);
            assert_eq!(sealed, old, "chunk {index}: ring seals the same bytes");

            let mut opened = old.clone();
            chunks.open_chunk(index, is_final, &mut opened).unwrap();
            assert_eq!(opened, body);
            let (ciphertext, tag) = sealed.split_at(body.len());
            let mut reopened = ciphertext.to_vec();
            reference
                .decrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut reopened, Tag::from_slice(tag))
                .unwrap();
            assert_eq!(reopened, body);

            // The other final flag fails, and leaves no plaintext behind.
            let mut wrong = old.clone();
            assert!(chunks.open_chunk(index, !is_final, &mut wrong).is_err());
            assert!(!wrong.windows(16).any(|window| body.windows(16).next() == Some(window)));
        }
    }

    /// A stream cut after a full chunk is told apart from a damaged one,
    /// though ring zeroes what fails to open (open_last_chunk keeps a copy).
    #[test]
    fn a_full_last_chunk_that_is_not_final_is_truncation() {
        let chunks = cipher(&[1u8; 32]);
        let body = vec![5u8; CHUNK_SIZE];
        let mut sealed = Vec::new();
        chunks.seal_chunk(3, false, &body, &mut sealed);
        let mut cut = sealed.clone();
        assert!(matches!(chunks.open_last_chunk(3, &mut cut), Err(CryptoError::Truncated { .. })));
        assert!(cut.is_empty(), "no plaintext of a cut stream is handed out");
        let mut damaged = sealed.clone();
        damaged[100] ^= 1;
        assert!(matches!(chunks.open_last_chunk(3, &mut damaged), Err(CryptoError::Tampered { .. })));
        let mut last = Vec::new();
        chunks.seal_chunk(3, true, &body, &mut last);
        chunks.open_last_chunk(3, &mut last).unwrap();
        assert_eq!(last, body);
    }
}
