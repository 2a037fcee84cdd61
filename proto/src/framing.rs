//! Framing of [`Frame`] messages on the enclave's vsock stream.
//!
//! Each message is gRPC's length-prefixed message: one flag byte (0: not compressed), a 4-byte
//! big-endian length, then the protobuf-encoded [`Frame`]. We keep gRPC's framing so the stream
//! is familiar to read and to capture, without HTTP/2 inside the enclave.

use alloc::vec::Vec;

use prost::Message;
use zeroize::Zeroize;

use crate::enclave::Frame;

/// Bytes before each message: flag byte and big-endian length.
pub const FRAME_HEADER_LEN: usize = 5;

/// Largest encoded [`Frame`] either side accepts. Larger frames are refused before they are
/// buffered, so a peer cannot make the other side grow its memory without bound. The largest real
/// frames are service-ticket replies (ticket, AP-REQ and GSS token of at most a 64 KiB KDC reply);
/// the enclave's memory headroom (`service::MEMORY_HEADROOM`) is sized for a few of these.
pub const MAX_FRAME_LEN: usize = 256 << 10;

/// Why a stream could not be decoded. After any of these the stream is out of sync and must be
/// closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The flag byte announced compression, which this protocol never uses.
    #[error("compressed frames are not supported")]
    Compressed,
    /// The announced length is above [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    TooLong(usize),
    /// The bytes are not a valid `Frame`.
    #[error("frame is not a valid protobuf Frame")]
    Decode,
}

/// Appends `frame`, framed, to `out`.
pub fn encode_frame(frame: &Frame, out: &mut Vec<u8>) {
    let len = frame.encoded_len();
    out.reserve(FRAME_HEADER_LEN + len);
    out.push(0);
    // Frames are bounded by MAX_FRAME_LEN on receipt; a sender that builds a larger one gets it
    // refused by the peer, never a truncated length.
    out.extend_from_slice(&(len as u32).to_be_bytes());
    frame.encode_raw(out);
}

/// Incremental decoder: push bytes as they arrive, pop whole frames.
#[derive(Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder with an empty buffer.
    pub const fn new() -> Self {
        Self { buf: Vec::new() }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        if self.buf[0] != 0 {
            return Err(FrameError::Compressed);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_FRAME_LEN {
            return Err(FrameError::TooLong(len));
        }
        let end = FRAME_HEADER_LEN + len;
        if self.buf.len() < end {
            return Ok(None);
        }
        let frame = Frame::decode(&self.buf[FRAME_HEADER_LEN..end]).map_err(|_| FrameError::Decode);
        // A frame may carry a secret (a logon's password): wipe it from the buffer, not just drop it.
        self.buf[..end].zeroize();
        self.buf.drain(..end);
        frame.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn sample(call_id: u64) -> Frame {
        Frame {
            call_id,
            method_id: crate::enclave::EnclaveMethod::Status.id(),
            payload: vec![1, 2, 3],
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_byte_by_byte() {
        let mut bytes = Vec::new();
        encode_frame(&sample(7), &mut bytes);
        encode_frame(&sample(8), &mut bytes);
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        for b in &bytes {
            dec.push(core::slice::from_ref(b));
            while let Some(f) = dec.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, vec![sample(7), sample(8)]);
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn refuses_oversized_and_compressed() {
        let mut dec = FrameDecoder::new();
        dec.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(dec.next_frame(), Err(FrameError::TooLong(0xffff_ffff)));
        let mut dec = FrameDecoder::new();
        dec.push(&[1, 0, 0, 0, 0]);
        assert_eq!(dec.next_frame(), Err(FrameError::Compressed));
    }

    #[test]
    fn refuses_garbage() {
        let mut dec = FrameDecoder::new();
        dec.push(&[0, 0, 0, 0, 2, 0xff, 0xff]);
        assert_eq!(dec.next_frame(), Err(FrameError::Decode));
    }
}
