//! Is the KDC that accepted the password the realm's real KDC? Anyone who can answer on the
//! KDC's address can accept any password (KDC spoofing, the problem of every PAM Kerberos module).
//! With a host keytab, the module asks the enclave for a ticket to the host's own service
//! (`host/<fqdn>`) and checks the AP-REQ with the keytab: only a KDC that knows the host's key
//! can issue a ticket that opens with it.
//!
//! The check is MIT's `krb5_rd_req`, through a few hand-declared functions of libkrb5 (no
//! maintained Rust binding exposes `krb5_rd_req` without pulling in a large generated binding;
//! these five functions are all the module needs).

use std::ffi::{CStr, CString, c_char, c_void};
use std::path::Path;

/// Why the host keytab check failed.
#[derive(Debug, thiserror::Error)]
pub enum KdcCheckError {
    /// A name or path cannot be given to libkrb5 (an interior NUL).
    #[error("{0} contains a NUL byte")]
    BadName(&'static str),
    /// libkrb5 refused: the ticket does not open with the keytab (or the keytab cannot be read).
    #[error("{what}: {message}")]
    Krb5 {
        /// The step.
        what: &'static str,
        /// libkrb5's message.
        message: String,
    },
}

type Krb5Context = *mut c_void;
type Krb5Keytab = *mut c_void;
type Krb5Principal = *mut c_void;
type Krb5AuthContext = *mut c_void;
type Krb5Ticket = *mut c_void;

/// `krb5_data`, as libkrb5 declares it.
#[repr(C)]
struct Krb5Data {
    magic: i32,
    length: u32,
    data: *mut c_char,
}

#[link(name = "krb5")]
unsafe extern "C" {
    fn krb5_init_context(context: *mut Krb5Context) -> i32;
    fn krb5_free_context(context: Krb5Context);
    fn krb5_kt_resolve(context: Krb5Context, name: *const c_char, keytab: *mut Krb5Keytab) -> i32;
    fn krb5_kt_close(context: Krb5Context, keytab: Krb5Keytab) -> i32;
    fn krb5_parse_name(context: Krb5Context, name: *const c_char, principal: *mut Krb5Principal) -> i32;
    fn krb5_free_principal(context: Krb5Context, principal: Krb5Principal);
    fn krb5_rd_req(
        context: Krb5Context,
        auth_context: *mut Krb5AuthContext,
        inbuf: *const Krb5Data,
        server: Krb5Principal,
        keytab: Krb5Keytab,
        ap_req_options: *mut i32,
        ticket: *mut Krb5Ticket,
    ) -> i32;
    fn krb5_auth_con_free(context: Krb5Context, auth_context: Krb5AuthContext) -> i32;
    fn krb5_free_ticket(context: Krb5Context, ticket: Krb5Ticket);
    fn krb5_get_error_message(context: Krb5Context, code: i32) -> *const c_char;
    fn krb5_free_error_message(context: Krb5Context, message: *const c_char);
}

/// A libkrb5 context, freed on drop with everything made in it.
struct Context {
    ctx: Krb5Context,
    keytab: Krb5Keytab,
    server: Krb5Principal,
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: each handle was made by this context (or is null, and then not freed); none is
        // used after this.
        unsafe {
            if !self.server.is_null() {
                krb5_free_principal(self.ctx, self.server);
            }
            if !self.keytab.is_null() {
                krb5_kt_close(self.ctx, self.keytab);
            }
            krb5_free_context(self.ctx);
        }
    }
}

impl Context {
    fn error(&self, what: &'static str, code: i32) -> KdcCheckError {
        // SAFETY: the context is live; the message is a NUL-terminated string libkrb5 owns until
        // krb5_free_error_message.
        let message = unsafe {
            let m = krb5_get_error_message(self.ctx, code);
            if m.is_null() {
                format!("error {code}")
            } else {
                let text = CStr::from_ptr(m).to_string_lossy().into_owned();
                krb5_free_error_message(self.ctx, m);
                text
            }
        };
        KdcCheckError::Krb5 { what, message }
    }
}

/// Checks `ap_req` (from the enclave's ticket to `server`, e.g. `host/web.example.test@REALM`)
/// with the keytab at `keytab`: Ok if it opens, that is if the KDC that issued it knows the key.
pub fn verify_ap_req(keytab: &Path, server: &str, ap_req: &[u8]) -> Result<(), KdcCheckError> {
    let kt_name = CString::new(format!("FILE:{}", keytab.display())).map_err(|_| KdcCheckError::BadName("keytab"))?;
    let server_name = CString::new(server).map_err(|_| KdcCheckError::BadName("server"))?;
    let length = u32::try_from(ap_req.len()).map_err(|_| KdcCheckError::BadName("AP-REQ"))?;
    let mut ctx: Krb5Context = std::ptr::null_mut();
    // SAFETY: krb5_init_context writes a new context to `ctx`.
    let code = unsafe { krb5_init_context(&mut ctx) };
    if code != 0 {
        return Err(KdcCheckError::Krb5 {
            what: "krb5_init_context",
            message: format!("error {code}"),
        });
    }
    let mut c = Context {
        ctx,
        keytab: std::ptr::null_mut(),
        server: std::ptr::null_mut(),
    };
    // SAFETY: a live context, a NUL-terminated name, an out pointer to a handle of ours.
    let code = unsafe { krb5_kt_resolve(c.ctx, kt_name.as_ptr(), &mut c.keytab) };
    if code != 0 {
        return Err(c.error("reading the keytab", code));
    }
    // SAFETY: as above.
    let code = unsafe { krb5_parse_name(c.ctx, server_name.as_ptr(), &mut c.server) };
    if code != 0 {
        return Err(c.error("the host principal", code));
    }
    let inbuf = Krb5Data {
        magic: 0,
        length,
        // libkrb5 only reads the request.
        data: ap_req.as_ptr() as *mut c_char,
    };
    let mut auth_context: Krb5AuthContext = std::ptr::null_mut();
    let mut ticket: Krb5Ticket = std::ptr::null_mut();
    // SAFETY: live handles of this context; `inbuf` points at `ap_req` for `length` bytes, which
    // outlives the call; the out pointers are ours and freed below.
    let code = unsafe {
        krb5_rd_req(
            c.ctx,
            &mut auth_context,
            &inbuf,
            c.server,
            c.keytab,
            std::ptr::null_mut(),
            &mut ticket,
        )
    };
    // SAFETY: handles libkrb5 made in this call (or null, then not freed).
    unsafe {
        if !ticket.is_null() {
            krb5_free_ticket(c.ctx, ticket);
        }
        if !auth_context.is_null() {
            krb5_auth_con_free(c.ctx, auth_context);
        }
    }
    if code != 0 {
        return Err(c.error("the KDC's ticket does not open with the host keytab", code));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_with_libkrb5s_reason() {
        let dir = std::env::temp_dir().join(format!("pam-kdc-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = verify_ap_req(
            &dir.join("none.keytab"),
            "host/x.example.test@EXAMPLE.TEST",
            b"\x6e\x00",
        )
        .unwrap_err();
        assert!(matches!(e, KdcCheckError::Krb5 { .. }), "{e}");
        assert!(matches!(
            verify_ap_req(&dir.join("k"), "a\0b", b""),
            Err(KdcCheckError::BadName("server"))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
