//! Request decoding errors as the client's fault: `INVALID_ARGUMENT`, not `INTERNAL`.
//!
//! tonic answers a request whose protobuf does not decode (invalid UTF-8 in a string field, a
//! malformed varint, a wrong wire type) with `INTERNAL` ("failed to decode Protobuf message"), and
//! a unary call without a message with `INTERNAL` too; a request over the size limit gets
//! `OUT_OF_RANGE`. To a caller `INTERNAL` says "the server broke, retry", which is wrong: the
//! request is malformed and will fail again. This layer rewrites those answers, and only those,
//! to `INVALID_ARGUMENT` (and the size one to `RESOURCE_EXHAUSTED`, as the API documents for an
//! oversized request). The gRPC framing errors that the gRPC spec requires to be `INTERNAL` (a bad
//! compressed flag, a truncated frame) are left alone.
//!
//! tonic builds these answers before any handler runs, as trailers-only responses (the status in
//! the headers), so a layer over the whole server can see and fix them without a codec of our own.

use tonic::Code;
use tonic::body::Body;
use tonic::codegen::http::{self, header::HeaderValue};
use tower::util::MapResponseLayer;

/// The messages of tonic's request decoding errors (its `Status` message, percent-encoded in
/// `grpc-message`), and the code each one becomes. Pinned by `tests/hostile_input.rs`.
const REWRITES: &[(Code, &str, Code)] = &[
    // prost's DecodeError, as tonic-prost maps it.
    (
        Code::Internal,
        "failed to decode Protobuf message",
        Code::InvalidArgument,
    ),
    // A unary request that ended before its message.
    (Code::Internal, "Missing request message", Code::InvalidArgument),
    // Over `max_decoding_message_size`.
    (
        Code::OutOfRange,
        "Error, decoded message length too large",
        Code::ResourceExhausted,
    ),
];

/// The function the layer applies to every response.
pub type Rewrite = fn(http::Response<Body>) -> http::Response<Body>;

/// The layer for `tonic::transport::Server::builder().layer(...)`.
pub fn layer() -> MapResponseLayer<Rewrite> {
    MapResponseLayer::new(rewrite as Rewrite)
}

/// Rewrites the status of one response if it is a request decoding error (see the module doc).
pub fn rewrite(mut response: http::Response<Body>) -> http::Response<Body> {
    let headers = response.headers_mut();
    let Some(code) = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32)
    else {
        return response;
    };
    let message = headers
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    if let Some((_, _, to)) = REWRITES
        .iter()
        .find(|(from, prefix, _)| *from == code && message.starts_with(prefix))
    {
        headers.insert("grpc-status", HeaderValue::from(*to as i32));
        // The client learns what was wrong with its request; the text has no secret in it (prost
        // names the message and field, never their bytes).
        let text = format!("malformed request: {message}");
        if let Ok(v) = HeaderValue::from_str(&percent_encode(&text)) {
            headers.insert("grpc-message", v);
        }
    }
    response
}

/// gRPC's `grpc-message` encoding: percent-encoding of bytes outside printable ASCII and of `%`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(v: &[u8]) -> String {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            v[i],
            v.get(i + 1).copied().and_then(hex),
            v.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: Code, message: &str) -> http::Response<Body> {
        tonic::Status::new(status, message).into_http()
    }

    fn status_of(r: &http::Response<Body>) -> (i32, String) {
        let h = r.headers();
        (
            h.get("grpc-status").unwrap().to_str().unwrap().parse().unwrap(),
            percent_decode(h.get("grpc-message").map(|v| v.as_bytes()).unwrap_or_default()),
        )
    }

    #[test]
    fn decode_errors_become_invalid_argument() {
        let bad_utf8 =
            "failed to decode Protobuf message: LogonRequest.user: invalid string value: data is not UTF-8 encoded";
        let (code, msg) = status_of(&rewrite(response(Code::Internal, bad_utf8)));
        assert_eq!(code, Code::InvalidArgument as i32);
        assert_eq!(msg, format!("malformed request: {bad_utf8}"));
        let (code, _) = status_of(&rewrite(response(Code::Internal, "Missing request message.")));
        assert_eq!(code, Code::InvalidArgument as i32);
        let big = "Error, decoded message length too large: found 2000000 bytes, the limit is: 1048576 bytes";
        let (code, _) = status_of(&rewrite(response(Code::OutOfRange, big)));
        assert_eq!(code, Code::ResourceExhausted as i32);
    }

    #[test]
    fn other_statuses_are_left_alone() {
        for (code, msg) in [
            (Code::Internal, "the enclave broke"),
            (
                Code::Internal,
                "protocol error: received message with invalid compression flag: 7",
            ),
            (Code::Unavailable, "failed to decode Protobuf message"),
            (Code::OutOfRange, "something else"),
        ] {
            let (got, text) = status_of(&rewrite(response(code, msg)));
            assert_eq!((got, text.as_str()), (code as i32, msg));
        }
        // A success (no status in the headers) passes through.
        let ok = http::Response::new(Body::empty());
        assert!(rewrite(ok).headers().get("grpc-status").is_none());
    }

    #[test]
    fn percent_coding_round_trips() {
        let s = "100% naïve\nline";
        assert_eq!(percent_decode(percent_encode(s).as_bytes()), s);
    }
}
