//! What the proxy process gives up: core dumps and ptrace by other users (`PR_SET_DUMPABLE` 0,
//! `RLIMIT_CORE` 0), privilege gain (`PR_SET_NO_NEW_PRIVS`), swapping of its memory (`mlockall`),
//! and, once it serves, every system call outside an allow-list (seccomp).
//!
//! [`harden_process`] runs first thing; [`install_seccomp`] once the sockets are bound. The proxy
//! relays secrets in transit (sealed ones as ciphertext; plaintext ones in dev mode): its memory
//! must reach neither a core file, nor swap, nor another process of its user.
//!
//! The seccomp policy is three stacked filters (the kernel applies the strictest answer):
//! - an allow-list whose default is `EPERM`: a call the list misses fails with an error that the
//!   proxy reports on that call, instead of killing a production service;
//! - a kill-list: `execve`, `execveat`, `ptrace`, `process_vm_readv`, `process_vm_writev` and
//!   `pidfd_getfd` end the process (`SIGSYS`). Nothing in the proxy makes them; only code an
//!   attacker got running in it would;
//! - `clone3` answers `ENOSYS`, so that glibc falls back to `clone`, whose flags a filter can
//!   check: threads (tokio's blocking pool resolves KDC host names), never a new process.
//!
//! Arguments are checked where it matters: `mmap`/`mprotect` never writable and executable at once
//! (glibc's NSS modules still load), `socket` only `AF_UNIX`, `AF_INET`, `AF_INET6` (KDCs, DNS)
//! and `AF_VSOCK`, `ioctl` only `FIONBIO`, `FIONREAD` (glibc's resolver), `FIOCLEX` and `TCGETS`,
//! `prlimit64` only to read, `prctl` only `PR_SET_NAME` (thread names).
//!
//! The list comes from `strace -f` of the proxy through the end-to-end tests (tests/lsa_proxy.rs,
//! ntlm.rs, kerberos.rs, vault.rs, reliability.rs, isolation.rs), plus what those tests do not
//! reach: glibc's `getaddrinfo` through DNS (`strace` of it: nscd probe, `/etc/*`, `uname`,
//! `sendmmsg`, `poll`, `FIONREAD`), vault deletion, the systemd notification at stop. A KDC given
//! by host name in tests/kerberos.rs runs a blocking-pool thread and `getaddrinfo` under the filter.
//!
//! In debug builds only, `CREDGUARD_PROXY_SECCOMP_SELFTEST=execve` makes the proxy `execve`
//! `/bin/true` right after installing the filters (the process must die of `SIGSYS`), and
//! `=unlisted` makes it call `chroot` (it must get `EPERM` and keep serving), for the tests.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::Mutex;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond, SeccompFilter,
    SeccompRule,
};
use tracing::{info, warn};

/// Why seccomp could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A filter could not be built (a bug in the rules).
    #[error("building the {which} seccomp filter: {reason}")]
    Build {
        /// Which filter.
        which: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The kernel refused a filter.
    #[error("installing the {which} seccomp filter: {reason}")]
    Install {
        /// Which filter.
        which: &'static str,
        /// What went wrong.
        reason: String,
    },
}

/// Which protections are in force, for the log and `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protections {
    /// `PR_SET_DUMPABLE` 0 held.
    pub not_dumpable: bool,
    /// `RLIMIT_CORE` is 0.
    pub no_core_dump: bool,
    /// All memory is locked (`mlockall`); else why not.
    pub memory_locked: Result<(), String>,
    /// `PR_SET_NO_NEW_PRIVS` held.
    pub no_new_privileges: bool,
    /// The seccomp filters are installed; else why not.
    pub seccomp: Result<(), String>,
}

impl Default for Protections {
    fn default() -> Self {
        Protections {
            not_dumpable: false,
            no_core_dump: false,
            memory_locked: Err("not tried".into()),
            no_new_privileges: false,
            seccomp: Err("not installed yet".into()),
        }
    }
}

impl fmt::Display for Protections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = |on: bool, yes: &str, no: &str| if on { yes.to_string() } else { no.to_string() };
        let parts = [
            flag(self.not_dumpable, "dumpable off", "DUMPABLE"),
            flag(self.no_core_dump, "no core dump", "CORE DUMPS ALLOWED"),
            match &self.memory_locked {
                Ok(()) => "memory locked".into(),
                Err(why) => format!("memory NOT locked ({why})"),
            },
            flag(self.no_new_privileges, "no new privileges", "NEW PRIVILEGES ALLOWED"),
            match &self.seccomp {
                Ok(()) => "seccomp on (unlisted calls EPERM, exec and ptrace kill)".into(),
                Err(why) => format!("seccomp OFF ({why})"),
            },
        ];
        f.write_str(&parts.join(", "))
    }
}

/// What is in force in this process (see [`protections`]).
static PROTECTIONS: Mutex<Option<Protections>> = Mutex::new(None);

/// The protections in force, as one line (empty if the process never hardened itself, e.g. in
/// unit tests).
pub fn protections() -> String {
    let p = PROTECTIONS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    p.as_ref().map(ToString::to_string).unwrap_or_default()
}

fn update(f: impl FnOnce(&mut Protections)) {
    let mut p = PROTECTIONS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    f(p.get_or_insert_with(Protections::default));
}

fn prctl(option: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the options used here take one integer argument and touch no memory.
    if unsafe { libc::prctl(option, arg, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Not dumpable, no core file, no new privileges, all memory locked. Failures are warnings that
/// say what to change; the result is what holds.
pub fn harden_process() -> Protections {
    let not_dumpable = prctl(libc::PR_SET_DUMPABLE, 0)
        .inspect_err(|e| warn!(error = %e, "cannot make the process non-dumpable"))
        .is_ok();
    let no_core_dump = no_core_dump()
        .inspect_err(|e| warn!(error = %e, "cannot set RLIMIT_CORE to 0"))
        .is_ok();
    let no_new_privileges = prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
        .inspect_err(|e| warn!(error = %e, "cannot set no_new_privs"))
        .is_ok();
    let memory_locked = lock_memory().inspect_err(|why| {
        warn!("memory is not locked and may be swapped: {why}");
    });
    update(|p| {
        p.not_dumpable = not_dumpable;
        p.no_core_dump = no_core_dump;
        p.memory_locked = memory_locked;
        p.no_new_privileges = no_new_privileges;
    });
    let mut p = PROTECTIONS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    p.get_or_insert_with(Protections::default).clone()
}

/// `RLIMIT_CORE` 0, soft and hard (already so under the systemd unit's `LimitCORE=0`).
fn no_core_dump() -> io::Result<()> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into `current`, which we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut current) } == 0 && current.rlim_max == 0 {
        return Ok(());
    }
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the limit from `none`.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the process may lock memory beyond `RLIMIT_MEMLOCK` (`CAP_IPC_LOCK` in its effective
/// set, as `/proc/self/status` says).
fn can_lock_without_limit() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`: every page, present and future, stays in
/// RAM once touched. Only under an unlimited `RLIMIT_MEMLOCK` (or with `CAP_IPC_LOCK`): under a
/// finite one, `MCL_FUTURE` would make allocations fail once the proxy reaches it.
fn lock_memory() -> Result<(), String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into `limit`, which we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Err(format!("getrlimit(RLIMIT_MEMLOCK): {}", io::Error::last_os_error()));
    }
    if limit.rlim_cur != libc::RLIM_INFINITY && !can_lock_without_limit() {
        return Err(format!(
            "RLIMIT_MEMLOCK is {} KiB, not unlimited: set LimitMEMLOCK=infinity (the systemd unit does)",
            limit.rlim_cur / 1024
        ));
    }
    // SAFETY: mlockall takes flags only.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) } != 0 {
        return Err(format!(
            "mlockall: {} (RLIMIT_MEMLOCK: set LimitMEMLOCK=infinity)",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Installs the seccomp filters on every thread of the process (irreversible), records the
/// outcome for `Status`, and logs the protections in force.
pub fn install_seccomp() -> Result<(), SandboxError> {
    let result = filters().and_then(|filters| {
        for (which, program) in &filters {
            seccompiler::apply_filter_all_threads(program).map_err(|e| SandboxError::Install {
                which,
                reason: e.to_string(),
            })?;
        }
        Ok(())
    });
    update(|p| p.seccomp = result.as_ref().map(|_| ()).map_err(ToString::to_string));
    match &result {
        Ok(()) => info!(protection = %protections(), "credguard-lsa-proxy process hardened"),
        Err(e) => warn!(error = %e, protection = %protections(), "credguard-lsa-proxy runs without seccomp"),
    }
    #[cfg(debug_assertions)]
    if result.is_ok() {
        self_test();
    }
    result
}

/// The compiled filters, in the order they must be installed (the allow-list last: it does not
/// allow `seccomp` itself).
fn filters() -> Result<Vec<(&'static str, BpfProgram)>, SandboxError> {
    let arch = || {
        std::env::consts::ARCH
            .try_into()
            .map_err(|e: seccompiler::BackendError| e.to_string())
    };
    let compile = |which: &'static str, rules: Result<Rules, seccompiler::BackendError>, unlisted, listed| {
        let build = |reason: String| SandboxError::Build { which, reason };
        let rules = rules.map_err(|e| build(e.to_string()))?;
        let filter =
            SeccompFilter::new(rules, unlisted, listed, arch().map_err(build)?).map_err(|e| build(e.to_string()))?;
        let program: BpfProgram = filter
            .try_into()
            .map_err(|e: seccompiler::BackendError| build(e.to_string()))?;
        Ok((which, program))
    };
    Ok(vec![
        compile(
            "clone3",
            Ok(only(&[libc::SYS_clone3])),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
        )?,
        compile(
            "kill-list",
            Ok(only(KILLED)),
            SeccompAction::Allow,
            SeccompAction::KillProcess,
        )?,
        compile(
            "allow-list",
            allowed(),
            SeccompAction::Errno(libc::EPERM as u32),
            SeccompAction::Allow,
        )?,
    ])
}

type Rules = BTreeMap<i64, Vec<SeccompRule>>;

/// System calls that end the process.
const KILLED: &[libc::c_long] = &[
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_getfd,
];

/// System calls the proxy makes with any arguments.
const ALLOWED: &[libc::c_long] = &[
    // I/O on its sockets and files, and logging.
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_pread64,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_lseek,
    libc::SYS_fcntl,
    // tokio's event loop; glibc's resolver polls.
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_epoll_ctl,
    libc::SYS_poll,
    libc::SYS_ppoll,
    // Clients, the VMM's socket, KDCs over UDP and TCP, DNS, systemd's notification socket.
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_shutdown,
    // The vault directory, /etc/resolv.conf, /etc/hosts, nsswitch.
    libc::SYS_openat,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_getdents64,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_chmod,
    libc::SYS_fchmod,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_ftruncate,
    // Memory (mmap and mprotect: see `allowed`).
    libc::SYS_brk,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    // Threads of tokio's blocking pool, locks, time, randomness, signals, exit.
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_tgkill,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_getrandom,
    // glibc's resolver derives the default search domain from the host name.
    libc::SYS_uname,
    libc::SYS_restart_syscall,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// `ioctl` requests: non-blocking mode, bytes readable (glibc's resolver), close-on-exec, and
/// the terminal check of the logger.
const IOCTLS: &[u64] = &[libc::FIONBIO, libc::FIONREAD, libc::FIOCLEX, libc::TCGETS];

/// Socket families.
const FAMILIES: &[libc::c_int] = &[libc::AF_UNIX, libc::AF_INET, libc::AF_INET6, libc::AF_VSOCK];

fn only(syscalls: &[libc::c_long]) -> Rules {
    syscalls.iter().map(|&nr| (nr, Vec::new())).collect()
}

fn rule(conds: Vec<Cond>) -> Result<SeccompRule, seccompiler::BackendError> {
    SeccompRule::new(conds)
}

/// One rule per value: argument `arg` (a 32-bit int) equals one of `values`.
fn any_of(arg: u8, values: impl IntoIterator<Item = u64>) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    values
        .into_iter()
        .map(|v| rule(vec![Cond::new(arg, Len::Dword, Op::Eq, v)?]))
        .collect()
}

/// Writable or executable, never both: argument `arg` is the protection.
fn w_xor_x(arg: u8) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    Ok(vec![
        rule(vec![Cond::new(
            arg,
            Len::Dword,
            Op::MaskedEq(libc::PROT_EXEC as u64),
            0,
        )?])?,
        rule(vec![Cond::new(
            arg,
            Len::Dword,
            Op::MaskedEq(libc::PROT_WRITE as u64),
            0,
        )?])?,
    ])
}

fn allowed() -> Result<Rules, seccompiler::BackendError> {
    let mut r = only(ALLOWED);
    r.insert(libc::SYS_mmap, w_xor_x(2)?);
    r.insert(libc::SYS_mprotect, w_xor_x(2)?);
    r.insert(libc::SYS_socket, any_of(0, FAMILIES.iter().map(|&f| f as u64))?);
    r.insert(libc::SYS_ioctl, any_of(1, IOCTLS.iter().copied())?);
    // A thread, sharing memory: never a new process (glibc's fork passes no CLONE_THREAD).
    r.insert(
        libc::SYS_clone,
        vec![rule(vec![Cond::new(
            0,
            Len::Qword,
            Op::MaskedEq(libc::CLONE_THREAD as u64),
            libc::CLONE_THREAD as u64,
        )?])?],
    );
    // Reading a limit (a null new limit), never setting one.
    r.insert(
        libc::SYS_prlimit64,
        vec![rule(vec![Cond::new(2, Len::Qword, Op::Eq, 0)?])?],
    );
    r.insert(libc::SYS_prctl, any_of(0, [libc::PR_SET_NAME as u64])?);
    Ok(r)
}

/// Debug builds only: a forbidden call on request (see the module documentation).
#[cfg(debug_assertions)]
fn self_test() {
    match std::env::var("CREDGUARD_PROXY_SECCOMP_SELFTEST").as_deref() {
        Ok("execve") => {
            // execve itself, in this process: a child could not even be made (no fork).
            eprintln!("seccomp self-test: the proxy tries to execute /bin/true");
            let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
            // SAFETY: execv with a NUL-terminated path and a null-terminated argument vector.
            unsafe { libc::execv(c"/bin/true".as_ptr(), argv.as_ptr()) };
            eprintln!(
                "seccomp self-test: execve returned ({}): the filter does not work",
                io::Error::last_os_error()
            );
            std::process::abort();
        }
        Ok("unlisted") => {
            // SAFETY: chroot reads a NUL-terminated path; if it were allowed, the directory does
            // not exist, so nothing changes.
            let r = unsafe { libc::chroot(c"/nonexistent-credguard-selftest".as_ptr()) };
            let e = io::Error::last_os_error();
            eprintln!("seccomp self-test: chroot returned {r} ({e}); still serving");
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filter_compiles() {
        let f = filters().unwrap();
        assert_eq!(f.len(), 3);
        assert!(f.iter().all(|(_, p)| !p.is_empty()));
    }

    #[test]
    fn the_summary_names_what_is_missing() {
        let p = Protections {
            not_dumpable: true,
            no_core_dump: true,
            memory_locked: Err("RLIMIT_MEMLOCK is 8192 KiB".into()),
            no_new_privileges: true,
            seccomp: Ok(()),
        };
        let s = p.to_string();
        assert!(s.contains("dumpable off") && s.contains("seccomp on"), "{s}");
        assert!(s.contains("memory NOT locked (RLIMIT_MEMLOCK"), "{s}");
    }

    /// In a child process, so that the test harness keeps its own system calls.
    fn in_filtered_child(body: fn() -> i32) -> i32 {
        let programs = filters().unwrap();
        // SAFETY: fork in a test; the child only makes system calls and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = if prctl(libc::PR_SET_NO_NEW_PRIVS, 1).is_err()
                || programs.iter().any(|(_, p)| seccompiler::apply_filter(p).is_err())
            {
                90
            } else {
                body()
            };
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }

    #[test]
    fn unlisted_calls_fail_and_exec_kills() {
        // An unlisted call gets EPERM; a listed one works; a fork (clone without CLONE_THREAD)
        // is refused; clone3 says ENOSYS.
        let status = in_filtered_child(|| {
            // SAFETY: plain system calls; chroot to a missing directory changes nothing.
            unsafe {
                let chroot = libc::chroot(c"/nonexistent-credguard-test".as_ptr());
                if chroot != -1 || *libc::__errno_location() != libc::EPERM {
                    return 1;
                }
                if libc::getpid() <= 0 {
                    return 2;
                }
                let fork = libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0);
                if fork != -1 || *libc::__errno_location() != libc::EPERM {
                    return 3;
                }
                let clone3 = libc::syscall(libc::SYS_clone3, 0, 0);
                if clone3 != -1 || *libc::__errno_location() != libc::ENOSYS {
                    return 4;
                }
                let raw = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
                if raw != -1 || *libc::__errno_location() != libc::EPERM {
                    return 5;
                }
                let wx = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_WRITE | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if wx != libc::MAP_FAILED {
                    return 6;
                }
            }
            0
        });
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "check {} failed",
            libc::WEXITSTATUS(status)
        );

        let status = in_filtered_child(|| {
            let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
            // SAFETY: execv with a NUL-terminated path and argument vector.
            unsafe { libc::execv(c"/bin/true".as_ptr(), argv.as_ptr()) };
            7
        });
        assert!(libc::WIFSIGNALED(status), "exec did not kill: status {status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
    }
}
