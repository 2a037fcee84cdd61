//! The tonic adapter: learns the caller, checks the request size, and hands over to [`LsaCore`].

use std::sync::Arc;

use credguard_proto::lsa;
use credguard_proto::lsa::lsa_server::Lsa;
use prost::Message;
use tonic::{Request, Response, Status};
use zeroize::Zeroize;

use crate::connection::ConnectionInfo;
use crate::core::LsaCore;
use crate::error::LsaError;
use crate::sessions::Caller;

/// The gRPC service.
pub struct LsaService {
    core: Arc<LsaCore>,
    ntlm: crate::ntlm::Ntlm,
}

impl LsaService {
    /// The service over `core`.
    pub fn new(core: Arc<LsaCore>) -> Self {
        LsaService {
            core,
            ntlm: crate::ntlm::Ntlm::new(),
        }
    }
}

/// Who made `req`: the uid of a Unix-socket peer (SO_PEERCRED), or the CID of a vsock peer.
pub fn caller_of<T>(req: &Request<T>) -> Result<Caller, LsaError> {
    let info = req
        .extensions()
        .get::<ConnectionInfo>()
        .ok_or_else(|| LsaError::PermissionDenied("the caller cannot be identified".into()))?;
    info.caller
        .ok_or_else(|| LsaError::PermissionDenied("the caller's credentials are unavailable".into()))
}

/// Ends the connection of `req` once it is quiet, when `req` carries a secret in the clear (not
/// `sealed`): its HTTP/2 read buffer would keep the bytes for as long as the client keeps the
/// connection (see [`crate::connection`]).
fn end_connection_if_plaintext<T>(req: &Request<T>, sealed: bool) {
    if sealed {
        return;
    }
    if let Some(info) = req.extensions().get::<ConnectionInfo>() {
        tracing::debug!("a secret came in the clear: the connection ends once quiet");
        info.end_when_quiet();
    }
}

fn begin<T: Message>(core: &LsaCore, req: &Request<T>) -> Result<Caller, Status> {
    let caller = caller_of(req)?;
    core.check_size(req.get_ref().encoded_len())?;
    Ok(caller)
}

#[tonic::async_trait]
impl Lsa for LsaService {
    async fn status(&self, req: Request<lsa::StatusRequest>) -> Result<Response<lsa::StatusReply>, Status> {
        let caller = begin(&self.core, &req)?;
        Ok(Response::new(self.core.status(caller).await?))
    }

    async fn logon(&self, req: Request<lsa::LogonRequest>) -> Result<Response<lsa::LogonReply>, Status> {
        use lsa::logon_request::Secret;
        end_connection_if_plaintext(&req, matches!(req.get_ref().secret, None | Some(Secret::Sealed(_))));
        let caller = match begin(&self.core, &req) {
            Ok(c) => c,
            Err(e) => {
                req.into_inner().secret.zeroize();
                return Err(e);
            }
        };
        Ok(Response::new(self.core.logon(caller, req.into_inner()).await?))
    }

    async fn logoff(&self, req: Request<lsa::LogoffRequest>) -> Result<Response<lsa::LogoffReply>, Status> {
        let caller = begin(&self.core, &req)?;
        Ok(Response::new(self.core.logoff(caller, req.into_inner()).await?))
    }

    async fn list_sessions(
        &self,
        req: Request<lsa::ListSessionsRequest>,
    ) -> Result<Response<lsa::ListSessionsReply>, Status> {
        let caller = begin(&self.core, &req)?;
        Ok(Response::new(self.core.list_sessions(caller)))
    }

    async fn ntlm_negotiate(
        &self,
        req: Request<lsa::NtlmNegotiateRequest>,
    ) -> Result<Response<lsa::NtlmNegotiateReply>, Status> {
        let caller = begin(&self.core, &req)?;
        Ok(Response::new(
            self.ntlm.negotiate(&self.core, caller, req.into_inner()).await?,
        ))
    }

    async fn ntlm_authenticate(
        &self,
        req: Request<lsa::NtlmAuthenticateRequest>,
    ) -> Result<Response<lsa::NtlmAuthenticateReply>, Status> {
        let caller = begin(&self.core, &req)?;
        Ok(Response::new(
            self.ntlm.authenticate(&self.core, caller, req.into_inner()).await?,
        ))
    }

    async fn legacy_authenticate(
        &self,
        req: Request<lsa::LegacyAuthenticateRequest>,
    ) -> Result<Response<lsa::LegacyAuthenticateReply>, Status> {
        let caller = begin(&self.core, &req)?;
        Ok(Response::new(
            self.ntlm
                .legacy_authenticate(&self.core, caller, req.into_inner())
                .await?,
        ))
    }

    async fn kerberos_get_tgt(
        &self,
        req: Request<lsa::KerberosGetTgtRequest>,
    ) -> Result<Response<lsa::KerberosGetTgtReply>, Status> {
        let caller = begin(&self.core, &req)?;
        Ok(Response::new(
            crate::kerberos::get_tgt(&self.core, caller, req.into_inner()).await?,
        ))
    }

    async fn kerberos_get_service_ticket(
        &self,
        req: Request<lsa::KerberosGetServiceTicketRequest>,
    ) -> Result<Response<lsa::KerberosGetServiceTicketReply>, Status> {
        let caller = begin(&self.core, &req)?;
        Ok(Response::new(
            crate::kerberos::get_service_ticket(&self.core, caller, req.into_inner()).await?,
        ))
    }

    async fn save_credential(
        &self,
        req: Request<lsa::SaveCredentialRequest>,
    ) -> Result<Response<lsa::SaveCredentialReply>, Status> {
        use lsa::save_credential_request::Secret;
        end_connection_if_plaintext(&req, matches!(req.get_ref().secret, None | Some(Secret::Sealed(_))));
        let caller = match begin(&self.core, &req) {
            Ok(c) => c,
            Err(e) => {
                req.into_inner().secret.zeroize();
                return Err(e);
            }
        };
        Ok(Response::new(
            crate::vault::save(&self.core, caller, req.into_inner()).await?,
        ))
    }

    async fn list_saved_credentials(
        &self,
        req: Request<lsa::ListSavedCredentialsRequest>,
    ) -> Result<Response<lsa::ListSavedCredentialsReply>, Status> {
        let caller = begin(&self.core, &req)?;
        Ok(Response::new(crate::vault::list(&self.core, caller)?))
    }

    async fn delete_saved_credential(
        &self,
        req: Request<lsa::DeleteSavedCredentialRequest>,
    ) -> Result<Response<lsa::DeleteSavedCredentialReply>, Status> {
        let caller = begin(&self.core, &req)?;
        Ok(Response::new(crate::vault::delete(
            &self.core,
            caller,
            req.into_inner(),
        )?))
    }

    async fn get_sealing_nonce(
        &self,
        req: Request<lsa::GetSealingNonceRequest>,
    ) -> Result<Response<lsa::GetSealingNonceReply>, Status> {
        let caller = begin(&self.core, &req)?;
        Ok(Response::new(self.core.sealing_nonce(caller).await?))
    }

    async fn logon_saved(
        &self,
        req: Request<lsa::LogonSavedRequest>,
    ) -> Result<Response<lsa::LogonSavedReply>, Status> {
        let caller = begin(&self.core, &req)?;
        Ok(Response::new(
            crate::vault::logon_saved(&self.core, caller, req.into_inner()).await?,
        ))
    }
}
