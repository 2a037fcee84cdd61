//! Each part's errors as the call's [`RpcError`]: one place where the enclave's refusals get their
//! gRPC codes (and, where the caller acts on one, their [`ErrorReason`]).

use alloc::string::String;

use credguard_proto::enclave::ErrorReason;
use credguard_proto::rpc::{RpcError, code};

use crate::credentials::LogonRefused;
use crate::kerberos::KerberosError;
use crate::ntlm::NtlmError;
use crate::vault::VaultError;

impl From<LogonRefused> for RpcError {
    fn from(e: LogonRefused) -> Self {
        match e {
            LogonRefused::Invalid(m) => RpcError::new(code::INVALID_ARGUMENT, m),
            LogonRefused::Rule(m) => RpcError::new(code::FAILED_PRECONDITION, m),
            LogonRefused::Full(m) => RpcError::new(code::RESOURCE_EXHAUSTED, String::from(m)),
        }
    }
}

impl From<KerberosError> for RpcError {
    fn from(e: KerberosError) -> Self {
        let reason = match e {
            KerberosError::NoTgt(_) => Some(ErrorReason::NoTgt),
            KerberosError::PasswordExpired(_) => Some(ErrorReason::PasswordExpired),
            _ => None,
        };
        let error = RpcError::new(e.code(), e.message());
        match reason {
            Some(r) => error.with_reason(r),
            None => error,
        }
    }
}

impl From<NtlmError> for RpcError {
    fn from(e: NtlmError) -> Self {
        RpcError::new(e.code(), e.message())
    }
}

impl From<VaultError> for RpcError {
    fn from(e: VaultError) -> Self {
        RpcError::new(e.code(), alloc::format!("{e}"))
    }
}
