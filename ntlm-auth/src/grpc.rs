//! The backend over the credguard API socket (`credguard.v1.Lsa`), through `credguard-client`.

use std::path::PathBuf;

use credguard_proto::lsa::{self, lsa_client::LsaClient};
use tonic::transport::Channel;
use zeroize::Zeroize;

use crate::helper::{Backend, BackendError, Negotiated, Session};

/// The API at a socket path, connected on first use and again after a lost connection.
pub struct GrpcBackend {
    socket: PathBuf,
    runtime: tokio::runtime::Runtime,
    client: Option<LsaClient<Channel>>,
}

impl GrpcBackend {
    /// A backend for the API at `socket` (nothing is connected yet).
    pub fn new(socket: PathBuf) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(GrpcBackend {
            socket,
            runtime,
            client: None,
        })
    }

    /// Runs `call` with a connected client; a failure of the transport drops the connection, so
    /// that the next request connects again (the proxy may have restarted).
    fn call<T>(
        &mut self,
        what: &str,
        call: impl AsyncFnOnce(&mut LsaClient<Channel>) -> Result<T, tonic::Status>,
    ) -> Result<T, BackendError> {
        let socket = self.socket.clone();
        let client = &mut self.client;
        let result = self.runtime.block_on(async move {
            if client.is_none() {
                let c = credguard_client::connect(&socket).await.map_err(|e| {
                    BackendError(format!("cannot reach credguard at {}: {}", socket.display(), chain(&e)))
                })?;
                *client = Some(c);
            }
            let Some(c) = client.as_mut() else {
                return Err(BackendError("no connection to credguard".into()));
            };
            call(c).await.map_err(|s| status_error(what, &s))
        });
        if result.is_err() {
            self.client = None;
        }
        result
    }
}

/// An error and its sources, on one line (tonic's transport error says little by itself).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Wrappers often repeat their source's text.
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

/// The API's refusal, with its code (as `credguardctl` prints it) and message. API messages name
/// the rule or the malformed part, never a secret.
fn status_error(what: &str, s: &tonic::Status) -> BackendError {
    BackendError(format!("credguard {what}: {:?}: {}", s.code(), s.message()))
}

impl Backend for GrpcBackend {
    fn sessions(&mut self) -> Result<Vec<Session>, BackendError> {
        let reply = self.call("ListSessions", async |c| {
            c.list_sessions(lsa::ListSessionsRequest {}).await
        })?;
        Ok(reply
            .into_inner()
            .sessions
            .into_iter()
            .map(|s| Session {
                id: s.session_id,
                user: s.user,
                domain: s.domain,
                uid: s.uid,
                is_default: s.is_default,
            })
            .collect())
    }

    fn negotiate(&mut self, session_id: &str) -> Result<Negotiated, BackendError> {
        let req = lsa::NtlmNegotiateRequest {
            session_id: session_id.into(),
        };
        let r = self
            .call("NtlmNegotiate", async |c| c.ntlm_negotiate(req).await)?
            .into_inner();
        Ok(Negotiated {
            context_id: r.context_id,
            negotiate_message: r.negotiate_message,
        })
    }

    fn authenticate(
        &mut self,
        context_id: &str,
        challenge: Vec<u8>,
        target_spn: &str,
    ) -> Result<Vec<u8>, BackendError> {
        let req = lsa::NtlmAuthenticateRequest {
            context_id: context_id.into(),
            challenge_message: challenge,
            target_spn: target_spn.into(),
            ..Default::default()
        };
        let mut r = self
            .call("NtlmAuthenticate", async |c| c.ntlm_authenticate(req).await)?
            .into_inner();
        // The caller of ntlm_auth never asks for it here (GK is refused): not kept.
        r.exported_session_key.zeroize();
        Ok(r.authenticate_message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_api_is_an_error_with_the_path_not_a_panic() {
        let path = std::env::temp_dir().join(format!("credguard-ntlm-auth-none-{}.sock", std::process::id()));
        let mut b = GrpcBackend::new(path.clone()).unwrap();
        let e = b.sessions().unwrap_err();
        assert!(
            e.0.starts_with(&format!("cannot reach credguard at {}", path.display())),
            "{}",
            e.0
        );
        // And again: it tries to connect anew each time.
        assert!(b.negotiate("x").is_err());
    }
}
