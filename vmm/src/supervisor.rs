//! `credguard-vmm run` as a small supervisor: the enclave runs in a worker process, which is
//! started again from the verified image when the enclave panics, faults, triple-faults or stops
//! answering the [`watchdog`](crate::watchdog).
//!
//! Why a second process rather than a new VM in the same one: the worker has locked itself into
//! seccomp allow-lists that forbid creating another VM (by design), and a process that a broken
//! guest may have confused is best replaced whole. The worker is this same program re-executed
//! with the hidden `--worker` flag; it verifies the image again and sets up exactly as a plain
//! `run`, so a restart trusts nothing from the dead boot. What a restart keeps is only its count
//! and the last few reasons, which the worker hands to the enclave for its `Status`.
//!
//! What ends the supervisor instead of a restart: a clean stop of the enclave (exit 0), an image
//! or configuration the worker refused (exit 2: restarting cannot help), a worker killed by
//! seccomp (the same signal is raised again here: a VMM bug or an attack is for the admin, not
//! for a loop), and a restart storm (more than [`RestartPolicy::max_restarts`] in
//! [`RestartPolicy::window`]: exit 1, and systemd's own restart policy takes over).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::watchdog::{Watchdog, WatchdogConfig};

/// Exit status of a worker whose image or configuration was refused.
pub const EXIT_REFUSED: u8 = 2;
/// Exit status of a worker whose enclave ended badly (restartable).
pub const EXIT_ENCLAVE_FAILED: u8 = 1;
/// Restart reasons kept and handed to the next boot (BootInfo has room for a few lines).
pub const KEPT_REASONS: usize = 4;
/// How long a stopping worker gets for its clean shutdown before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// A worker that ran at least this long counts as having worked: its end restarts without
/// backoff. Short, so that an enclave that served for a while and then died is back at once; a
/// boot that fails at start fails in milliseconds.
const HEALTHY_UPTIME: Duration = Duration::from_secs(2);
/// Largest delay between restarts of a worker that keeps failing at once.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// First delay of the backoff (the first quick failure restarts at once).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest reason line read from a worker.
const MAX_REASON_LEN: u64 = 512;

/// Errors of the supervisor itself (not of the enclave).
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A system call of the supervisor failed.
    #[error("{what}: {source}")]
    Sys {
        /// The operation.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The watchdog could not be started.
    #[error(transparent)]
    Watchdog(#[from] crate::watchdog::WatchdogError),
}

fn sys(what: &'static str) -> impl FnOnce(io::Error) -> SupervisorError {
    move |source| SupervisorError::Sys { what, source }
}

/// When to stop restarting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restarts allowed within [`RestartPolicy::window`]; one more ends the supervisor (exit 1).
    pub max_restarts: u32,
    /// See [`RestartPolicy::max_restarts`].
    pub window: Duration,
}

/// A fault to inject into the first boots (tests only; see `BootMode::ServicePanicAfter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedFault {
    /// The worker arguments that select it (e.g. `--inject-fault panic --inject-fault-after 5`).
    pub worker_args: Vec<OsString>,
    /// How many boots get it (1: the first boot only; restarts boot normally).
    pub boots: u32,
}

/// Everything the supervisor needs.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// The program to re-execute (this one).
    pub exe: PathBuf,
    /// The worker's full command line after the program name, without the per-boot flags
    /// (`--worker`, restart count and reasons, report fd, injected fault).
    pub worker_args: Vec<OsString>,
    /// The worker's vsock socket, which the watchdog pings.
    pub vsock_socket: PathBuf,
    /// `None`: no watchdog.
    pub watchdog: Option<WatchdogConfig>,
    /// When to give up.
    pub policy: RestartPolicy,
    /// Tests only.
    pub fault: Option<InjectedFault>,
}

/// What the supervisor's main loop waits for.
enum Event {
    /// SIGTERM or SIGINT.
    Signal(&'static str),
    /// Worker `boot` ended; `reason` is what it reported, if anything.
    Exited {
        boot: u64,
        status: io::Result<ExitStatus>,
        reason: Option<String>,
    },
    /// The watchdog of worker `boot` saw no answer.
    Hung { boot: u64, reason: String },
}

/// A started worker: its pidfd (for race-free signals) and which boot it is.
struct Worker {
    boot: u64,
    pid: u32,
    pidfd: Option<OwnedFd>,
    started: Instant,
}

impl Worker {
    /// Sends `signal` to the worker. Through the pidfd it can never reach another process that
    /// reused the pid after the worker was reaped.
    fn signal(&self, signal: libc::c_int) {
        match &self.pidfd {
            Some(fd) => {
                // SAFETY: pidfd_send_signal with a pidfd we own, no siginfo, no flags.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        fd.as_raw_fd(),
                        signal,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    )
                };
            }
            None => {
                // Without pidfds (kernels before 5.3): the worker is not reaped until its waiter
                // thread's `wait` returns, which the main loop learns about before signalling again.
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(self.pid as libc::pid_t, signal) };
            }
        }
    }
}

/// Runs workers until a clean stop, a refusal, a signal or a restart storm; returns the exit
/// status of `credguard-vmm run`.
///
/// Must run on the main thread: `PR_SET_PDEATHSIG` fires when the thread that started the worker
/// ends, so the worker must be started by the thread that lives as long as the process.
pub fn run(config: SupervisorConfig) -> Result<u8, SupervisorError> {
    if let Some(w) = &config.watchdog {
        w.validate()?;
    }
    let (tx, rx) = mpsc::channel::<Event>();
    spawn_signal_thread(tx.clone())?;
    let mut reasons: VecDeque<String> = VecDeque::new();
    let mut restarts: u64 = 0;
    let mut budget = RestartBudget::new(config.policy);
    for boot in 0u64.. {
        let worker = spawn_worker(&config, boot, restarts, &reasons, tx.clone())?;
        tracing::info!(pid = worker.pid, boot, restarts, "enclave worker started");
        let watchdog = match config.watchdog {
            Some(w) => {
                let tx = tx.clone();
                Some(Watchdog::start(config.vsock_socket.clone(), w, move |reason| {
                    let _ = tx.send(Event::Hung { boot, reason });
                })?)
            }
            None => None,
        };
        let end = wait_for_worker(&worker, boot, &rx);
        drop(watchdog);
        let reason = match end? {
            WorkerEnd::Signalled => {
                stop_worker(&worker, &rx);
                return Ok(0);
            }
            WorkerEnd::Ended { hang, status, reported } => match restart_reason(hang, &status, reported) {
                Ok(reason) => reason,
                Err(exit_code) => return Ok(exit_code),
            },
        };
        let Some(delay) = budget.admit(worker.started) else {
            tracing::error!(
                "{reason}; {} restarts within {} s already: giving up (exit 1) so that the service manager takes over",
                config.policy.max_restarts,
                config.policy.window.as_secs()
            );
            return Ok(EXIT_ENCLAVE_FAILED);
        };
        restarts += 1;
        tracing::error!(
            restart = restarts,
            delay_ms = delay.as_millis() as u64,
            "{reason}; restarting the enclave from the verified image"
        );
        reasons.push_back(reason);
        while reasons.len() > KEPT_REASONS {
            reasons.pop_front();
        }
        if !wait_out_backoff(&rx, delay) {
            return Ok(0);
        }
    }
    Ok(EXIT_ENCLAVE_FAILED)
}

/// How a worker's boot ended, as the supervisor saw it.
enum WorkerEnd {
    /// SIGTERM/SIGINT reached the supervisor: stop, do not restart.
    Signalled,
    /// The worker exited (or was killed for hanging, `hang` saying why).
    Ended {
        hang: Option<String>,
        status: io::Result<ExitStatus>,
        reported: Option<String>,
    },
}

/// Waits for the end of `worker` (boot `boot`), killing it if the watchdog says it hangs.
fn wait_for_worker(worker: &Worker, boot: u64, rx: &mpsc::Receiver<Event>) -> Result<WorkerEnd, SupervisorError> {
    let mut hang: Option<String> = None;
    loop {
        match rx.recv() {
            Ok(Event::Signal(name)) => {
                tracing::info!("{name} received, stopping the enclave worker");
                return Ok(WorkerEnd::Signalled);
            }
            Ok(Event::Hung { boot: b, reason }) if b == boot && hang.is_none() => {
                tracing::error!(pid = worker.pid, "{reason}; killing the enclave worker");
                worker.signal(libc::SIGKILL);
                hang = Some(reason);
            }
            Ok(Event::Exited {
                boot: b,
                status,
                reason,
            }) if b == boot => {
                return Ok(WorkerEnd::Ended {
                    hang,
                    status,
                    reported: reason,
                });
            }
            // Late news about an earlier worker.
            Ok(_) => {}
            Err(_) => {
                return Err(SupervisorError::Sys {
                    what: "the supervisor's event channel",
                    source: io::Error::other("closed"),
                });
            }
        }
    }
}

/// Why the enclave is restarted, or the supervisor's exit code when it must not be: a clean
/// stop, a refused image or configuration. A worker killed by seccomp takes the supervisor down
/// the same way (a VMM bug or an attack is no reason to try again).
fn restart_reason(
    hang: Option<String>,
    status: &io::Result<ExitStatus>,
    reported: Option<String>,
) -> Result<String, u8> {
    match (hang, status) {
        (Some(reason), _) => Ok(reason),
        (None, Ok(s)) if s.code() == Some(0) => {
            tracing::info!("the enclave stopped cleanly; not restarting");
            Err(0)
        }
        (None, Ok(s)) if s.code() == Some(i32::from(EXIT_REFUSED)) => {
            tracing::error!("the enclave worker refused the image or the configuration; not restarting");
            Err(EXIT_REFUSED)
        }
        (None, Ok(s)) if s.signal() == Some(libc::SIGSYS) => {
            tracing::error!(
                "the enclave worker was killed by seccomp (SIGSYS): a VMM bug or an attack; not restarting"
            );
            die_like_worker(libc::SIGSYS);
        }
        (None, Ok(s)) => Ok(reported.unwrap_or_else(|| describe_exit(*s))),
        (None, Err(e)) => Ok(format!("lost the enclave worker: {e}")),
    }
}

/// Storm control: at most `max_restarts` in any `window`, then the service manager decides; a
/// worker that failed soon after starting waits longer each time ([`backoff`]).
struct RestartBudget {
    policy: RestartPolicy,
    recent: VecDeque<Instant>,
    quick_failures: u32,
}

impl RestartBudget {
    fn new(policy: RestartPolicy) -> Self {
        RestartBudget {
            policy,
            recent: VecDeque::new(),
            quick_failures: 0,
        }
    }

    /// The delay before the next restart of a worker started at `started`, or `None` when the
    /// budget is spent.
    fn admit(&mut self, started: Instant) -> Option<Duration> {
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.policy.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.policy.max_restarts as usize {
            return None;
        }
        self.recent.push_back(now);
        self.quick_failures = if started.elapsed() < HEALTHY_UPTIME {
            self.quick_failures.saturating_add(1)
        } else {
            1
        };
        Some(backoff(self.quick_failures))
    }
}

/// Waits `delay`, still answering SIGTERM/SIGINT; false if one came (exit instead).
fn wait_out_backoff(rx: &mpsc::Receiver<Event>, delay: Duration) -> bool {
    let until = Instant::now() + delay;
    loop {
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(Event::Signal(name)) => {
                tracing::info!("{name} received while restarting; exiting");
                return false;
            }
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return true,
        }
    }
}

/// The delay before restart number `quick_failures` of a worker that keeps failing at once: none
/// for the first, then 100 ms doubling up to [`MAX_BACKOFF`].
pub fn backoff(quick_failures: u32) -> Duration {
    if quick_failures <= 1 {
        return Duration::ZERO;
    }
    let doublings = (quick_failures - 2).min(16);
    FIRST_BACKOFF.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

/// A worker's end for the log and the enclave's restart reasons, when it reported none.
pub fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("the enclave worker exited with status {code}"),
        (None, Some(sig)) => format!("the enclave worker was killed by signal {sig} ({})", signal_name(sig)),
        _ => format!("the enclave worker ended: {status}"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGSYS => "SIGSYS",
        libc::SIGILL => "SIGILL",
        _ => "another signal",
    }
}

/// Starts worker `boot` and a thread that reports its end with the reason it wrote.
fn spawn_worker(
    config: &SupervisorConfig,
    boot: u64,
    restarts: u64,
    reasons: &VecDeque<String>,
    tx: mpsc::Sender<Event>,
) -> Result<Worker, SupervisorError> {
    let (report_read, report_write) = pipe()?;
    let report_fd = report_write.as_raw_fd();
    let mut cmd = Command::new(&config.exe);
    cmd.args(&config.worker_args)
        .arg("--worker")
        .arg("--report-fd")
        .arg(report_fd.to_string())
        .arg("--restart-count")
        .arg(restarts.to_string());
    for reason in reasons {
        cmd.arg("--restart-reason").arg(reason);
    }
    if let Some(fault) = &config.fault
        && boot < u64::from(fault.boots)
    {
        cmd.args(&fault.worker_args);
    }
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and makes only async-signal-safe
    // system calls (prctl, getppid, fcntl, _exit); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // The worker dies with us: a SIGKILLed supervisor leaves no enclave running behind it.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // We may have died between fork and prctl: then nobody would kill the worker.
            if libc::getppid() as u32 != parent {
                libc::_exit(i32::from(EXIT_ENCLAVE_FAILED));
            }
            // The report pipe's write end is the only fd handed over on purpose.
            if libc::fcntl(report_fd, libc::F_SETFD, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(sys("starting the enclave worker"))?;
    // Our copy of the write end must go, or the reader never sees end of file.
    drop(report_write);
    let pid = child.id();
    let pidfd = pidfd_open(pid);
    std::thread::Builder::new()
        .name(format!("worker-{boot}"))
        .spawn(move || {
            let status = child.wait();
            let mut text = String::new();
            let mut report = File::from(report_read).take(MAX_REASON_LEN);
            let reason = match report.read_to_string(&mut text) {
                Ok(_) => text
                    .lines()
                    .next()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
                Err(_) => None,
            };
            let _ = tx.send(Event::Exited { boot, status, reason });
        })
        .map_err(sys("spawning the worker's waiter thread"))?;
    Ok(Worker {
        boot,
        pid,
        pidfd,
        started: Instant::now(),
    })
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`]; returns once the worker has ended.
fn stop_worker(worker: &Worker, rx: &mpsc::Receiver<Event>) {
    worker.signal(libc::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    let mut killed = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = if killed { STOP_GRACE } else { left };
        match rx.recv_timeout(wait) {
            Ok(Event::Exited { boot, .. }) if boot == worker.boot => return,
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) if !killed => {
                tracing::warn!("the enclave worker did not stop in {STOP_GRACE:?}; killing it");
                worker.signal(libc::SIGKILL);
                killed = true;
            }
            Err(_) => return,
        }
    }
}

/// Ends this process by `signal`, as the worker ended, so that the service manager sees the same.
fn die_like_worker(signal: libc::c_int) -> ! {
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls: no core file for the supervisor (it holds nothing worth one),
    // default action for `signal`, unblock it and raise it. If that somehow returns, exit 1.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    std::process::exit(i32::from(EXIT_ENCLAVE_FAILED))
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> Result<(OwnedFd, OwnedFd), SupervisorError> {
    let mut fds: [RawFd; 2] = [-1; 2];
    // SAFETY: pipe2 writes two fds into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SupervisorError::Sys {
            what: "pipe2",
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: pipe2 succeeded: both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A pidfd for `pid`, or `None` where the kernel has none (then signals go by pid).
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        tracing::debug!("pidfd_open: {}", io::Error::last_os_error());
        return None;
    }
    // SAFETY: a new fd that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Turns SIGTERM and SIGINT (blocked in every thread by `main_with_args`) into events.
fn spawn_signal_thread(tx: mpsc::Sender<Event>) -> Result<(), SupervisorError> {
    crate::signals::spawn_signal_thread(|| true, move |name| tx.send(Event::Signal(name)).is_ok()).map_err(|e| {
        SupervisorError::Sys {
            what: "starting the signal thread",
            source: io::Error::other(e.to_string()),
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_zero_and_is_capped() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::ZERO);
        assert_eq!(backoff(2), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(200));
        assert_eq!(backoff(8), Duration::from_millis(5000));
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn exits_are_described() {
        assert_eq!(
            describe_exit(ExitStatus::from_raw(libc::SIGKILL)),
            "the enclave worker was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(3 << 8)),
            "the enclave worker exited with status 3"
        );
    }

    /// A worker that fails at once is restarted at most `max_restarts` times, then the
    /// supervisor gives up with exit 1; the reasons reach the next worker's command line.
    #[test]
    fn restart_storm_is_bounded_and_reasons_are_passed_on() {
        let dir = std::env::temp_dir().join(format!("credguard-supervisor-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("boots");
        // A stand-in worker: records its arguments, reports a reason on the fd and fails.
        let script = format!(
            "echo \"$@\" >> {log}; fd=$(echo \"$@\" | sed 's/.*--report-fd \\([0-9]*\\).*/\\1/'); \
             echo \"test failure $#\" >&$fd; exit 1",
            log = log.display()
        );
        let config = SupervisorConfig {
            exe: PathBuf::from("/bin/sh"),
            worker_args: vec!["-c".into(), script.into(), "worker".into()],
            vsock_socket: dir.join("none.sock"),
            watchdog: None,
            policy: RestartPolicy {
                max_restarts: 2,
                window: Duration::from_secs(600),
            },
            fault: None,
        };
        assert_eq!(run(config).unwrap(), EXIT_ENCLAVE_FAILED);
        let boots = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = boots.lines().collect();
        assert_eq!(lines.len(), 3, "{boots}");
        assert!(lines[0].contains("--restart-count 0"), "{boots}");
        assert!(lines[2].contains("--restart-count 2"), "{boots}");
        assert!(lines[2].contains("--restart-reason test failure"), "{boots}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
