//! Errors of the proxy's core, each mapped to the gRPC code a client can act on.
//!
//! Messages are for people and never contain a secret: they name the rule or the missing thing.

use tonic::{Code, Status};

/// An error of an API call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LsaError {
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The thing asked for does not exist (or no longer: e.g. the enclave restarted).
    #[error("{0}")]
    NotFound(String),
    /// The caller may not use the thing asked for.
    #[error("{0}")]
    PermissionDenied(String),
    /// The credential was refused (e.g. wrong password).
    #[error("{0}")]
    Unauthenticated(String),
    /// A protocol or option credguard refuses by rule.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The session holds no valid TGT: the proxy runs the AS exchange first (FAILED_PRECONDITION
    /// if it reaches a client).
    #[error("{0}")]
    NoTgt(String),
    /// The enclave is not reachable right now; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// A limit was reached.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Not implemented yet.
    #[error("{0}")]
    Unimplemented(String),
    /// A bug or an unexpected answer.
    #[error("{0}")]
    Internal(String),
}

impl LsaError {
    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            LsaError::InvalidArgument(_) => Code::InvalidArgument,
            LsaError::NotFound(_) => Code::NotFound,
            LsaError::PermissionDenied(_) => Code::PermissionDenied,
            LsaError::Unauthenticated(_) => Code::Unauthenticated,
            LsaError::FailedPrecondition(_) | LsaError::NoTgt(_) => Code::FailedPrecondition,
            LsaError::Unavailable(_) => Code::Unavailable,
            LsaError::ResourceExhausted(_) => Code::ResourceExhausted,
            LsaError::Unimplemented(_) => Code::Unimplemented,
            LsaError::Internal(_) => Code::Internal,
        }
    }

    /// The error for a failed enclave reply with gRPC `code` and `message`.
    pub fn from_enclave(code: i32, message: String) -> Self {
        match Code::from_i32(code) {
            Code::InvalidArgument | Code::OutOfRange => LsaError::InvalidArgument(message),
            Code::NotFound => LsaError::NotFound(message),
            Code::PermissionDenied => LsaError::PermissionDenied(message),
            Code::Unauthenticated => LsaError::Unauthenticated(message),
            Code::FailedPrecondition => LsaError::FailedPrecondition(message),
            Code::Unavailable => LsaError::Unavailable(message),
            Code::ResourceExhausted => LsaError::ResourceExhausted(message),
            Code::Unimplemented => LsaError::Unimplemented(message),
            _ => LsaError::Internal(format!("enclave error: {message}")),
        }
    }
}

impl From<credguard_proto::rpc::RpcError> for LsaError {
    fn from(e: credguard_proto::rpc::RpcError) -> Self {
        use credguard_proto::enclave::ErrorReason;
        match e.reason {
            ErrorReason::NoTgt => LsaError::NoTgt(e.message),
            // Said the same way whatever the enclave's words: PAM and clients steer on it.
            ErrorReason::PasswordExpired if e.message.starts_with(PASSWORD_EXPIRED) => {
                LsaError::FailedPrecondition(e.message)
            }
            ErrorReason::PasswordExpired => LsaError::FailedPrecondition(format!("{PASSWORD_EXPIRED}: {}", e.message)),
            _ => LsaError::from_enclave(e.code, e.message),
        }
    }
}

/// How the message of an expired password's FAILED_PRECONDITION begins.
pub const PASSWORD_EXPIRED: &str = "password expired";

/// A request the enclave would refuse, refused early with the same words.
impl From<credguard_proto::checks::CheckError> for LsaError {
    fn from(e: credguard_proto::checks::CheckError) -> Self {
        if e.is_rule() {
            LsaError::FailedPrecondition(e.to_string())
        } else {
            LsaError::InvalidArgument(e.to_string())
        }
    }
}

impl From<LsaError> for Status {
    fn from(e: LsaError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use credguard_proto::enclave::ErrorReason;
    use credguard_proto::rpc::{RpcError, code};

    #[test]
    fn an_expired_password_is_failed_precondition_saying_so() {
        let e = RpcError::new(code::FAILED_PRECONDITION, "KDC error 23").with_reason(ErrorReason::PasswordExpired);
        let status = Status::from(LsaError::from(e));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().starts_with("password expired"), "{}", status.message());
        // The same code without the reason is not taken for an expired password.
        let other = LsaError::from(RpcError::new(code::FAILED_PRECONDITION, "KDC error 12"));
        assert!(!other.to_string().starts_with("password expired"));
    }
}
