//! `credguard-ntlm-auth`: reads `ntlmssp-client-1` requests from standard input and writes one
//! reply line for each, until the end of the input.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use credguard_ntlm_auth::cli::Cli;
use credguard_ntlm_auth::grpc::GrpcBackend;
use credguard_ntlm_auth::helper::Helper;
use credguard_ntlm_auth::line::{Line, read_line};
use credguard_ntlm_auth::protocol::Reply;
use credguard_proto::checks::MAX_NTLM_CHALLENGE_LEN;

/// Longest request line: `TT ` and the base64 of the largest CHALLENGE the API takes.
const MAX_LINE_LEN: usize = 3 + MAX_NTLM_CHALLENGE_LEN.div_ceil(3) * 4;

fn main() -> ExitCode {
    let cli = match Cli::parse_args(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    not_dumpable();
    // SAFETY: geteuid cannot fail and has no preconditions. The effective uid is the one the API
    // sees (SO_PEERCRED).
    let uid = unsafe { libc::geteuid() };
    let session = std::env::var("CREDGUARD_SESSION").ok();
    let options = cli.options(uid, session);
    let socket = credguard_client::socket_path(cli.socket.as_deref());
    let backend = match GrpcBackend::new(socket) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("credguard-ntlm-auth: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    serve(
        Helper::new(backend, options),
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
    )
}

/// One reply per request line until the end of the input (or until the caller stops reading).
fn serve(mut helper: Helper<GrpcBackend>, input: &mut impl BufRead, output: &mut impl Write) -> ExitCode {
    loop {
        let reply = match read_line(input, MAX_LINE_LEN) {
            Ok(Line::Complete(line)) => helper.handle_line(&line),
            Ok(Line::TooLong) => Reply::bh(format!("request line longer than {MAX_LINE_LEN} bytes")),
            Ok(Line::Eof) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("credguard-ntlm-auth: reading the requests: {e}");
                return ExitCode::FAILURE;
            }
        };
        if writeln!(output, "{reply}").and_then(|()| output.flush()).is_err() {
            // The caller is gone: nothing to answer.
            return ExitCode::SUCCESS;
        }
    }
}

/// AUTHENTICATE messages and, briefly, a context's session key pass through this process: no
/// core dump of it, and no ptrace by anyone but root.
fn not_dumpable() {
    // SAFETY: PR_SET_DUMPABLE takes integers only and changes nothing but this process's flag.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        eprintln!(
            "credguard-ntlm-auth: cannot make the process non-dumpable: {}",
            std::io::Error::last_os_error()
        );
    }
}
