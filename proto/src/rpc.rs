//! The enclave service's calls, as both sides use them: the error a call ends with, and (host
//! only, feature `std`) the two transports a client can run over. The rest (method ids, the server trait and its dispatcher,
//! the clients) is generated from `enclave.proto` by `build.rs` into [`crate::enclave`], so that
//! no method is named or decoded by hand on either side.
//!
//! The shape follows Project Oak's `micro_rpc`: a method is a number, a request is decoded once by
//! the generated dispatcher, and the server is a trait the enclave implements.

use alloc::string::String;

use crate::enclave::ErrorReason;

/// gRPC status codes the enclave answers with (a subset of gRPC's).
pub mod code {
    /// Done.
    pub const OK: i32 = 0;
    /// Malformed request.
    pub const INVALID_ARGUMENT: i32 = 3;
    /// No such session, context or principal.
    pub const NOT_FOUND: i32 = 5;
    /// The caller may not (e.g. a vault blob of another uid).
    pub const PERMISSION_DENIED: i32 = 7;
    /// A limit: the rate limit, the enclave's memory, a per-user cap.
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    /// Refused by one of the enclave's rules, or the wrong state.
    pub const FAILED_PRECONDITION: i32 = 9;
    /// No such method.
    pub const UNIMPLEMENTED: i32 = 12;
    /// The enclave itself failed (e.g. its random source).
    pub const INTERNAL: i32 = 13;
    /// Not answering usefully now (e.g. a KDC's clock); retrying later may help.
    pub const UNAVAILABLE: i32 = 14;
    /// The credential was refused.
    pub const UNAUTHENTICATED: i32 = 16;
}

/// A failed call: a gRPC code, what the caller should do about it where the code alone does not
/// say ([`ErrorReason`]), and a message for people that never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// gRPC status code (never [`code::OK`]).
    pub code: i32,
    /// The reason a caller acts on, if any.
    pub reason: ErrorReason,
    /// What went wrong.
    pub message: String,
}

impl RpcError {
    /// An error with `code` and `message`.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        RpcError {
            code,
            reason: ErrorReason::Unspecified,
            message: message.into(),
        }
    }

    /// The same error, with a reason the caller acts on.
    pub fn with_reason(mut self, reason: ErrorReason) -> Self {
        self.reason = reason;
        self
    }

    /// A request that does not decode as `what`.
    pub fn malformed(what: &str) -> Self {
        RpcError::new(code::INVALID_ARGUMENT, alloc::format!("payload is not a {what}"))
    }

    /// A reply that does not decode as `what` (the peer is not the enclave it should be).
    #[cfg(feature = "std")]
    pub fn bad_reply(what: &str) -> Self {
        RpcError::new(
            code::INTERNAL,
            alloc::format!("the enclave's reply is not a valid {what}"),
        )
    }

    /// The error a failed reply frame carries (`None` for a successful one).
    #[cfg(feature = "std")]
    pub fn from_frame(frame: &crate::enclave::Frame) -> Option<Self> {
        (frame.code != code::OK).then(|| RpcError {
            code: frame.code,
            reason: ErrorReason::try_from(frame.reason).unwrap_or(ErrorReason::Unspecified),
            message: frame.message.clone(),
        })
    }

    /// A method id that names no method.
    pub fn unknown_method(id: u32) -> Self {
        RpcError::new(code::UNIMPLEMENTED, alloc::format!("unknown method {id}"))
    }
}

impl core::fmt::Display for RpcError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "enclave error (code {}): {}", self.code, self.message)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for RpcError {}

/// A blocking way to the enclave (host only, as the clients): sends one call (the request's payload, encoded) and returns the
/// reply's payload, or the error the enclave answered (or a transport error of its own).
#[cfg(feature = "std")]
pub trait Transport {
    /// The transport's error; a failed reply becomes one through `From<RpcError>`.
    type Error: From<RpcError>;

    /// Calls method `method_id` with `payload`; the payload may be a secret, so the transport
    /// wipes its copies once sent.
    fn call(&mut self, method_id: u32, payload: alloc::vec::Vec<u8>) -> Result<alloc::vec::Vec<u8>, Self::Error>;
}

/// An asynchronous way to the enclave (the proxy's link, many calls in flight).
#[cfg(feature = "std")]
pub trait AsyncTransport {
    /// As [`Transport::Error`].
    type Error: From<RpcError>;

    /// As [`Transport::call`].
    fn call(
        &self,
        method_id: u32,
        payload: alloc::vec::Vec<u8>,
    ) -> impl core::future::Future<Output = Result<alloc::vec::Vec<u8>, Self::Error>> + Send;
}
