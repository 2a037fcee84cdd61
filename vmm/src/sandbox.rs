//! What the VMM process gives up once the enclave is set up: core dumps and ptrace by
//! non-root users (`PR_SET_DUMPABLE = 0`), privilege gain (`PR_SET_NO_NEW_PRIVS`), and every
//! system call outside a per-thread seccomp allow-list.
//!
//! Each thread installs its own filter when its setup is done and before it touches anything
//! the guest controls ([`ThreadFilter::apply`]): the vCPU thread before its first `KVM_RUN`, the
//! vsock worker before its event loop, the doorbell thread before its loop, the signal watcher
//! before it waits, the main thread after it started all of them (filters are inherited, so the
//! main thread's must come last). A call outside the list kills the whole process (`SIGSYS`).
//!
//! Common to every list: no `open`, no `socket`/`connect`, no `ptrace`, `process_vm_*`,
//! `pidfd_getfd`, no `execve`. `mmap` is allowed for anonymous, private, non-executable memory
//! only (what the allocator needs): the VMM cannot map the `guest_memfd` again, nor any file.
//! `mremap` may not move or grow anything in guest RAM's host range, `mprotect` may not make
//! anything executable. No thread may call `sendmsg`, `recvmsg`, `sendmmsg` or `recvmmsg`, the
//! only calls that pass file descriptors between processes: the vsock worker reads and writes its
//! clients' streams with plain `recvfrom`/`sendto` without an address.
//!
//! In debug builds only, `CREDGUARD_VMM_SECCOMP_SELFTEST=<role>` (`vcpu`, `vsock`, `doorbell`,
//! `signals`, `main`) makes that thread try a forbidden call (a shared mapping) right after
//! installing its filter, for the test that checks the process dies of `SIGSYS`.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond, SeccompFilter,
    SeccompRule,
};

/// Errors of process hardening and seccomp.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A `prctl` failed.
    #[error("prctl({what}): {source}")]
    Prctl {
        /// The option.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A filter could not be built (a bug in the rules).
    #[error("building the {role} seccomp filter: {reason}")]
    Build {
        /// The thread role.
        role: ThreadRole,
        /// What went wrong.
        reason: String,
    },
    /// The kernel refused the filter.
    #[error("installing the {role} seccomp filter: {reason}")]
    Install {
        /// The thread role.
        role: ThreadRole,
        /// What went wrong.
        reason: String,
    },
}

/// The VMM's threads, each with its own allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadRole {
    /// Runs the vCPU (`KVM_RUN`) and the MMIO devices.
    Vcpu,
    /// The vsock device's worker (epoll loop over the Unix socket clients and queue eventfds).
    Vsock,
    /// The benchmark doorbell (eventfd in, eventfd out).
    Doorbell,
    /// Waits for SIGTERM/SIGINT and stops the vCPU.
    Signals,
    /// Waits for the enclave's outcome and tears it down.
    Main,
}

impl ThreadRole {
    fn name(self) -> &'static str {
        match self {
            ThreadRole::Vcpu => "vcpu",
            ThreadRole::Vsock => "vsock",
            ThreadRole::Doorbell => "doorbell",
            ThreadRole::Signals => "signals",
            ThreadRole::Main => "main",
        }
    }
}

impl fmt::Display for ThreadRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Marks the process not dumpable (no core dump, no ptrace or `/proc/PID/mem` by other
/// non-root users) and without new privileges.
pub fn harden_process() -> Result<(), SandboxError> {
    let prctl = |what, option, arg: libc::c_ulong| {
        // SAFETY: these prctl options take one integer argument and touch no memory.
        if unsafe { libc::prctl(option, arg, 0, 0, 0) } != 0 {
            return Err(SandboxError::Prctl {
                what,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    };
    prctl("PR_SET_NO_NEW_PRIVS", libc::PR_SET_NO_NEW_PRIVS, 1)?;
    prctl("PR_SET_DUMPABLE", libc::PR_SET_DUMPABLE, 0)
}

/// Whether the process is currently dumpable (for the status line).
pub fn dumpable() -> bool {
    // SAFETY: PR_GET_DUMPABLE takes no argument and returns the flag.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) != 0 }
}

/// A compiled allow-list for one thread role; cheap to clone and send to the thread.
#[derive(Clone)]
pub struct ThreadFilter {
    role: ThreadRole,
    program: Arc<BpfProgram>,
}

impl fmt::Debug for ThreadFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadFilter")
            .field("role", &self.role)
            .field("instructions", &self.program.len())
            .finish()
    }
}

impl ThreadFilter {
    /// Compiles the allow-list of `role`; `guest_range` is guest RAM's host-virtual range (see
    /// [`crate::memory::GuestRam::host_range`]), which `mremap` may not touch.
    pub fn new(role: ThreadRole, guest_range: Range<u64>) -> Result<Self, SandboxError> {
        let build = |reason: String| SandboxError::Build { role, reason };
        let rules = rules(role, guest_range).map_err(|e| build(e.to_string()))?;
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::KillProcess,
            SeccompAction::Allow,
            std::env::consts::ARCH
                .try_into()
                .map_err(|e: seccompiler::BackendError| build(e.to_string()))?,
        )
        .map_err(|e| build(e.to_string()))?;
        let program: BpfProgram = filter
            .try_into()
            .map_err(|e: seccompiler::BackendError| build(e.to_string()))?;
        Ok(ThreadFilter {
            role,
            program: Arc::new(program),
        })
    }

    /// The role this filter is for.
    pub fn role(&self) -> ThreadRole {
        self.role
    }

    /// Installs the filter on the calling thread (and threads it starts later). Irreversible.
    pub fn apply(&self) -> Result<(), SandboxError> {
        seccompiler::apply_filter(&self.program).map_err(|e| SandboxError::Install {
            role: self.role,
            reason: e.to_string(),
        })?;
        tracing::debug!("seccomp filter on for the {} thread", self.role);
        #[cfg(debug_assertions)]
        self_test(self.role);
        Ok(())
    }
}

/// Debug builds only: a forbidden call on request, to show the filter kills (see the module
/// documentation).
#[cfg(debug_assertions)]
fn self_test(role: ThreadRole) {
    if std::env::var("CREDGUARD_VMM_SECCOMP_SELFTEST").is_ok_and(|r| r == role.name()) {
        eprintln!("seccomp self-test: the {role} thread makes a forbidden shared mapping");
        // SAFETY: a fresh anonymous mapping (which the filter must refuse by killing us).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        eprintln!("seccomp self-test: the forbidden call returned {p:?}: the filter does not work");
        std::process::abort();
    }
}

type Rules = BTreeMap<i64, Vec<SeccompRule>>;

fn allow(rules: &mut Rules, syscalls: &[libc::c_long]) {
    for &nr in syscalls {
        rules.insert(nr, Vec::new());
    }
}

fn rule(conds: Vec<Cond>) -> Result<SeccompRule, seccompiler::BackendError> {
    SeccompRule::new(conds)
}

/// `ioctl` with a request number in `requests` only.
fn ioctls(rules: &mut Rules, requests: &[u64]) -> Result<(), seccompiler::BackendError> {
    let mut v = Vec::new();
    for &req in requests {
        v.push(rule(vec![Cond::new(1, Len::Dword, Op::Eq, req)?])?);
    }
    rules.insert(libc::SYS_ioctl, v);
    Ok(())
}

/// `KVM_RUN`.
const KVM_RUN: u64 = 0xae80;
/// `KVM_GET_REGS` (to describe a failure with the guest's RIP).
const KVM_GET_REGS: u64 = 0x8090_ae81;
/// `FIONBIO` (std's `set_nonblocking` on accepted sockets).
const FIONBIO: u64 = 0x5421;

fn rules(role: ThreadRole, guest: Range<u64>) -> Result<Rules, seccompiler::BackendError> {
    let mut r = Rules::new();
    // Every thread: memory allocation, locks, logging, thread exit.
    allow(
        &mut r,
        &[
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_writev,
            libc::SYS_close,
            libc::SYS_futex,
            libc::SYS_sched_yield,
            libc::SYS_brk,
            libc::SYS_munmap,
            libc::SYS_madvise,
            libc::SYS_rt_sigprocmask,
            libc::SYS_rt_sigreturn,
            libc::SYS_sigaltstack,
            libc::SYS_clock_gettime,
            libc::SYS_clock_nanosleep,
            libc::SYS_nanosleep,
            libc::SYS_gettid,
            libc::SYS_getpid,
            libc::SYS_getrandom,
            libc::SYS_exit,
            libc::SYS_exit_group,
            libc::SYS_restart_syscall,
        ],
    );
    // mmap: anonymous (fd -1), private, not executable. No file, no guest_memfd, no shared memory.
    r.insert(
        libc::SYS_mmap,
        vec![rule(vec![
            Cond::new(4, Len::Dword, Op::Eq, u64::from(u32::MAX))?,
            Cond::new(3, Len::Dword, Op::MaskedEq(libc::MAP_SHARED as u64), 0)?,
            Cond::new(2, Len::Dword, Op::MaskedEq(libc::PROT_EXEC as u64), 0)?,
        ])?],
    );
    // fcntl: reading and setting fd flags only (std checks an fd is open before closing it).
    r.insert(
        libc::SYS_fcntl,
        vec![
            rule(vec![Cond::new(1, Len::Dword, Op::Eq, libc::F_GETFD as u64)?])?,
            rule(vec![Cond::new(1, Len::Dword, Op::Eq, libc::F_GETFL as u64)?])?,
            rule(vec![Cond::new(1, Len::Dword, Op::Eq, libc::F_SETFL as u64)?])?,
        ],
    );
    r.insert(
        libc::SYS_mprotect,
        vec![rule(vec![Cond::new(
            2,
            Len::Dword,
            Op::MaskedEq(libc::PROT_EXEC as u64),
            0,
        )?])?],
    );
    // mremap (the allocator's realloc of large blocks): never on guest RAM's host range.
    r.insert(
        libc::SYS_mremap,
        vec![
            rule(vec![Cond::new(0, Len::Qword, Op::Lt, guest.start)?])?,
            rule(vec![Cond::new(0, Len::Qword, Op::Ge, guest.end)?])?,
        ],
    );
    match role {
        ThreadRole::Vcpu => {
            ioctls(&mut r, &[KVM_RUN, KVM_GET_REGS])?;
        }
        ThreadRole::Vsock => {
            allow(
                &mut r,
                &[
                    libc::SYS_epoll_wait,
                    libc::SYS_epoll_pwait,
                    libc::SYS_epoll_ctl,
                    libc::SYS_accept4,
                    libc::SYS_shutdown,
                ],
            );
            // Plain reads and writes of the clients' streams only (std's UnixStream read and
            // write are recvfrom/sendto without an address). No sendmsg/recvmsg/sendmmsg/
            // recvmmsg at all: seccomp cannot look into a msghdr, and those calls are what
            // carries file descriptors (SCM_RIGHTS), so a compromised device thread cannot hand
            // the guest_memfd (or any fd) to the proxy.
            r.insert(
                libc::SYS_recvfrom,
                vec![rule(vec![Cond::new(4, Len::Qword, Op::Eq, 0)?])?],
            );
            r.insert(
                libc::SYS_sendto,
                vec![rule(vec![Cond::new(4, Len::Qword, Op::Eq, 0)?])?],
            );
            ioctls(&mut r, &[FIONBIO])?;
        }
        ThreadRole::Doorbell => {}
        ThreadRole::Signals => {
            allow(&mut r, &[libc::SYS_rt_sigtimedwait, libc::SYS_tgkill]);
        }
        ThreadRole::Main => {
            // Kicking the vCPU out of KVM_RUN; removing the vsock socket file at the end.
            allow(&mut r, &[libc::SYS_tgkill, libc::SYS_unlink, libc::SYS_unlinkat]);
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_compiles() {
        for role in [
            ThreadRole::Vcpu,
            ThreadRole::Vsock,
            ThreadRole::Doorbell,
            ThreadRole::Signals,
            ThreadRole::Main,
        ] {
            let f = ThreadFilter::new(role, 0x7f00_0000_0000..0x7f00_0100_0000).unwrap();
            assert_eq!(f.role(), role);
        }
    }

    /// Runs `body` in a forked child under `role`'s filter (after `setup`, which runs before the
    /// filter); returns the child's wait status. `body` returns the exit code if it survives.
    fn in_filtered_child(
        role: ThreadRole,
        setup: impl FnOnce() -> [i32; 2],
        body: impl FnOnce([i32; 2]) -> i32,
    ) -> i32 {
        // Built before the fork: the child of a multi-threaded process only makes system calls.
        let filter = ThreadFilter::new(role, 0..0x1000).unwrap();
        // SAFETY: fork in a test; the child only makes system calls and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let fds = setup();
            let code = if seccompiler::apply_filter(&filter.program).is_err() {
                3
            } else {
                body(fds)
            };
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }

    fn socket_pair() -> [i32; 2] {
        let mut fds = [-1; 2];
        // SAFETY: socketpair writes two fds into the array.
        let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
        assert_eq!(r, 0);
        fds
    }

    #[test]
    fn vsock_thread_is_killed_on_sendmsg_and_recvmsg() {
        // Plain reads and writes, as the device makes them, go through.
        let status = in_filtered_child(ThreadRole::Vsock, socket_pair, |[a, b]| {
            let mut byte = [0u8; 1];
            // SAFETY: plain system calls on the child's own sockets and buffer.
            unsafe {
                if libc::send(a, b"x".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) != 1 {
                    return 4;
                }
                if libc::recv(b, byte.as_mut_ptr().cast(), 1, 0) != 1 || byte != *b"x" {
                    return 5;
                }
            }
            0
        });
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status:#x}"
        );
        // sendmsg and recvmsg, even without ancillary data, and their batch forms, kill.
        for call in ["sendmsg", "recvmsg", "sendmmsg", "recvmmsg"] {
            let status = in_filtered_child(ThreadRole::Vsock, socket_pair, |[a, _]| {
                let mut byte = [0u8; 1];
                let mut iov = libc::iovec {
                    iov_base: byte.as_mut_ptr().cast(),
                    iov_len: 1,
                };
                // SAFETY: an all-zero msghdr is valid (no name, no control).
                let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                let mut mmsg = libc::mmsghdr {
                    msg_hdr: msg,
                    msg_len: 0,
                };
                // SAFETY: system calls on the child's own socket with valid headers.
                unsafe {
                    match call {
                        "sendmsg" => libc::sendmsg(a, &msg, libc::MSG_DONTWAIT),
                        "recvmsg" => libc::recvmsg(a, &mut msg, libc::MSG_DONTWAIT),
                        "sendmmsg" => libc::sendmmsg(a, &mut mmsg, 1, libc::MSG_DONTWAIT) as isize,
                        _ => libc::recvmmsg(a, &mut mmsg, 1, libc::MSG_DONTWAIT, std::ptr::null_mut()) as isize,
                    };
                }
                0
            });
            assert!(
                libc::WIFSIGNALED(status),
                "{call}: the child survived: status {status:#x}"
            );
            assert_eq!(libc::WTERMSIG(status), libc::SIGSYS, "{call}");
        }
    }

    #[test]
    fn no_role_may_pass_file_descriptors() {
        for role in [
            ThreadRole::Vcpu,
            ThreadRole::Vsock,
            ThreadRole::Doorbell,
            ThreadRole::Signals,
            ThreadRole::Main,
        ] {
            let rules = rules(role, 0..0x1000).unwrap();
            for nr in [
                libc::SYS_sendmsg,
                libc::SYS_recvmsg,
                libc::SYS_sendmmsg,
                libc::SYS_recvmmsg,
            ] {
                assert!(!rules.contains_key(&nr), "{role} may call syscall {nr}");
            }
        }
    }

    #[test]
    fn forbidden_shared_mapping_kills_a_filtered_thread() {
        // In a child process, so the test harness survives. The filter is built before the fork:
        // the child of a multi-threaded process only makes system calls.
        let filter = ThreadFilter::new(ThreadRole::Doorbell, 0..0x1000).unwrap();
        // SAFETY: fork in a test; the child only makes system calls and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            if seccompiler::apply_filter(&filter.program).is_err() {
                // SAFETY: leaving the forked child without running the parent's destructors.
                unsafe { libc::_exit(3) };
            }
            // Allowed: anonymous private memory.
            // SAFETY: plain system calls on memory the child owns.
            unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p == libc::MAP_FAILED {
                    libc::_exit(4);
                }
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ,
                    libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                libc::_exit(0);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFSIGNALED(status), "child exited normally: status {status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
    }
}
