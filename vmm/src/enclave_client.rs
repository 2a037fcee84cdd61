//! A blocking client for the enclave service, over the VMM's hybrid-vsock Unix socket.
//!
//! The host end of the enclave's vsock is a Unix socket: connect, write `CONNECT <port>\n`, read
//! `OK <port>\n`, then the stream is the enclave's (see `credguard_proto::wire`). Tests, benchmarks
//! and tools use this client; the LSA proxy has its own asynchronous link.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use credguard_proto::enclave::Frame;
use credguard_proto::wire::{FrameDecoder, WireError, encode_frame};
use prost::Message;

/// Errors of [`EnclaveClient`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("enclave socket: {0}")]
    Io(#[from] io::Error),
    /// The VMM refused or did not understand the handshake.
    #[error("vsock handshake refused: {0:?}")]
    Handshake(String),
    /// The enclave's stream could not be decoded.
    #[error("enclave stream: {0}")]
    Wire(#[from] WireError),
    /// The stream ended before the reply.
    #[error("the enclave closed the connection")]
    Closed,
    /// The reply's payload is not the expected message.
    #[error("undecodable reply: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The enclave answered with an error status.
    #[error("enclave error (code {code}): {message}")]
    Status {
        /// gRPC status code.
        code: i32,
        /// Its message.
        message: String,
    },
}

/// One connection to the enclave service.
pub struct EnclaveClient {
    stream: BufReader<UnixStream>,
    decoder: FrameDecoder,
    next_call_id: u64,
}

impl EnclaveClient {
    /// Connects to the VMM's socket at `uds_path` and to vsock `port` of the enclave.
    pub fn connect(uds_path: &Path, port: u32, timeout: Duration) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(uds_path)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        (&stream).write_all(format!("CONNECT {port}\n").as_bytes())?;
        let mut stream = BufReader::new(stream);
        let mut line = String::new();
        // The handshake line is short; a longer answer is a wrong peer, not something to buffer.
        (&mut stream).take(64).read_line(&mut line)?;
        if line.trim_end() != format!("OK {port}") {
            return Err(ClientError::Handshake(line));
        }
        Ok(EnclaveClient {
            stream,
            decoder: FrameDecoder::new(),
            next_call_id: 1,
        })
    }

    /// Replaces the read and write timeout set at [`EnclaveClient::connect`] (the watchdog gives
    /// each ping what is left of its allowed silence).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let stream = self.stream.get_ref();
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(())
    }

    /// Calls `method` with `request` and decodes the reply as `R`.
    pub fn call<Q: Message, R: Message + Default>(&mut self, method: &str, request: &Q) -> Result<R, ClientError> {
        let reply = self.call_raw(method, request.encode_to_vec())?;
        if reply.code != 0 {
            return Err(ClientError::Status {
                code: reply.code,
                message: reply.message,
            });
        }
        Ok(R::decode(reply.payload.as_slice())?)
    }

    /// Sends one request frame and waits for the frame that answers it.
    pub fn call_raw(&mut self, method: &str, payload: Vec<u8>) -> Result<Frame, ClientError> {
        let call_id = self.next_call_id;
        self.next_call_id += 1;
        let frame = Frame {
            call_id,
            method: method.into(),
            payload,
            code: 0,
            message: String::new(),
            audit: Vec::new(),
        };
        let mut out = Vec::new();
        encode_frame(&frame, &mut out);
        self.send_bytes(&out)?;
        loop {
            if let Some(reply) = self.read_frame()?
                && reply.call_id == call_id
            {
                return Ok(reply);
            }
        }
    }

    /// Writes raw bytes to the stream (tests use it to send malformed input).
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.get_mut().write_all(bytes)?;
        Ok(())
    }

    /// Reads until one whole frame has arrived.
    pub fn read_frame(&mut self) -> Result<Option<Frame>, ClientError> {
        loop {
            if let Some(f) = self.decoder.next_frame()? {
                return Ok(Some(f));
            }
            let buf = self.stream.fill_buf()?;
            if buf.is_empty() {
                return Err(ClientError::Closed);
            }
            let n = buf.len();
            self.decoder.push(buf);
            self.stream.consume(n);
        }
    }
}
