//! `credguard-ntlm-auth`: the client side of Samba's `ntlm_auth` helper, answered by credguard.
//!
//! Programs that do NTLM single sign-on on Linux without holding the password (Firefox's
//! `nsAuthSambaNTLM`, libsoup, Evolution, `curl --ntlm-wb`) run `ntlm_auth
//! --helper-protocol=ntlmssp-client-1` and speak a line protocol with it over its standard input
//! and output: `YR` asks for a NEGOTIATE, `TT <CHALLENGE>` for the AUTHENTICATE. Samba answers
//! from winbind's cached credentials; this helper answers from the caller's credguard logon
//! session, so the NT hash and the NTLMv2 computation stay in the enclave. Every message the
//! helper writes is one the server sees anyway; it never holds a password or a hash, and it
//! never writes the exported session key.
//!
//! - [`line`]: reading standard input line by line with a bound on the line's length;
//! - [`protocol`]: the requests and replies of `ntlmssp-client-1`;
//! - [`helper`]: the state machine, over a [`helper::Backend`] (testable without the network);
//! - [`grpc`]: the backend that speaks to the credguard API socket;
//! - [`cli`]: the command line, with the flags Samba's `ntlm_auth` callers pass.
#![deny(missing_docs)]

pub mod cli;
pub mod grpc;
pub mod helper;
pub mod line;
pub mod protocol;
