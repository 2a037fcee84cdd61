//! A small FFI layer over Linux-PAM's module API (`<security/pam_modules.h>`,
//! `<security/pam_ext.h>`), linked with `-lpam`.
//!
//! Our own rather than a crate's: the PAM crates on crates.io are either unmaintained
//! (`pam-sys`/`pam-bindings` have not followed Linux-PAM in years) or client-side only (`pam`,
//! `pam-client` call `pam_start`, not the module API), and the handful of calls a module needs
//! is smaller than any of them. Only what this module calls is declared; [`Handle`] wraps it so
//! the rest of the crate has no `unsafe`.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ptr;

use zeroize::Zeroizing;

/// libpam's opaque handle.
#[repr(C)]
pub struct PamHandleRaw {
    _private: [u8; 0],
}

/// Return codes (`<security/_pam_types.h>`) the module uses.
pub mod code {
    use std::ffi::c_int;
    /// Success.
    pub const SUCCESS: c_int = 0;
    /// The module's own failure (a panic caught, a broken invariant).
    pub const SERVICE_ERR: c_int = 3;
    /// A system failure (memory, the file system).
    pub const SYSTEM_ERR: c_int = 4;
    /// Memory.
    pub const BUF_ERR: c_int = 5;
    /// The credential is wrong.
    pub const AUTH_ERR: c_int = 7;
    /// The authentication service cannot be reached.
    pub const AUTHINFO_UNAVAIL: c_int = 9;
    /// No such user.
    pub const USER_UNKNOWN: c_int = 10;
    /// The password has expired: change it (`acct_mgmt`).
    pub const NEW_AUTHTOK_REQD: c_int = 12;
    /// A session could not be opened or closed.
    pub const SESSION_ERR: c_int = 14;
    /// No data under that name.
    pub const NO_MODULE_DATA: c_int = 18;
    /// The conversation failed.
    pub const CONV_ERR: c_int = 19;
    /// The password could not be changed.
    pub const AUTHTOK_ERR: c_int = 20;
    /// The current password (needed for the change) is wrong.
    pub const AUTHTOK_RECOVERY_ERR: c_int = 21;
    /// The service cannot do it now (`chauthtok`'s preliminary check).
    pub const TRY_AGAIN: c_int = 24;
    /// This module has nothing to say about it.
    pub const IGNORE: c_int = 25;
}

/// Flags libpam passes to the module (`<security/_pam_types.h>`).
pub mod flag {
    use std::ffi::c_int;
    /// `chauthtok`: change only an expired password.
    pub const CHANGE_EXPIRED_AUTHTOK: c_int = 0x0020;
    /// `chauthtok`'s second pass: change the password.
    pub const UPDATE_AUTHTOK: c_int = 0x2000;
    /// `chauthtok`'s first pass: check the change can be made.
    pub const PRELIM_CHECK: c_int = 0x4000;
}

// Item types (`pam_get_item`).
const PAM_USER: c_int = 2;
const PAM_CONV: c_int = 5;
const PAM_AUTHTOK: c_int = 6;
const PAM_OLDAUTHTOK: c_int = 7;
// Message styles (`struct pam_message`).
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_ERROR_MSG: c_int = 3;
const PAM_TEXT_INFO: c_int = 4;

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn = unsafe extern "C" fn(c_int, *mut *const PamMessage, *mut *mut PamResponse, *mut c_void) -> c_int;

#[repr(C)]
struct PamConv {
    conv: Option<ConvFn>,
    appdata_ptr: *mut c_void,
}

type CleanupFn = unsafe extern "C" fn(*mut PamHandleRaw, *mut c_void, c_int);

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_get_item(pamh: *const PamHandleRaw, item_type: c_int, item: *mut *const c_void) -> c_int;
    fn pam_set_item(pamh: *mut PamHandleRaw, item_type: c_int, item: *const c_void) -> c_int;
    fn pam_get_user(pamh: *mut PamHandleRaw, user: *mut *const c_char, prompt: *const c_char) -> c_int;
    fn pam_putenv(pamh: *mut PamHandleRaw, name_value: *const c_char) -> c_int;
    fn pam_set_data(
        pamh: *mut PamHandleRaw,
        module_data_name: *const c_char,
        data: *mut c_void,
        cleanup: Option<CleanupFn>,
    ) -> c_int;
    fn pam_get_data(pamh: *const PamHandleRaw, module_data_name: *const c_char, data: *mut *const c_void) -> c_int;
    fn pam_syslog(pamh: *const PamHandleRaw, priority: c_int, fmt: *const c_char, ...);
}

/// The handle libpam passed to one `pam_sm_*` call (borrowed for that call).
pub struct Handle {
    raw: *mut PamHandleRaw,
}

impl Handle {
    /// Wraps `raw`; `None` if it is null.
    ///
    /// # Safety
    /// `raw` must be the handle libpam passed to the `pam_sm_*` function being run, and the
    /// `Handle` must not outlive that call.
    pub unsafe fn from_raw(raw: *mut PamHandleRaw) -> Option<Handle> {
        (!raw.is_null()).then_some(Handle { raw })
    }

    /// The PAM user (`pam_get_user`: asks for it if the application did not set it).
    pub fn user(&self) -> Result<String, c_int> {
        let mut user: *const c_char = ptr::null();
        // SAFETY: `self.raw` is a live handle (see `from_raw`); `user` is a valid out pointer and
        // a null prompt asks libpam for its default one.
        let rc = unsafe { pam_get_user(self.raw, &mut user, ptr::null()) };
        if rc != code::SUCCESS {
            return Err(rc);
        }
        if user.is_null() {
            return Err(code::SERVICE_ERR);
        }
        // SAFETY: libpam returned a NUL-terminated string it owns, valid until PAM_USER changes;
        // it is copied before this returns.
        let user = unsafe { CStr::from_ptr(user) };
        user.to_str().map(str::to_owned).map_err(|_| code::USER_UNKNOWN)
    }

    /// The user name as the application set it (`PAM_USER`), without asking.
    pub fn user_item(&self) -> Option<String> {
        // SAFETY: PAM_USER is a NUL-terminated string item (or null).
        unsafe { self.string_item(PAM_USER) }.map(|s| s.to_owned())
    }

    /// `PAM_AUTHTOK`, the password an earlier module of the stack got (copied, wiped on drop).
    pub fn authtok(&self) -> Option<Zeroizing<String>> {
        // SAFETY: PAM_AUTHTOK is a NUL-terminated string item (or null).
        unsafe { self.string_item(PAM_AUTHTOK) }.map(|s| Zeroizing::new(s.to_owned()))
    }

    /// `PAM_OLDAUTHTOK`, the current password an earlier module of the `password` stack got.
    pub fn old_authtok(&self) -> Option<Zeroizing<String>> {
        // SAFETY: PAM_OLDAUTHTOK is a NUL-terminated string item (or null).
        unsafe { self.string_item(PAM_OLDAUTHTOK) }.map(|s| Zeroizing::new(s.to_owned()))
    }

    /// Sets `PAM_AUTHTOK`, so the modules after this one (`pam_unix try_first_pass`) need not ask
    /// again. libpam overwrites and unsets it when `pam_authenticate` or `pam_chauthtok` returns.
    pub fn set_authtok(&self, password: &str) -> Result<(), c_int> {
        self.set_secret_item(PAM_AUTHTOK, password)
    }

    /// Sets `PAM_OLDAUTHTOK` (the current password, at `chauthtok`).
    pub fn set_old_authtok(&self, password: &str) -> Result<(), c_int> {
        self.set_secret_item(PAM_OLDAUTHTOK, password)
    }

    fn set_secret_item(&self, item_type: c_int, value: &str) -> Result<(), c_int> {
        let c = Zeroizing::new(CString::new(value).map_err(|_| code::AUTH_ERR)?.into_bytes_with_nul());
        // SAFETY: `c` is NUL-terminated and outlives the call; libpam copies it.
        let rc = unsafe { pam_set_item(self.raw, item_type, c.as_ptr().cast()) };
        if rc == code::SUCCESS { Ok(()) } else { Err(rc) }
    }

    /// A string item, borrowed from libpam.
    ///
    /// # Safety
    /// `item_type` must be an item libpam stores as a NUL-terminated string.
    unsafe fn string_item(&self, item_type: c_int) -> Option<&str> {
        let mut item: *const c_void = ptr::null();
        // SAFETY: a live handle and a valid out pointer.
        let rc = unsafe { pam_get_item(self.raw, item_type, &mut item) };
        if rc != code::SUCCESS || item.is_null() {
            return None;
        }
        // SAFETY: by the caller's contract the item is a NUL-terminated string; libpam keeps it
        // until the item is set again, which nothing does while `self` is borrowed.
        unsafe { CStr::from_ptr(item.cast()) }.to_str().ok()
    }

    /// Asks the user for a secret (echo off) with the application's conversation function.
    pub fn prompt_secret(&self, prompt: &str) -> Result<Zeroizing<String>, c_int> {
        let reply = self.converse(PAM_PROMPT_ECHO_OFF, prompt)?;
        reply.ok_or(code::CONV_ERR)
    }

    /// Shows an error message to the user (best effort).
    pub fn error_message(&self, text: &str) {
        let _ = self.converse(PAM_ERROR_MSG, text);
    }

    /// Shows an informational message to the user (best effort).
    pub fn info_message(&self, text: &str) {
        let _ = self.converse(PAM_TEXT_INFO, text);
    }

    /// One message through the conversation function; the reply (wiped on drop) if any.
    fn converse(&self, style: c_int, text: &str) -> Result<Option<Zeroizing<String>>, c_int> {
        let text = CString::new(text).map_err(|_| code::SERVICE_ERR)?;
        let mut item: *const c_void = ptr::null();
        // SAFETY: a live handle and a valid out pointer.
        let rc = unsafe { pam_get_item(self.raw, PAM_CONV, &mut item) };
        if rc != code::SUCCESS || item.is_null() {
            return Err(code::CONV_ERR);
        }
        // SAFETY: the PAM_CONV item is the application's `struct pam_conv`, valid for the call.
        let conv = unsafe { &*item.cast::<PamConv>() };
        let Some(conv_fn) = conv.conv else {
            return Err(code::CONV_ERR);
        };
        let message = PamMessage {
            msg_style: style,
            msg: text.as_ptr(),
        };
        let mut messages = [&message as *const PamMessage];
        let mut replies: *mut PamResponse = ptr::null_mut();
        // SAFETY: one valid message (its text outlives the call), a valid out pointer, and the
        // application's own appdata, as the PAM API requires.
        let rc = unsafe { conv_fn(1, messages.as_mut_ptr(), &mut replies, conv.appdata_ptr) };
        if rc != code::SUCCESS {
            // SAFETY: on failure the application may still have allocated replies; `take_reply`
            // frees them.
            let _ = unsafe { take_reply(replies) };
            return Err(code::CONV_ERR);
        }
        // SAFETY: on success `replies` is null or the application's malloc'd array of one reply.
        Ok(unsafe { take_reply(replies) })
    }

    /// `pam_putenv("NAME=value")`.
    pub fn putenv(&self, name_value: &str) -> Result<(), c_int> {
        let c = CString::new(name_value).map_err(|_| code::SERVICE_ERR)?;
        // SAFETY: a live handle and a NUL-terminated string libpam copies.
        let rc = unsafe { pam_putenv(self.raw, c.as_ptr()) };
        if rc == code::SUCCESS { Ok(()) } else { Err(rc) }
    }

    /// Keeps `value` in the handle under `name` (`pam_set_data`) until `pam_end` or a
    /// replacement, which drop it.
    pub fn set_data<T: 'static>(&self, name: &CStr, value: T) -> Result<(), c_int> {
        let data = Box::into_raw(Box::new(value));
        // SAFETY: a live handle; `name` is NUL-terminated (libpam copies it); `data` is a leaked
        // Box that `drop_data::<T>` takes back exactly once, when libpam lets it go.
        let rc = unsafe { pam_set_data(self.raw, name.as_ptr(), data.cast(), Some(drop_data::<T>)) };
        if rc != code::SUCCESS {
            // SAFETY: libpam did not take `data`; it is still ours alone.
            drop(unsafe { Box::from_raw(data) });
            return Err(rc);
        }
        Ok(())
    }

    /// A copy of what [`Handle::set_data`] kept under `name`.
    ///
    /// `name` must be one only this module uses, always with the same `T` (libpam keeps no type).
    pub fn get_data<T: Clone + 'static>(&self, name: &CStr) -> Option<T> {
        let mut data: *const c_void = ptr::null();
        // SAFETY: a live handle, a NUL-terminated name, a valid out pointer.
        let rc = unsafe { pam_get_data(self.raw, name.as_ptr(), &mut data) };
        if rc != code::SUCCESS || data.is_null() {
            return None;
        }
        // SAFETY: under this module's names only `set_data::<T>` stores, so `data` is a live `T`
        // owned by libpam until `pam_end`; it is cloned before this returns.
        Some(unsafe { &*data.cast::<T>() }.clone())
    }

    /// Logs `message` through `pam_syslog` (the journal: "pam_credguard(SERVICE:TYPE): ...").
    pub fn syslog(&self, priority: c_int, message: &str) {
        // A message with a NUL in it is cut there rather than lost.
        let message = message.split('\0').next().unwrap_or_default();
        let Ok(c) = CString::new(message) else { return };
        // SAFETY: a live handle; a "%s" format with one NUL-terminated string argument.
        unsafe { pam_syslog(self.raw, priority, c"%s".as_ptr(), c.as_ptr()) };
    }
}

/// Takes the one reply in `replies` (the application's malloc'd array), wiping and freeing it.
///
/// # Safety
/// `replies` must be null or point to one `struct pam_response` allocated with `malloc`, whose
/// `resp` is null or a malloc'd NUL-terminated string; both are freed here.
unsafe fn take_reply(replies: *mut PamResponse) -> Option<Zeroizing<String>> {
    if replies.is_null() {
        return None;
    }
    // SAFETY: by the contract, one valid reply.
    let resp = unsafe { (*replies).resp };
    let text = if resp.is_null() {
        None
    } else {
        // SAFETY: a NUL-terminated string of the application's.
        let bytes = unsafe { CStr::from_ptr(resp) }.to_bytes();
        let len = bytes.len();
        let text = std::str::from_utf8(bytes).ok().map(|s| Zeroizing::new(s.to_owned()));
        // SAFETY: the `len` bytes just read are the application's malloc'd, writable buffer;
        // zeroize's volatile writes are not optimised away.
        zeroize::Zeroize::zeroize(unsafe { std::slice::from_raw_parts_mut(resp.cast::<u8>(), len) });
        // SAFETY: malloc'd by the application, handed to the module to free.
        unsafe { libc::free(resp.cast()) };
        text
    };
    // SAFETY: the array itself, malloc'd by the application.
    unsafe { libc::free(replies.cast()) };
    text
}

/// libpam's cleanup for [`Handle::set_data`].
unsafe extern "C" fn drop_data<T>(_pamh: *mut PamHandleRaw, data: *mut c_void, _status: c_int) {
    if !data.is_null() {
        // SAFETY: `data` is the Box that `set_data::<T>` leaked; libpam calls this once for it.
        drop(unsafe { Box::from_raw(data.cast::<T>()) });
    }
}

/// The module's arguments (`argc`, `argv` of a `pam_sm_*` call), lossily as UTF-8.
///
/// # Safety
/// `argv` must be null or point to `argc` NUL-terminated strings, as libpam passes them.
pub unsafe fn args(argc: c_int, argv: *const *const c_char) -> Vec<String> {
    if argv.is_null() || argc <= 0 {
        return Vec::new();
    }
    let argc = usize::try_from(argc).unwrap_or(0);
    (0..argc)
        .filter_map(|i| {
            // SAFETY: `i < argc`: within libpam's array.
            let arg = unsafe { *argv.add(i) };
            // SAFETY: each is null or a NUL-terminated string.
            (!arg.is_null()).then(|| unsafe { CStr::from_ptr(arg) }.to_string_lossy().into_owned())
        })
        .collect()
}
