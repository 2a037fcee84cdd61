//! `pam_credguard.so`: logging on through PAM, the way Windows hands the logon password to LSA.
//!
//! - `auth` ([`pam_sm_authenticate`]): takes the password (from an earlier module with
//!   `use_first_pass`/`try_first_pass`, else asks), seals it to the attested enclave exactly as
//!   `credguardctl logon` does, logs the PAM user on for their uid (root acting for the uid with
//!   `credguard-on-behalf-of-uid`), and gets the TGT, so the KDC judges the password.
//! - `session` ([`pam_sm_open_session`], [`pam_sm_close_session`]): makes that logon the uid's
//!   default session (served by credguard-kcm), sets `KRB5CCNAME=KCM:`, and logs it off when the
//!   last PAM session using it closes (counted in [`refcount`]).
//! - `account` ([`pam_sm_acct_mgmt`]): PAM_NEW_AUTHTOK_REQD when `auth` found the password
//!   expired (and proved it right with a `kadmin/changepw` ticket); nothing to say otherwise.
//! - `password` ([`pam_sm_chauthtok`]): changes the Kerberos password through the enclave
//!   (RFC 3244, kpasswd): the expired password of `auth`'s session, or (`passwd`) the current
//!   password the user gives, which a session of its own holds for the change.
//!
//! Every entry point catches panics (none may unwind into libpam) and maps every failure to a PAM
//! code. The password lives in this module only until it is sealed, in memory wiped on drop; it
//! is never logged.
#![deny(missing_docs)]

pub mod ffi;
pub mod kdc_check;
pub mod logon;
pub mod options;
pub mod refcount;

use std::ffi::{CStr, c_char, c_int};

use ffi::{Handle, PamHandleRaw, code, flag};
use logon::{Authenticated, ChangeError, ChangeFrom, LogonError};
use options::{FirstPass, Options};
use refcount::Released;

/// The name of the logon this handle's `auth` made, for the session stage.
const LOGON_DATA: &CStr = c"pam_credguard.logon";

/// The environment that points Kerberos programs at credguard-kcm.
const KCM_CCACHE_ENV: &str = "KRB5CCNAME=KCM:";

/// What `auth` leaves for `open_session`/`close_session` in the PAM handle.
#[derive(Clone)]
struct LogonData {
    session_id: String,
    uid: u32,
    /// The KDC said the password has expired: `acct_mgmt` asks for a change.
    expired: bool,
}

/// Runs one stage with the handle and the parsed options, catching any panic.
///
/// # Safety
/// As for the `pam_sm_*` functions: libpam's handle and arguments.
unsafe fn entry(
    pamh: *mut PamHandleRaw,
    argc: c_int,
    argv: *const *const c_char,
    flags: c_int,
    stage: fn(&Handle, &Options, c_int) -> c_int,
) -> c_int {
    let run = std::panic::AssertUnwindSafe(|| {
        // SAFETY: the handle libpam passed to this call, used only during it.
        let Some(h) = (unsafe { Handle::from_raw(pamh) }) else {
            return code::SERVICE_ERR;
        };
        // SAFETY: libpam's argc/argv.
        let opts = Options::parse(&unsafe { ffi::args(argc, argv) });
        for arg in &opts.unknown {
            h.syslog(libc::LOG_WARNING, &format!("unknown option {arg:?} ignored"));
        }
        stage(&h, &opts, flags)
    });
    std::panic::catch_unwind(run).unwrap_or(code::SERVICE_ERR)
}

/// `auth`: seals the password to the enclave, logs on for the user's uid, checks it with the KDC.
///
/// # Safety
/// Called by libpam with its handle and the module's arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_authenticate(
    pamh: *mut PamHandleRaw,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: passed through from libpam.
    unsafe { entry(pamh, argc, argv, flags, authenticate) }
}

/// `auth`'s credential step: nothing to do (the credentials are in the enclave already; the
/// session stage makes them the default).
///
/// # Safety
/// Called by libpam with its handle and the module's arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_setcred(
    _pamh: *mut PamHandleRaw,
    _flags: c_int,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    code::SUCCESS
}

/// `session` open: the logon made at `auth` becomes the uid's default; `KRB5CCNAME=KCM:`.
///
/// # Safety
/// Called by libpam with its handle and the module's arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_open_session(
    pamh: *mut PamHandleRaw,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: passed through from libpam.
    unsafe { entry(pamh, argc, argv, flags, open_session) }
}

/// `session` close: logs the logon off when this was its last PAM session.
///
/// # Safety
/// Called by libpam with its handle and the module's arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_close_session(
    pamh: *mut PamHandleRaw,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: passed through from libpam.
    unsafe { entry(pamh, argc, argv, flags, close_session) }
}

/// `account`: PAM_NEW_AUTHTOK_REQD after an `auth` that found the password expired.
///
/// # Safety
/// Called by libpam with its handle and the module's arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_acct_mgmt(
    pamh: *mut PamHandleRaw,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: passed through from libpam.
    unsafe { entry(pamh, argc, argv, flags, account) }
}

/// `password`: changes the Kerberos password through the enclave.
///
/// # Safety
/// Called by libpam with its handle and the module's arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_chauthtok(
    pamh: *mut PamHandleRaw,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: passed through from libpam.
    unsafe { entry(pamh, argc, argv, flags, chauthtok) }
}

fn debug(h: &Handle, opts: &Options, message: &str) {
    if opts.debug {
        h.syslog(libc::LOG_DEBUG, message);
    }
}

fn authenticate(h: &Handle, opts: &Options, _flags: c_int) -> c_int {
    let user = match h.user() {
        Ok(u) => u,
        Err(rc) => return rc,
    };
    let Some(uid) = uid_of(&user) else {
        h.syslog(libc::LOG_NOTICE, &format!("no passwd entry for {user:?}"));
        return code::USER_UNKNOWN;
    };
    let password = match password(h, opts) {
        Ok(p) => p,
        Err(rc) => return rc,
    };
    if password.is_empty() {
        debug(h, opts, "empty password refused");
        return code::AUTH_ERR;
    }
    debug(h, opts, &format!("sealing {user}'s password for uid {uid}"));
    match logon::block_on(logon::authenticate(opts, &user, uid, password)) {
        Ok(done) => logged_on(h, opts, &user, uid, done),
        Err(e) => auth_failed(h, &user, e),
    }
}

/// The password: the stack's (`PAM_AUTHTOK`) when the options say so, else asked for (and then
/// left in `PAM_AUTHTOK` for the modules after this one).
fn password(h: &Handle, opts: &Options) -> Result<zeroize::Zeroizing<String>, c_int> {
    if opts.first_pass != FirstPass::Ask {
        if let Some(p) = h.authtok() {
            return Ok(p);
        }
        if opts.first_pass == FirstPass::Use {
            h.syslog(libc::LOG_NOTICE, "use_first_pass: no password from an earlier module");
            return Err(code::AUTH_ERR);
        }
    }
    let p = h.prompt_secret("Password: ")?;
    if let Err(rc) = h.set_authtok(&p) {
        debug(h, opts, &format!("PAM_AUTHTOK not set (code {rc})"));
    }
    Ok(p)
}

fn logged_on(h: &Handle, opts: &Options, user: &str, uid: u32, done: Authenticated) -> c_int {
    let mut expired = false;
    let (session_id, rc) = match done {
        Authenticated::Expired { session_id } => {
            h.syslog(
                libc::LOG_NOTICE,
                &format!("{user} (uid {uid}): the password is right but has expired: it must be changed"),
            );
            expired = true;
            (session_id, code::SUCCESS)
        }
        Authenticated::Kerberos { session_id, principal } => {
            h.syslog(
                libc::LOG_INFO,
                &format!("{user} (uid {uid}) logged on to credguard as {principal}"),
            );
            (session_id, code::SUCCESS)
        }
        Authenticated::Unchecked { session_id, reason } if !opts.realm.is_empty() => {
            h.syslog(
                libc::LOG_WARNING,
                &format!("{user} (uid {uid}) logged on to credguard for NTLM only, password unchecked ({reason})"),
            );
            (session_id, code::SUCCESS)
        }
        Authenticated::Unchecked { session_id, reason } => {
            // Nothing judged the password: the session is kept (for NTLM), the verdict is left
            // to the other modules.
            h.syslog(
                libc::LOG_NOTICE,
                &format!("{user} (uid {uid}) logged on to credguard for NTLM only ({reason})"),
            );
            (session_id, code::IGNORE)
        }
    };
    if let Err(e) = h.set_data(
        LOGON_DATA,
        LogonData {
            session_id,
            uid,
            expired,
        },
    ) {
        h.syslog(
            libc::LOG_ERR,
            &format!("cannot keep the session for the session stage (code {e})"),
        );
    }
    rc
}

fn auth_failed(h: &Handle, user: &str, e: LogonError) -> c_int {
    use tonic::Code;
    let rc = match &e {
        LogonError::WrongPassword | LogonError::KdcNotVerified(_) | LogonError::AccountRefused(_) => code::AUTH_ERR,
        LogonError::UnknownPrincipal(_) => code::USER_UNKNOWN,
        LogonError::Unavailable(_) | LogonError::Untrusted(_) | LogonError::KdcUnreachable(_) => code::AUTHINFO_UNAVAIL,
        LogonError::Refused {
            code: Code::PermissionDenied | Code::Internal | Code::Unknown | Code::ResourceExhausted,
            ..
        } => code::AUTHINFO_UNAVAIL,
        LogonError::Refused { .. } => code::AUTH_ERR,
    };
    if rc == code::AUTHINFO_UNAVAIL {
        h.syslog(
            libc::LOG_ERR,
            &format!(
                "{user}: credguard did not take the password: {e}; the login goes on through the other modules of the stack"
            ),
        );
    } else {
        h.syslog(libc::LOG_NOTICE, &format!("{user}: authentication failed: {e}"));
        if let LogonError::AccountRefused(why) = &e {
            // Disabled, locked out...: the user should know it is not the password.
            h.error_message(why);
        }
    }
    rc
}

fn account(h: &Handle, opts: &Options, _flags: c_int) -> c_int {
    match h.get_data::<LogonData>(LOGON_DATA) {
        Some(logon) if logon.expired => {
            h.error_message("Your password has expired. You must change it now.");
            code::NEW_AUTHTOK_REQD
        }
        Some(_) => code::SUCCESS,
        None => {
            debug(
                h,
                opts,
                "no credguard logon in this PAM handle: nothing to say of the account",
            );
            code::IGNORE
        }
    }
}

fn chauthtok(h: &Handle, opts: &Options, flags: c_int) -> c_int {
    if opts.realm.is_empty() {
        debug(h, opts, "no realm= given: no Kerberos password to change");
        return code::IGNORE;
    }
    let logon = h.get_data::<LogonData>(LOGON_DATA);
    let expired = logon.as_ref().filter(|l| l.expired);
    if flags & flag::CHANGE_EXPIRED_AUTHTOK != 0 && expired.is_none() {
        debug(h, opts, "only expired passwords are to be changed, and this one is not");
        return code::IGNORE;
    }
    if flags & flag::PRELIM_CHECK != 0 {
        return code::SUCCESS;
    }
    if flags & flag::UPDATE_AUTHTOK == 0 {
        return code::SERVICE_ERR;
    }
    let user = match h.user() {
        Ok(u) => u,
        Err(rc) => return rc,
    };
    let Some(uid) = uid_of(&user) else {
        return code::USER_UNKNOWN;
    };
    let from = match expired {
        Some(l) => ChangeFrom::Expired(l.session_id.clone()),
        None => match current_password(h, opts) {
            Ok(p) => ChangeFrom::Current(p),
            Err(rc) => return rc,
        },
    };
    let new_password = match new_password(h, opts) {
        Ok(p) => p,
        Err(rc) => return rc,
    };
    match logon::block_on(logon::change_password(opts, &user, uid, from, new_password)) {
        Ok(()) => password_changed(h, &user, uid, logon),
        Err(e) => change_failed(h, &user, e),
    }
}

/// The current password for a change that has no expired session: from an earlier module
/// (`PAM_OLDAUTHTOK`) when the options say so, else asked for.
fn current_password(h: &Handle, opts: &Options) -> Result<zeroize::Zeroizing<String>, c_int> {
    if opts.first_pass != FirstPass::Ask {
        if let Some(p) = h.old_authtok() {
            return Ok(p);
        }
        if opts.first_pass == FirstPass::Use {
            h.syslog(
                libc::LOG_NOTICE,
                "use_first_pass: no current password from an earlier module",
            );
            return Err(code::AUTHTOK_RECOVERY_ERR);
        }
    }
    let p = h.prompt_secret("Current password: ")?;
    if let Err(rc) = h.set_old_authtok(&p) {
        debug(h, opts, &format!("PAM_OLDAUTHTOK not set (code {rc})"));
    }
    Ok(p)
}

/// The new password: from an earlier module with `use_authtok`, else asked for twice (and left
/// in `PAM_AUTHTOK` for the modules after this one).
fn new_password(h: &Handle, opts: &Options) -> Result<zeroize::Zeroizing<String>, c_int> {
    if opts.use_authtok {
        return match h.authtok() {
            Some(p) if !p.is_empty() => Ok(p),
            _ => {
                h.syslog(libc::LOG_NOTICE, "use_authtok: no new password from an earlier module");
                Err(code::AUTHTOK_ERR)
            }
        };
    }
    let first = h.prompt_secret("New password: ")?;
    let again = h.prompt_secret("Retype new password: ")?;
    if first.is_empty() || *first != *again {
        h.error_message("The passwords do not match (or are empty): the password is unchanged.");
        return Err(code::AUTHTOK_ERR);
    }
    if let Err(rc) = h.set_authtok(&first) {
        debug(h, opts, &format!("PAM_AUTHTOK not set (code {rc})"));
    }
    Ok(first)
}

fn password_changed(h: &Handle, user: &str, uid: u32, logon: Option<LogonData>) -> c_int {
    h.syslog(
        libc::LOG_INFO,
        &format!("{user} (uid {uid}): Kerberos password changed through credguard"),
    );
    if let Some(l) = logon.filter(|l| l.expired) {
        let renewed = LogonData { expired: false, ..l };
        if let Err(e) = h.set_data(LOGON_DATA, renewed) {
            h.syslog(libc::LOG_ERR, &format!("cannot keep the renewed session (code {e})"));
        }
    }
    code::SUCCESS
}

fn change_failed(h: &Handle, user: &str, e: ChangeError) -> c_int {
    h.syslog(libc::LOG_NOTICE, &format!("{user}: password change failed: {e}"));
    h.error_message(&format!("Password change failed: {e}"));
    match e {
        ChangeError::WrongPassword => code::AUTHTOK_RECOVERY_ERR,
        ChangeError::Failed(LogonError::Unavailable(_)) => code::TRY_AGAIN,
        ChangeError::Failed(_) => code::AUTHTOK_ERR,
    }
}

fn open_session(h: &Handle, opts: &Options, _flags: c_int) -> c_int {
    let Some(logon) = h.get_data::<LogonData>(LOGON_DATA) else {
        debug(h, opts, "no credguard logon in this PAM handle: nothing to open");
        return code::IGNORE;
    };
    if logon.expired {
        h.syslog(
            libc::LOG_ERR,
            &format!(
                "uid {}: the password has expired and was not changed: no session",
                logon.uid
            ),
        );
        return code::SESSION_ERR;
    }
    if let Err(e) = refcount::acquire(&opts.state_dir, &logon.session_id) {
        h.syslog(
            libc::LOG_ERR,
            &format!("cannot count the session (it will not be logged off at close): {e}"),
        );
        return code::SESSION_ERR;
    }
    if let Err(e) = logon::block_on(logon::make_default(opts, logon.uid, &logon.session_id)) {
        h.syslog(
            libc::LOG_ERR,
            &format!("cannot make the credguard logon uid {}'s default: {e}", logon.uid),
        );
        return code::SESSION_ERR;
    }
    if let Err(rc) = h.putenv(KCM_CCACHE_ENV) {
        h.syslog(libc::LOG_ERR, &format!("cannot set {KCM_CCACHE_ENV} (code {rc})"));
        return code::SESSION_ERR;
    }
    debug(h, opts, &format!("uid {}'s default session is set", logon.uid));
    code::SUCCESS
}

fn close_session(h: &Handle, opts: &Options, _flags: c_int) -> c_int {
    let Some(logon) = h.get_data::<LogonData>(LOGON_DATA) else {
        debug(h, opts, "no credguard logon in this PAM handle: nothing to close");
        return code::IGNORE;
    };
    match refcount::release(&opts.state_dir, &logon.session_id) {
        Ok(Released::Last) => {}
        Ok(Released::StillUsed(n)) => {
            debug(h, opts, &format!("{n} other PAM session(s) still use the logon"));
            return code::SUCCESS;
        }
        Ok(Released::NotHeld) => {
            debug(h, opts, "the logon was not counted as open: left as it is");
            return code::SUCCESS;
        }
        Err(e) => {
            h.syslog(libc::LOG_ERR, &format!("cannot count the session down: {e}"));
            return code::SESSION_ERR;
        }
    }
    match logon::block_on(logon::logoff(opts, logon.uid, &logon.session_id)) {
        Ok(()) => {
            h.syslog(
                libc::LOG_INFO,
                &format!("uid {}: last PAM session closed, credguard logon ended", logon.uid),
            );
            code::SUCCESS
        }
        Err(e) => {
            h.syslog(libc::LOG_ERR, &format!("cannot log the credguard logon off: {e}"));
            code::SESSION_ERR
        }
    }
}

/// The uid of `user`'s passwd entry (NSS: files, sssd, ...).
fn uid_of(user: &str) -> Option<u32> {
    let name = std::ffi::CString::new(user).ok()?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: passwd is plain data; getpwnam_r fills it in.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: a NUL-terminated name, a passwd to fill, a buffer of `buf.len()` bytes for its
        // strings, and an out pointer, as getpwnam_r(3) takes them.
        let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut found) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        return (rc == 0 && !found.is_null()).then_some(pwd.pw_uid);
    }
}
