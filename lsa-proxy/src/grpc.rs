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

/// The metadata a trusted service (the KCM daemon) sends to call as another uid.
pub const ON_BEHALF_OF_UID: &str = "credguard-on-behalf-of-uid";

fn begin<T: Message>(core: &LsaCore, req: &Request<T>) -> Result<Caller, Status> {
    let caller = acting_caller(&core.config().kcm, caller_of(req)?, req.metadata())?;
    core.check_size(req.get_ref().encoded_len())?;
    Ok(caller)
}

/// Who the call is for: the peer itself, or the uid it names in [`ON_BEHALF_OF_UID`] when the
/// peer is root or one of `[kcm] trusted_uids` (anyone else naming a uid is refused, never
/// silently served as itself).
fn acting_caller(
    kcm: &crate::config::KcmConfig,
    peer: Caller,
    metadata: &tonic::metadata::MetadataMap,
) -> Result<Caller, LsaError> {
    let Some(value) = metadata.get(ON_BEHALF_OF_UID) else {
        return Ok(peer);
    };
    let trusted = match peer {
        Caller::Uid(uid) => uid == 0 || kcm.trusted_uids.contains(&uid),
        Caller::VsockCid(_) => false,
    };
    if !trusted {
        return Err(LsaError::PermissionDenied(format!(
            "{peer} may not act for another uid ({ON_BEHALF_OF_UID} is for the KCM daemon; see [kcm] trusted_uids)"
        )));
    }
    let uid = value
        .to_str()
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| LsaError::InvalidArgument(format!("{ON_BEHALF_OF_UID} must be a decimal uid")))?;
    tracing::debug!(%peer, uid, "acting for another uid");
    Ok(Caller::Uid(uid))
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

    async fn kerberos_verify_ap_rep(
        &self,
        req: Request<lsa::KerberosVerifyApRepRequest>,
    ) -> Result<Response<lsa::KerberosVerifyApRepReply>, Status> {
        let caller = begin(&self.core, &req)?;
        Ok(Response::new(
            crate::kerberos::verify_ap_rep(&self.core, caller, req.into_inner()).await?,
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

    async fn set_default_session(
        &self,
        req: Request<lsa::SetDefaultSessionRequest>,
    ) -> Result<Response<lsa::SetDefaultSessionReply>, Status> {
        let caller = begin(&self.core, &req)?;
        self.core.set_default_session(caller, &req.get_ref().session_id)?;
        Ok(Response::new(lsa::SetDefaultSessionReply {}))
    }

    async fn change_password(
        &self,
        req: Request<lsa::ChangePasswordRequest>,
    ) -> Result<Response<lsa::ChangePasswordReply>, Status> {
        let caller = begin(&self.core, &req)?;
        Ok(Response::new(
            crate::kerberos::change_password(&self.core, caller, req.into_inner()).await?,
        ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KcmConfig;
    use tonic::metadata::MetadataMap;

    fn naming(uid: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert(ON_BEHALF_OF_UID, uid.parse().unwrap());
        m
    }

    #[test]
    fn only_root_and_trusted_uids_may_act_for_another_uid() {
        let kcm = KcmConfig {
            trusted_uids: vec![990],
        };
        let plain = MetadataMap::new();
        assert_eq!(
            acting_caller(&kcm, Caller::Uid(1000), &plain).unwrap(),
            Caller::Uid(1000)
        );
        assert_eq!(
            acting_caller(&kcm, Caller::Uid(990), &naming("1000")).unwrap(),
            Caller::Uid(1000)
        );
        assert_eq!(
            acting_caller(&kcm, Caller::Uid(0), &naming("1001")).unwrap(),
            Caller::Uid(1001)
        );
        for peer in [Caller::Uid(1000), Caller::VsockCid(5)] {
            assert!(matches!(
                acting_caller(&kcm, peer, &naming("0")),
                Err(LsaError::PermissionDenied(_))
            ));
        }
        for bad in ["-1", "x", "4294967296", ""] {
            assert!(matches!(
                acting_caller(&kcm, Caller::Uid(990), &naming(bad)),
                Err(LsaError::InvalidArgument(_))
            ));
        }
    }
}
