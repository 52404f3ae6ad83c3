//! Streaming encryption and decryption over `AsyncRead`, in constant memory
//! (one chunk in, one chunk out, whatever the body's size).
//!
//! Both readers look one byte past a chunk before sealing or opening it, to
//! know whether it is the final one. The decrypting reader hands out a
//! chunk's plaintext only after its tag verified; a stream that ends before
//! the final chunk is an error, never a silent end of file. After an error
//! every further read repeats it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::envelope::{ChunkCipher, HEADER_LEN, Header, TAG_LEN};
use crate::error::CryptoError;
use crate::keyring::Keyring;

/// Reads plaintext from `inner` and yields its envelope: the header, then the
/// sealed chunks.
pub struct EncryptingReader<R> {
    inner: R,
    cipher: ChunkCipher,
    /// Plaintext read ahead: up to one chunk plus one byte.
    input: Vec<u8>,
    input_filled: usize,
    inner_ended: bool,
    /// Sealed bytes waiting to be read.
    output: Vec<u8>,
    output_position: usize,
    next_index: u64,
    finished: bool,
}

impl<R: AsyncRead + Unpin> EncryptingReader<R> {
    /// An envelope bound to `context` under a fresh data key, wrapped by the
    /// keyring's current KEK.
    pub fn new(inner: R, keyring: &Keyring, context: &str) -> EncryptingReader<R> {
        let (cipher, header) = ChunkCipher::for_new_envelope(keyring, context);
        let chunk_size = cipher.chunk_size;
        let mut output = Vec::with_capacity(chunk_size + TAG_LEN);
        output.extend_from_slice(&header);
        EncryptingReader {
            inner,
            cipher,
            input: vec![0; chunk_size + 1],
            input_filled: 0,
            inner_ended: false,
            output,
            output_position: 0,
            next_index: 0,
            finished: false,
        }
    }

    fn seal(&mut self, plaintext_len: usize, is_final: bool) {
        self.output.clear();
        self.output_position = 0;
        self.cipher.seal_chunk(self.next_index, is_final, &self.input[..plaintext_len], &mut self.output);
        self.next_index += 1;
        self.input.copy_within(plaintext_len..self.input_filled, 0);
        self.input_filled -= plaintext_len;
        self.finished = is_final;
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for EncryptingReader<R> {
    fn poll_read(self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.output_position < this.output.len() {
                let length = buffer.remaining().min(this.output.len() - this.output_position);
                buffer.put_slice(&this.output[this.output_position..this.output_position + length]);
                this.output_position += length;
                return Poll::Ready(Ok(()));
            }
            if this.finished {
                return Poll::Ready(Ok(()));
            }
            let chunk_size = this.cipher.chunk_size;
            if this.input_filled > chunk_size {
                this.seal(chunk_size, false);
                continue;
            }
            if this.inner_ended {
                this.seal(this.input_filled, true);
                continue;
            }
            let mut read_buffer = ReadBuf::new(&mut this.input[this.input_filled..]);
            ready!(Pin::new(&mut this.inner).poll_read(context, &mut read_buffer))?;
            let read = read_buffer.filled().len();
            if read == 0 {
                this.inner_ended = true;
            }
            this.input_filled += read;
        }
    }
}

/// Reads an envelope from `inner` and yields its verified plaintext.
pub struct DecryptingReader<R> {
    inner: R,
    cipher: ChunkCipher,
    /// Sealed bytes read ahead: up to one sealed chunk plus one byte.
    input: Vec<u8>,
    input_filled: usize,
    inner_ended: bool,
    /// Verified plaintext waiting to be read.
    output: Vec<u8>,
    output_position: usize,
    next_index: u64,
    finished: bool,
    failed: Option<CryptoError>,
}

impl<R: AsyncRead + Unpin> DecryptingReader<R> {
    /// Read and check the envelope's header (its KEK must be in `keyring`,
    /// and it must be bound to `context`); the chunks are verified as they
    /// are read.
    pub async fn open(mut inner: R, keyring: &Keyring, context: &str) -> io::Result<DecryptingReader<R>> {
        let mut header = [0u8; HEADER_LEN];
        let mut filled = 0;
        while filled < HEADER_LEN {
            let read = inner.read(&mut header[filled..]).await?;
            if read == 0 {
                break;
            }
            filled += read;
        }
        let parsed = Header::parse(&header[..filled], context).map_err(CryptoError::into_io)?;
        let cipher = ChunkCipher::for_header(&parsed, keyring, context).map_err(CryptoError::into_io)?;
        let sealed_chunk_len = cipher.chunk_size + TAG_LEN;
        Ok(DecryptingReader {
            inner,
            cipher,
            input: vec![0; sealed_chunk_len + 1],
            input_filled: 0,
            inner_ended: false,
            output: Vec::with_capacity(sealed_chunk_len),
            output_position: 0,
            next_index: 0,
            finished: false,
            failed: None,
        })
    }

    fn open_next_chunk(&mut self, sealed_len: usize, is_last: bool) -> Result<(), CryptoError> {
        self.output.clear();
        self.output_position = 0;
        self.output.extend_from_slice(&self.input[..sealed_len]);
        self.input.copy_within(sealed_len..self.input_filled, 0);
        self.input_filled -= sealed_len;
        let opened = if is_last {
            self.cipher.open_last_chunk(self.next_index, &mut self.output)
        } else {
            self.cipher.open_chunk(self.next_index, false, &mut self.output).map_err(|()| self.cipher.tampered())
        };
        if opened.is_err() {
            // Never let unverified bytes out.
            self.output.clear();
        }
        self.next_index += 1;
        self.finished = is_last;
        opened
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for DecryptingReader<R> {
    fn poll_read(self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(error) = &this.failed {
                return Poll::Ready(Err(error.clone().into_io()));
            }
            if this.output_position < this.output.len() {
                let length = buffer.remaining().min(this.output.len() - this.output_position);
                buffer.put_slice(&this.output[this.output_position..this.output_position + length]);
                this.output_position += length;
                return Poll::Ready(Ok(()));
            }
            if this.finished {
                return Poll::Ready(Ok(()));
            }
            let sealed_chunk_len = this.cipher.chunk_size + TAG_LEN;
            let opened = if this.input_filled > sealed_chunk_len {
                Some(this.open_next_chunk(sealed_chunk_len, false))
            } else if this.inner_ended {
                Some(this.open_next_chunk(this.input_filled, true))
            } else {
                None
            };
            match opened {
                Some(Ok(())) => continue,
                Some(Err(error)) => {
                    this.failed = Some(error);
                    continue;
                }
                None => {}
            }
            let mut read_buffer = ReadBuf::new(&mut this.input[this.input_filled..]);
            ready!(Pin::new(&mut this.inner).poll_read(context, &mut read_buffer))?;
            let read = read_buffer.filled().len();
            if read == 0 {
                this.inner_ended = true;
            }
            this.input_filled += read;
        }
    }
}

/// Encrypt everything `plaintext` yields into `sink`, in constant memory.
/// Returns the envelope's length.
pub async fn encrypt_stream(
    plaintext: impl AsyncRead + Unpin,
    sink: &mut (impl tokio::io::AsyncWrite + Unpin),
    keyring: &Keyring,
    context: &str,
) -> io::Result<u64> {
    let mut reader = EncryptingReader::new(plaintext, keyring, context);
    tokio::io::copy(&mut reader, sink).await
}

/// Decrypt the envelope `envelope` yields into `sink`, in constant memory.
/// Only verified chunks reach the sink; a tampered or truncated envelope ends
/// in an error (see [`CryptoError::from_io`]) after the verified chunks
/// before the damage. Returns the plaintext's length.
pub async fn decrypt_stream(
    envelope: impl AsyncRead + Unpin,
    sink: &mut (impl tokio::io::AsyncWrite + Unpin),
    keyring: &Keyring,
    context: &str,
) -> io::Result<u64> {
    let mut reader = DecryptingReader::open(envelope, keyring, context).await?;
    tokio::io::copy(&mut reader, sink).await
}
