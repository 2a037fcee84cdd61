//! Hostile input through the public gRPC API: bytes that are not valid protobuf (invalid UTF-8 in
//! a string field, truncated fields, garbage), no message at all, oversized fields, empty and
//! absurd values. Each gets INVALID_ARGUMENT (a request over the size limit RESOURCE_EXHAUSTED, as
//! documented) and the service keeps working. The requests go through a real gRPC client (tonic)
//! with a pass-through codec, so the server sees exactly the bytes written here.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod support;

use credguard_client as client;
use credguard_proto::lsa;
use prost::Message;
use prost::bytes::{Buf, BufMut};
use support::{Stack, kvm_or_skip, runtime};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// Sends and receives message bytes as they are.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

async fn grpc(channel: &Channel) -> tonic::client::Grpc<Channel> {
    let mut g = tonic::client::Grpc::new(channel.clone()).max_encoding_message_size(8 << 20);
    g.ready().await.expect("the API is ready");
    g
}

/// One unary call of `method` with `body` as the request message's bytes.
async fn raw_call(channel: &Channel, method: &'static str, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let path = PathAndQuery::from_static(method);
    grpc(channel)
        .await
        .unary(tonic::Request::new(body), path, Raw)
        .await
        .map(tonic::Response::into_inner)
}

const LOGON: &str = "/credguard.v1.Lsa/Logon";
const LOGOFF: &str = "/credguard.v1.Lsa/Logoff";
const NTLM_AUTHENTICATE: &str = "/credguard.v1.Lsa/NtlmAuthenticate";
const TICKET: &str = "/credguard.v1.Lsa/KerberosGetServiceTicket";

fn logon(user: &str, secret: lsa::logon_request::Secret) -> lsa::LogonRequest {
    lsa::LogonRequest {
        user: user.into(),
        domain: "CORP".into(),
        realm: String::new(),
        kdc: String::new(),
        secret: Some(secret),
        ..Default::default()
    }
}

fn password(p: &str) -> lsa::logon_request::Secret {
    lsa::logon_request::Secret::Password(p.into())
}

#[test]
fn malformed_oversized_empty_and_absurd_requests_get_invalid_argument() {
    if !kvm_or_skip("malformed_oversized_empty_and_absurd_requests_get_invalid_argument") {
        return;
    }
    let stack = Stack::start("hostile", "");
    stack.wait_ready();
    let rt = runtime();
    rt.block_on(async {
        let channel = client::channel(&stack.api).await.unwrap();
        let mut c = client::connect(&stack.api).await.unwrap();
        let session = c
            .logon(logon("mallory", password("pw")))
            .await
            .unwrap()
            .into_inner()
            .session_id;

        // Not protobuf, or not the message's protobuf: (what, method, bytes).
        let mut bad_utf8 = vec![0x0a, 4, 0xff, 0xfe, 0xc3, 0x28]; // user = invalid UTF-8
        bad_utf8.extend_from_slice(&[0x2a, 2, b'p', b'w']); // password = "pw"
        let mut bad_utf8_password = vec![0x0a, 1, b'u'];
        bad_utf8_password.extend_from_slice(&[0x2a, 2, 0xc0, 0x80]); // overlong NUL
        let malformed: Vec<(&str, &'static str, Vec<u8>)> = vec![
            ("invalid UTF-8 in user", LOGON, bad_utf8),
            ("invalid UTF-8 in password", LOGON, bad_utf8_password),
            ("invalid UTF-8 in session_id", LOGOFF, vec![0x0a, 2, 0xed, 0xa0]),
            ("a field longer than the message", LOGON, vec![0x0a, 0x7f, b'a']),
            ("an unterminated varint", LOGOFF, vec![0x08, 0xff, 0xff, 0xff]),
            ("wire type 7", LOGOFF, vec![0x0f, 0x00]),
            ("field number 0", LOGON, vec![0x02, 0x00]),
            ("garbage", NTLM_AUTHENTICATE, vec![0xff; 64]),
            ("a nested message cut short", LOGON, vec![0x3a, 0x05, 0x08]),
        ];
        for (what, method, bytes) in malformed {
            let e = raw_call(&channel, method, bytes).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
            assert!(e.message().contains("malformed request"), "{what}: {}", e.message());
        }

        // No request message at all (a stream that ends at once).
        let none = tonic::codegen::tokio_stream::iter(Vec::<Vec<u8>>::new());
        let e = grpc(&channel)
            .await
            .client_streaming(tonic::Request::new(none), PathAndQuery::from_static(LOGOFF), Raw)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "no message: {e:?}");

        // Valid protobuf, invalid values: (what, method, message).
        // Oversized fields, yet within the configured request limit (64 KiB), which is checked first.
        let big = "x".repeat(10_000);
        let key = |enctype, len| {
            lsa::logon_request::Secret::Key(lsa::Key {
                enctype,
                value: vec![7; len],
            })
        };
        let invalid: Vec<(&str, &'static str, Vec<u8>)> = vec![
            ("an empty user", LOGON, logon("", password("pw")).encode_to_vec()),
            ("a 10 kB user", LOGON, logon(&big, password("pw")).encode_to_vec()),
            (
                "a user with a NUL",
                LOGON,
                logon("a\0b", password("pw")).encode_to_vec(),
            ),
            ("an empty password", LOGON, logon("u", password("")).encode_to_vec()),
            ("a 10 kB password", LOGON, logon("u", password(&big)).encode_to_vec()),
            (
                "no secret",
                LOGON,
                lsa::LogonRequest {
                    secret: None,
                    ..logon("u", password(""))
                }
                .encode_to_vec(),
            ),
            (
                "a 3-byte NT hash",
                LOGON,
                logon("u", lsa::logon_request::Secret::NtHash(vec![1, 2, 3])).encode_to_vec(),
            ),
            ("enctype -1", LOGON, logon("u", key(-1, 32)).encode_to_vec()),
            ("enctype i32::MAX", LOGON, logon("u", key(i32::MAX, 32)).encode_to_vec()),
            ("a 10 kB key", LOGON, logon("u", key(18, 10_000)).encode_to_vec()),
            (
                "an empty session id",
                LOGOFF,
                lsa::LogoffRequest {
                    session_id: String::new(),
                }
                .encode_to_vec(),
            ),
            (
                "a 10 kB session id",
                LOGOFF,
                lsa::LogoffRequest {
                    session_id: big.clone(),
                }
                .encode_to_vec(),
            ),
            (
                "a 10 kB SPN",
                TICKET,
                lsa::KerberosGetServiceTicketRequest {
                    session_id: session.clone(),
                    spn: big.clone(),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                "an absurd NTLM context id",
                NTLM_AUTHENTICATE,
                lsa::NtlmAuthenticateRequest {
                    context_id: "\u{202e}../../etc/passwd".into(),
                    challenge_message: vec![0; 10],
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
        ];
        for (what, method, bytes) in invalid {
            let e = raw_call(&channel, method, bytes).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        }

        // Over the configured request limit (64 KiB) and over the gRPC layer's 1 MiB cap:
        // RESOURCE_EXHAUSTED, as documented for a request's size.
        for size in [200_000, 2 << 20] {
            let huge = logon("u", password(&"y".repeat(size))).encode_to_vec();
            let e = raw_call(&channel, LOGON, huge).await.unwrap_err();
            assert_eq!(e.code(), Code::ResourceExhausted, "{size} bytes: {e:?}");
        }

        // Nothing broke: the session made before is intact and new work succeeds.
        let listed = c.list_sessions(lsa::ListSessionsRequest {}).await.unwrap().into_inner();
        assert!(listed.sessions.iter().any(|s| s.session_id == session), "{listed:?}");
        let s = c.status(lsa::StatusRequest {}).await.unwrap().into_inner();
        assert_eq!(s.state, "ready");
        assert_eq!(s.enclave_restarts, 0, "hostile input restarted the enclave");
        c.logoff(lsa::LogoffRequest { session_id: session }).await.unwrap();
    });
}
