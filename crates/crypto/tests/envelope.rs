//! The envelope format through its public functions: round trips of every
//! interesting size, in memory and streamed, and every kind of damage —
//! flipped bytes, truncation, appended bytes, swapped envelopes, unknown keys —
//! failing with the right error and never yielding unverified bytes.

use mayfly_core::Timestamp;
use mayfly_crypto::{
    CHUNK_SIZE, CryptoError, DecryptingReader, EncryptingReader, HEADER_LEN, Keyring, decrypt_bytes, decrypt_stream,
    encrypt_bytes, encrypt_stream, envelope_key_id, envelope_len, plaintext_len, rewrap_header,
};
use tokio::io::AsyncReadExt;

const SEALED_CHUNK: usize = CHUNK_SIZE + 16;
const NOW: Timestamp = Timestamp(1_767_225_600_000);

fn body(length: usize) -> Vec<u8> {
    (0..length).map(|index| (index * 31 % 251) as u8).collect()
}

/// Decrypt through the streaming reader, reading in odd-sized pieces, and
/// return what it yielded before any error with the error.
async fn decrypt_streamed(keyring: &Keyring, context: &str, envelope: &[u8]) -> (Vec<u8>, Option<CryptoError>) {
    let mut yielded = Vec::new();
    let mut reader = match DecryptingReader::open(envelope, keyring, context).await {
        Ok(reader) => reader,
        Err(error) => return (yielded, Some(CryptoError::from_io(&error).expect("an envelope error").clone())),
    };
    let mut piece = vec![0u8; 7919];
    loop {
        match reader.read(&mut piece).await {
            Ok(0) => return (yielded, None),
            Ok(read) => yielded.extend_from_slice(&piece[..read]),
            Err(error) => {
                let crypto = CryptoError::from_io(&error).expect("an envelope error").clone();
                // A failed reader keeps failing; it never turns into an end of file.
                let again = reader.read(&mut piece).await.expect_err("still failing");
                assert_eq!(CryptoError::from_io(&again), Some(&crypto));
                return (yielded, Some(crypto));
            }
        }
    }
}

/// Both decryptors must refuse `envelope` with `expected`; the streamed one
/// may only have yielded a prefix of the original plaintext (verified chunks).
async fn assert_refused(keyring: &Keyring, context: &str, envelope: &[u8], plaintext: &[u8], expected: &CryptoError) {
    assert_eq!(decrypt_bytes(keyring, context, envelope).as_ref(), Err(expected));
    let (yielded, error) = decrypt_streamed(keyring, context, envelope).await;
    assert_eq!(error.as_ref(), Some(expected));
    assert!(plaintext.starts_with(&yielded), "the streamed decryptor released bytes that are not the plaintext's");
    assert_eq!(yielded.len() % CHUNK_SIZE, 0, "only whole verified chunks are released");
}

fn tampered(context: &str) -> CryptoError {
    CryptoError::Tampered { context: context.to_owned() }
}

fn truncated(context: &str) -> CryptoError {
    CryptoError::Truncated { context: context.to_owned() }
}

const SIZES: &[(&str, usize)] = &[
    ("empty", 0),
    ("one byte", 1),
    ("one chunk less a byte", CHUNK_SIZE - 1),
    ("exactly one chunk", CHUNK_SIZE),
    ("one chunk and a byte", CHUNK_SIZE + 1),
    ("many chunks", 5 * CHUNK_SIZE + 123),
    ("exactly many chunks", 4 * CHUNK_SIZE),
];

#[tokio::test]
async fn round_trips_in_memory_and_streamed() {
    let keyring = Keyring::generate(NOW);
    for &(case, length) in SIZES {
        let plaintext = body(length);
        let envelope = encrypt_bytes(&keyring, "inbox/a.txt", &plaintext);
        assert_eq!(envelope.len() as u64, envelope_len(length as u64), "{case}: envelope length");
        assert_eq!(plaintext_len(envelope.len() as u64), Some(length as u64), "{case}: plaintext length");
        assert_eq!(decrypt_bytes(&keyring, "inbox/a.txt", &envelope).unwrap(), plaintext, "{case}: in memory");
        let (streamed, error) = decrypt_streamed(&keyring, "inbox/a.txt", &envelope).await;
        assert_eq!(error, None, "{case}");
        assert_eq!(streamed, plaintext, "{case}: streamed decryption");

        let mut reader = EncryptingReader::new(plaintext.as_slice(), &keyring, "inbox/a.txt");
        let mut streamed_envelope = Vec::new();
        reader.read_to_end(&mut streamed_envelope).await.unwrap();
        assert_eq!(streamed_envelope.len(), envelope.len(), "{case}: streamed encryption has the same length");
        assert_eq!(decrypt_bytes(&keyring, "inbox/a.txt", &streamed_envelope).unwrap(), plaintext, "{case}");
    }
}

#[tokio::test]
async fn identical_plaintexts_give_different_envelopes() {
    let keyring = Keyring::generate(NOW);
    let first = encrypt_bytes(&keyring, "b/k", b"same");
    let second = encrypt_bytes(&keyring, "b/k", b"same");
    assert_ne!(first, second, "every envelope has its own data key and nonces");
}

#[tokio::test]
async fn twenty_mebibytes_stream_in_constant_memory() {
    let keyring = Keyring::generate(NOW);
    let length: u64 = 20 * 1024 * 1024;
    let plaintext = tokio::io::repeat(0x5a).take(length);
    let (mut writer, reader) = tokio::io::duplex(64 * 1024);
    let encrypt = async {
        let written = encrypt_stream(plaintext, &mut writer, &keyring, "big/object").await.unwrap();
        drop(writer);
        written
    };
    let decrypt = async {
        let mut sink = CountingSink::default();
        let read = decrypt_stream(reader, &mut sink, &keyring, "big/object").await.unwrap();
        (read, sink)
    };
    let (written, (read, sink)) = tokio::join!(encrypt, decrypt);
    assert_eq!(written, envelope_len(length));
    assert_eq!(read, length);
    assert_eq!(sink.bytes, length);
    assert!(sink.all_equal_to_0x5a);
}

#[derive(Default)]
struct CountingSink {
    bytes: u64,
    all_equal_to_0x5a: bool,
}

impl tokio::io::AsyncWrite for CountingSink {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _context: &mut std::task::Context<'_>,
        buffer: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.bytes == 0 {
            this.all_equal_to_0x5a = true;
        }
        this.all_equal_to_0x5a &= buffer.iter().all(|&byte| byte == 0x5a);
        this.bytes += buffer.len() as u64;
        std::task::Poll::Ready(Ok(buffer.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_flipped_byte_anywhere_is_detected() {
    let keyring = Keyring::generate(NOW);
    let plaintext = body(3 * CHUNK_SIZE + 500);
    let envelope = encrypt_bytes(&keyring, "b/k", &plaintext);
    let header_positions = [9, 10, 12, 26, 29, 30, 33, 34, 45, 46, 70, 93];
    let chunk_positions = [
        HEADER_LEN,                         // first byte of chunk 0
        HEADER_LEN + CHUNK_SIZE - 1,        // last ciphertext byte of chunk 0
        HEADER_LEN + CHUNK_SIZE,            // chunk 0's tag
        HEADER_LEN + SEALED_CHUNK - 1,      // last byte of chunk 0's tag
        HEADER_LEN + SEALED_CHUNK + 1000,   // inside chunk 1
        HEADER_LEN + 3 * SEALED_CHUNK + 10, // inside the final chunk
        envelope.len() - 1,                 // the final chunk's tag
    ];
    for position in header_positions.into_iter().chain(chunk_positions) {
        let mut damaged = envelope.clone();
        damaged[position] ^= 0x01;
        let expected = match position {
            // A damaged key id names a key the keyring does not hold.
            10 | 12 => CryptoError::UnknownKey {
                id: mayfly_crypto::envelope_key_id(&damaged, "b/k").unwrap(),
                context: "b/k".to_owned(),
            },
            // A damaged id length or chunk size is either invalid or fails authentication.
            9 | 26 => match decrypt_bytes(&keyring, "b/k", &damaged) {
                Err(error @ (CryptoError::BadHeader { .. } | CryptoError::UnknownKey { .. })) => error,
                other => panic!("byte {position}: expected a header error, got {other:?}"),
            },
            _ => tampered("b/k"),
        };
        assert_refused(&keyring, "b/k", &damaged, &plaintext, &expected).await;
    }
    // The magic itself: no longer recognisable as an envelope.
    let mut damaged = envelope.clone();
    damaged[0] ^= 0x01;
    assert_refused(&keyring, "b/k", &damaged, &plaintext, &CryptoError::NotEncrypted { context: "b/k".to_owned() })
        .await;
}

#[tokio::test]
async fn truncation_at_every_chunk_boundary_and_mid_chunk_is_detected() {
    let keyring = Keyring::generate(NOW);
    let plaintext = body(3 * CHUNK_SIZE + 500);
    let envelope = encrypt_bytes(&keyring, "b/k", &plaintext);
    // At each boundary between chunks, the stream ends after a non-final chunk.
    for chunks_kept in 0..=3 {
        let cut = HEADER_LEN + chunks_kept * SEALED_CHUNK;
        assert_refused(&keyring, "b/k", &envelope[..cut], &plaintext, &truncated("b/k")).await;
    }
    // Mid-chunk: the last chunk fails its tag.
    for cut in [HEADER_LEN + 1, HEADER_LEN + 100, HEADER_LEN + SEALED_CHUNK + 5, envelope.len() - 1] {
        let error = decrypt_bytes(&keyring, "b/k", &envelope[..cut]).unwrap_err();
        assert!(matches!(error, CryptoError::Tampered { .. } | CryptoError::Truncated { .. }), "cut at {cut}: {error}");
        assert_refused(&keyring, "b/k", &envelope[..cut], &plaintext, &error).await;
    }
    // Inside the header: too short to be an envelope.
    for cut in [3, 8, 50, HEADER_LEN - 1] {
        assert_refused(&keyring, "b/k", &envelope[..cut], &plaintext, &truncated("b/k")).await;
    }
}

#[tokio::test]
async fn a_truncated_envelope_of_whole_chunks_is_detected() {
    // The plaintext is an exact number of chunks, so the final chunk is full
    // and dropping it leaves a stream that looks complete.
    let keyring = Keyring::generate(NOW);
    let plaintext = body(2 * CHUNK_SIZE);
    let envelope = encrypt_bytes(&keyring, "b/k", &plaintext);
    assert_refused(&keyring, "b/k", &envelope[..HEADER_LEN + SEALED_CHUNK], &plaintext, &truncated("b/k")).await;
}

#[tokio::test]
async fn appended_bytes_are_detected() {
    let keyring = Keyring::generate(NOW);
    for length in [0, 10, CHUNK_SIZE, 2 * CHUNK_SIZE + 7] {
        let plaintext = body(length);
        let envelope = encrypt_bytes(&keyring, "b/k", &plaintext);
        for garbage in [vec![0u8; 1], vec![7u8; 16], vec![1u8; SEALED_CHUNK], vec![2u8; SEALED_CHUNK + 3]] {
            let mut damaged = envelope.clone();
            damaged.extend_from_slice(&garbage);
            assert_refused(&keyring, "b/k", &damaged, &plaintext, &tampered("b/k")).await;
        }
        // Appending a copy of a real chunk from the same envelope fails too.
        let mut damaged = envelope.clone();
        damaged.extend_from_slice(&envelope[HEADER_LEN..]);
        assert_refused(&keyring, "b/k", &damaged, &plaintext, &tampered("b/k")).await;
    }
}

#[tokio::test]
async fn reordered_chunks_are_detected() {
    let keyring = Keyring::generate(NOW);
    let plaintext = body(3 * CHUNK_SIZE + 1);
    let envelope = encrypt_bytes(&keyring, "b/k", &plaintext);
    let mut swapped = envelope.clone();
    let (first, second) = (HEADER_LEN, HEADER_LEN + SEALED_CHUNK);
    swapped[first..second].copy_from_slice(&envelope[second..second + SEALED_CHUNK]);
    swapped[second..second + SEALED_CHUNK].copy_from_slice(&envelope[first..second]);
    assert_refused(&keyring, "b/k", &swapped, &plaintext, &tampered("b/k")).await;
}

#[tokio::test]
async fn an_envelope_moved_to_another_context_fails() {
    let keyring = Keyring::generate(NOW);
    let first = encrypt_bytes(&keyring, "inbox/first", b"first chart");
    let second = encrypt_bytes(&keyring, "inbox/second", b"second chart");
    // Swap the two objects' ciphertexts: each now sits under the other's name.
    assert_refused(&keyring, "inbox/first", &second, b"", &tampered("inbox/first")).await;
    assert_refused(&keyring, "inbox/second", &first, b"", &tampered("inbox/second")).await;
    // Moving the body of one onto the header of the other fails as well.
    let mut spliced = first[..HEADER_LEN].to_vec();
    spliced.extend_from_slice(&second[HEADER_LEN..]);
    assert_refused(&keyring, "inbox/first", &spliced, b"", &tampered("inbox/first")).await;
}

#[tokio::test]
async fn an_unknown_key_id_is_named() {
    let writer = Keyring::generate(NOW);
    let reader = Keyring::generate(NOW);
    let envelope = encrypt_bytes(&writer, "b/k", b"chart");
    let expected = CryptoError::UnknownKey { id: writer.current().id().to_owned(), context: "b/k".to_owned() };
    assert_ne!(writer.current().id(), reader.current().id(), "fingerprinted ids differ between keyrings");
    assert_refused(&reader, "b/k", &envelope, b"", &expected).await;
    assert!(expected.to_string().contains(writer.current().id()));
}

#[tokio::test]
async fn plaintext_is_not_an_envelope() {
    let keyring = Keyring::generate(NOW);
    for plaintext in [&b""[..], b"hello", &body(200)] {
        assert_eq!(
            decrypt_bytes(&keyring, "b/k", plaintext),
            Err(CryptoError::NotEncrypted { context: "b/k".to_owned() })
        );
    }
}

#[tokio::test]
async fn after_rotation_old_envelopes_stay_readable_and_new_ones_use_the_new_key() {
    let mut keyring = Keyring::generate(NOW);
    let old = encrypt_bytes(&keyring, "b/old", b"old chart");
    let old_id = keyring.current().id().to_owned();
    let new_id = keyring.rotate(NOW).id().to_owned();
    assert!(old_id.starts_with("k1-") && new_id.starts_with("k2-"), "{old_id}, {new_id}");
    let new = encrypt_bytes(&keyring, "b/new", b"new chart");
    assert_eq!(envelope_key_id(&old, "b/old").unwrap(), old_id);
    assert_eq!(envelope_key_id(&new, "b/new").unwrap(), new_id);
    assert_eq!(decrypt_bytes(&keyring, "b/old", &old).unwrap(), b"old chart");
    assert_eq!(decrypt_bytes(&keyring, "b/new", &new).unwrap(), b"new chart");
}

#[tokio::test]
async fn rewrap_changes_only_the_header_and_needs_only_the_new_key_afterwards() {
    let mut keyring = Keyring::generate(NOW);
    let plaintext = body(2 * CHUNK_SIZE + 9);
    let envelope = encrypt_bytes(&keyring, "b/k", &plaintext);
    assert_eq!(rewrap_header(&keyring, "b/k", &envelope).unwrap(), None, "already under the current key");

    keyring.rotate(NOW);
    let new_header = rewrap_header(&keyring, "b/k", &envelope).unwrap().expect("a new header");
    let mut rewrapped = new_header.to_vec();
    rewrapped.extend_from_slice(&envelope[HEADER_LEN..]);
    assert_eq!(rewrapped.len(), envelope.len());
    assert_eq!(envelope_key_id(&rewrapped, "b/k").unwrap(), keyring.current().id());

    // A keyring holding only the new key reads it.
    let only_new = Keyring::from_json(&only_current_key_json(&keyring), "test").unwrap();
    assert_eq!(only_new.keys().count(), 1);
    assert_eq!(decrypt_bytes(&only_new, "b/k", &rewrapped).unwrap(), plaintext);
    assert!(matches!(decrypt_bytes(&only_new, "b/k", &envelope), Err(CryptoError::UnknownKey { .. })));
    // Rewrapping is bound to the context as well.
    assert_eq!(rewrap_header(&keyring, "b/other", &envelope).map(|_| ()), Err(tampered("b/other")));
}

/// The keyring's JSON with only its current key.
fn only_current_key_json(keyring: &Keyring) -> String {
    let mut json: serde_json::Value = serde_json::from_str(&keyring.to_json()).unwrap();
    let current = json["current"].clone();
    json["keys"].as_array_mut().unwrap().retain(|key| key["id"] == current);
    json.to_string()
}

#[test]
fn sizes_that_no_envelope_has_are_refused() {
    assert_eq!(plaintext_len(0), None);
    assert_eq!(plaintext_len(HEADER_LEN as u64), None);
    assert_eq!(plaintext_len(HEADER_LEN as u64 + 15), None);
    assert_eq!(plaintext_len(HEADER_LEN as u64 + 16), Some(0));
    assert_eq!(plaintext_len(HEADER_LEN as u64 + SEALED_CHUNK as u64 + 3), None);
}

#[test]
fn error_messages_say_what_where_and_what_to_do() {
    let cases = [
        (tampered("inbox/a"), "restore it from a backup"),
        (truncated("inbox/a"), "cut short"),
        (CryptoError::UnknownKey { id: "k1-abcdef".into(), context: "inbox/a".into() }, "load the keyring"),
        (CryptoError::NotEncrypted { context: "inbox/a".into() }, "not encrypted"),
        (CryptoError::BadHeader { context: "inbox/a".into(), detail: "chunk size 0".into() }, "chunk size 0"),
    ];
    for (error, hint) in cases {
        let message = error.to_string();
        assert!(message.contains("`inbox/a`") && message.contains(hint), "{message}");
    }
}
