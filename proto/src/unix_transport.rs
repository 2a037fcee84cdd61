//! The blocking transport of the enclave service over the VMM's hybrid-vsock Unix socket: what
//! the VMM's watchdog, the tests and the benchmarks call the enclave through (with the generated
//! `enclave::EnclaveClient`); the LSA proxy has an asynchronous one of its own.
//!
//! The host end of the enclave's vsock is a Unix socket: connect, write `CONNECT <port>\n`, read
//! `OK <port>\n`, then the stream is the enclave's, in [`crate::framing`] framing.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use zeroize::Zeroize;

use crate::enclave::{EnclaveClient, Frame};
use crate::framing::{FrameDecoder, FrameError, encode_frame};
use crate::rpc::{RpcError, Transport};

/// Why a call over [`UnixTransport`] failed.
#[derive(Debug)]
pub enum TransportError {
    /// The socket failed.
    Io(io::Error),
    /// The VMM refused or did not understand the handshake.
    Handshake(String),
    /// The enclave's stream could not be decoded.
    Framing(FrameError),
    /// The stream ended before the reply.
    Closed,
    /// The enclave answered with an error.
    Rpc(RpcError),
}

impl core::fmt::Display for TransportError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TransportError::Io(e) => write!(f, "enclave socket: {e}"),
            TransportError::Handshake(line) => write!(f, "vsock handshake refused: {line:?}"),
            TransportError::Framing(e) => write!(f, "enclave stream: {e}"),
            TransportError::Closed => f.write_str("the enclave closed the connection"),
            TransportError::Rpc(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TransportError {}

impl From<io::Error> for TransportError {
    fn from(e: io::Error) -> Self {
        TransportError::Io(e)
    }
}

impl From<FrameError> for TransportError {
    fn from(e: FrameError) -> Self {
        TransportError::Framing(e)
    }
}

impl From<RpcError> for TransportError {
    fn from(e: RpcError) -> Self {
        TransportError::Rpc(e)
    }
}

impl TransportError {
    /// The gRPC code the enclave answered with, if it answered with an error.
    pub fn code(&self) -> Option<i32> {
        match self {
            TransportError::Rpc(e) => Some(e.code),
            _ => None,
        }
    }
}

/// One connection to the enclave service.
pub struct UnixTransport {
    stream: BufReader<UnixStream>,
    decoder: FrameDecoder,
    next_call_id: u64,
}

/// A client of the enclave service over one Unix-socket connection.
pub type UnixClient = EnclaveClient<UnixTransport>;

impl UnixTransport {
    /// Connects to the VMM's socket at `uds_path` and to vsock `port` of the enclave; `timeout`
    /// bounds every read and write.
    pub fn connect(uds_path: &Path, port: u32, timeout: Duration) -> Result<Self, TransportError> {
        let stream = UnixStream::connect(uds_path)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        (&stream).write_all(format!("CONNECT {port}\n").as_bytes())?;
        let mut stream = BufReader::new(stream);
        let mut line = String::new();
        // The handshake line is short; a longer answer is a wrong peer, not something to buffer.
        (&mut stream).take(64).read_line(&mut line)?;
        if line.trim_end() != format!("OK {port}") {
            return Err(TransportError::Handshake(line));
        }
        Ok(UnixTransport {
            stream,
            decoder: FrameDecoder::new(),
            next_call_id: 1,
        })
    }

    /// Asks the VMM at `uds_path` for its own status ([`crate::vmm_status`]): the VMM answers
    /// the status port itself, with the encoded message and end of stream.
    pub fn vmm_status(uds_path: &Path, timeout: Duration) -> Result<crate::vmm_status::VmmStatus, TransportError> {
        use crate::vmm_status::{MAX_VMM_STATUS_LEN, VMM_STATUS_PORT, VmmStatus};
        use prost::Message;
        let mut stream = Self::connect(uds_path, VMM_STATUS_PORT, timeout)?.stream;
        let mut bytes = Vec::new();
        (&mut stream)
            .take(MAX_VMM_STATUS_LEN as u64 + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() > MAX_VMM_STATUS_LEN {
            return Err(TransportError::Handshake("the VMM status is too long".into()));
        }
        VmmStatus::decode(bytes.as_slice())
            .map_err(|_| TransportError::Handshake("the VMM status does not decode".into()))
    }

    /// A client of the enclave service over a new connection (see [`UnixTransport::connect`]).
    pub fn client(uds_path: &Path, port: u32, timeout: Duration) -> Result<UnixClient, TransportError> {
        Ok(EnclaveClient::new(Self::connect(uds_path, port, timeout)?))
    }

    /// Replaces the read and write timeout set at [`UnixTransport::connect`] (the watchdog gives
    /// each ping what is left of its allowed silence).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), TransportError> {
        let stream = self.stream.get_ref();
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(())
    }

    /// Sends one request frame for `method_id` and waits for the frame that answers it, whatever
    /// its status (tests look at its audit records and raw codes).
    pub fn call_frame(&mut self, method_id: u32, mut payload: Vec<u8>) -> Result<Frame, TransportError> {
        let call_id = self.next_call_id;
        self.next_call_id += 1;
        let mut frame = Frame {
            call_id,
            method_id,
            payload: core::mem::take(&mut payload),
            ..Default::default()
        };
        let mut out = Vec::new();
        encode_frame(&frame, &mut out);
        // The payload may be a logon's secret.
        frame.payload.zeroize();
        let sent = self.send_bytes(&out);
        out.zeroize();
        sent?;
        loop {
            if let Some(reply) = self.read_frame()?
                && reply.call_id == call_id
            {
                return Ok(reply);
            }
        }
    }

    /// Writes raw bytes to the stream (tests use it to send malformed or pipelined input).
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        self.stream.get_mut().write_all(bytes)?;
        Ok(())
    }

    /// Reads until one whole frame has arrived.
    pub fn read_frame(&mut self) -> Result<Option<Frame>, TransportError> {
        loop {
            if let Some(f) = self.decoder.next_frame()? {
                return Ok(Some(f));
            }
            let buf = self.stream.fill_buf()?;
            if buf.is_empty() {
                return Err(TransportError::Closed);
            }
            let n = buf.len();
            self.decoder.push(buf);
            self.stream.consume(n);
        }
    }
}

impl Transport for UnixTransport {
    type Error = TransportError;

    fn call(&mut self, method_id: u32, payload: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let reply = self.call_frame(method_id, payload)?;
        match RpcError::from_frame(&reply) {
            Some(e) => Err(e.into()),
            None => Ok(reply.payload),
        }
    }
}
