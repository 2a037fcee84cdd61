//! Writes the seed corpus of every fuzz target to `fuzz/corpus/<target>/`: well-formed inputs for
//! the fuzzer to start from (and that `cargo test` replays). Run: `cargo run --bin seeds` in
//! `fuzz/` (scripts/fuzz.sh does it when a corpus is missing).

use std::path::{Path, PathBuf};

use credguard_enclave::ntlm::sample::windows_challenge;
use credguard_proto::enclave::{
    EnclaveMethod, Frame, LogonRequest, NtlmAuthenticateRequest, StatusRequest, logon_request,
};
use credguard_proto::framing::encode_frame;
use credguard_vmm::devices::virtio::vsock::fuzz::{CLIENT_PORT, GUEST_CID, QUEUE_SIZE, queue_base};
use prost::Message;
use rasn::types::{Integer, OctetString};
use rasn_kerberos::{
    AsRep, EncryptedData, EtypeInfo2Entry, KdcRep, KerberosString, KerberosTime, KrbError, PaData, PrincipalName,
    TgsRep, Ticket,
};

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("creating the corpus directory");
    std::fs::write(d.join(name), bytes).expect("writing a seed");
}

fn framed(method: EnclaveMethod, payload: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(
        &Frame {
            call_id: 1,
            method_id: method.id(),
            payload,
            ..Default::default()
        },
        &mut out,
    );
    out
}

fn ks(s: &str) -> KerberosString {
    KerberosString::from_bytes(s.as_bytes()).expect("ASCII")
}

fn krbtgt() -> PrincipalName {
    PrincipalName {
        r#type: 2,
        string: vec![ks("krbtgt"), ks("R.TEST")],
    }
}

fn time(t: i64) -> KerberosTime {
    KerberosTime(chrono::DateTime::from_timestamp(t, 0).expect("a time").fixed_offset())
}

fn krb_error(code: i32, e_data: Option<Vec<u8>>) -> Vec<u8> {
    let e = KrbError {
        pvno: Integer::from(5),
        msg_type: Integer::from(30),
        ctime: None,
        cusec: None,
        stime: time(1_700_000_000),
        susec: Integer::from(0),
        error_code: code,
        crealm: None,
        cname: None,
        realm: ks("R.TEST"),
        sname: krbtgt(),
        e_text: None,
        e_data: e_data.map(OctetString::from),
    };
    rasn::der::encode(&e).expect("encoding KRB-ERROR")
}

fn kdc_rep(msg_type: i32) -> KdcRep {
    let etype_info = vec![EtypeInfo2Entry {
        etype: 18,
        salt: Some(ks("R.TESTalice")),
        s2kparams: None,
    }];
    KdcRep {
        pvno: Integer::from(5),
        msg_type: Integer::from(msg_type),
        padata: Some(vec![PaData {
            r#type: 19,
            value: OctetString::from(rasn::der::encode(&etype_info).expect("ETYPE-INFO2")),
        }]),
        crealm: ks("R.TEST"),
        cname: PrincipalName {
            r#type: 1,
            string: vec![ks("alice")],
        },
        ticket: Ticket {
            tkt_vno: Integer::from(5),
            realm: ks("R.TEST"),
            sname: krbtgt(),
            enc_part: EncryptedData {
                etype: 18,
                kvno: Some(1),
                cipher: OctetString::from(vec![0x42; 64]),
            },
        },
        enc_part: EncryptedData {
            etype: 18,
            kvno: None,
            cipher: OctetString::from(vec![0x24; 96]),
        },
    }
}

/// A vsock packet header (virtio spec 5.10.6), little-endian.
#[allow(clippy::too_many_arguments)]
fn vsock_header(src_port: u32, dst_port: u32, len: u32, op: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(&GUEST_CID.to_le_bytes());
    h.extend_from_slice(&2u64.to_le_bytes());
    h.extend_from_slice(&src_port.to_le_bytes());
    h.extend_from_slice(&dst_port.to_le_bytes());
    h.extend_from_slice(&len.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes()); // stream
    h.extend_from_slice(&op.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes()); // flags
    h.extend_from_slice(&(64u32 << 10).to_le_bytes()); // buf_alloc
    h.extend_from_slice(&0u32.to_le_bytes()); // fwd_cnt
    h
}

/// Guest memory as a driver would leave it: four rx buffers posted, and on the tx queue a
/// RESPONSE to the host client's request and a data packet.
fn vsock_memory() -> Vec<u8> {
    let mut m = vec![0u8; 0xa000];
    let put = |m: &mut Vec<u8>, at: u64, b: &[u8]| m[at as usize..at as usize + b.len()].copy_from_slice(b);
    let desc = |m: &mut Vec<u8>, q: u64, i: u64, addr: u64, len: u32, flags: u16| {
        let d = queue_base(q) + i * 16;
        put(m, d, &addr.to_le_bytes());
        put(m, d + 8, &len.to_le_bytes());
        put(m, d + 12, &flags.to_le_bytes());
    };
    let avail = |m: &mut Vec<u8>, q: u64, heads: &[u16]| {
        let a = queue_base(q) + 0x100;
        for (i, h) in heads.iter().enumerate() {
            put(m, a + 4 + 2 * i as u64, &h.to_le_bytes());
        }
        put(m, a + 2, &(heads.len() as u16).to_le_bytes());
    };
    for i in 0..4 {
        desc(&mut m, 0, i, 0x1000 + i * 0x1000, 0x1000, 2);
    }
    avail(&mut m, 0, &[0, 1, 2, 3]);
    let host_port = 1u32 << 30; // the device's first host-side port
    let response = vsock_header(CLIENT_PORT, host_port, 0, 2);
    let mut rw = vsock_header(CLIENT_PORT, host_port, 5, 5);
    rw.extend_from_slice(b"hello");
    put(&mut m, 0x8000, &response);
    put(&mut m, 0x9000, &rw);
    desc(&mut m, 1, 0, 0x8000, response.len() as u32, 0);
    desc(&mut m, 1, 1, 0x9000, rw.len() as u32, 0);
    avail(&mut m, 1, &[0, 1]);
    assert!(QUEUE_SIZE >= 4);
    m
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");

    // The enclave's request stream: a raw stream (even first byte, then the piece size) and
    // payloads for a method (odd first byte = 4 * method index + 1, + 2 to fill in the live
    // session handle or NTLM context id as field 1).
    let status = framed(EnclaveMethod::Status, StatusRequest {}.encode_to_vec());
    let logon = LogonRequest {
        user: "alice".into(),
        domain: "CORP".into(),
        secret: Some(logon_request::Secret::Password("pw".into())),
        ..Default::default()
    }
    .encode_to_vec();
    let mut raw = vec![0u8, 7];
    raw.extend_from_slice(&status);
    raw.extend_from_slice(&framed(EnclaveMethod::Logon, logon.clone()));
    write(&dir, "enclave_request", "stream", &raw);
    let mut m = vec![5u8]; // method 1: Logon
    m.extend_from_slice(&logon);
    write(&dir, "enclave_request", "logon", &m);
    let auth = NtlmAuthenticateRequest {
        challenge_message: windows_challenge(),
        target_spn: "HTTP/web.test".into(),
        ..Default::default()
    };
    let mut m = vec![4 * 6 + 3]; // method 6: NtlmAuthenticate, with the live context id
    m.extend_from_slice(&auth.encode_to_vec());
    write(&dir, "enclave_request", "ntlm_authenticate", &m);
    // Every method with an empty payload, with and without the live handle.
    for method in 0..11u8 {
        write(&dir, "enclave_request", &format!("empty_{method}"), &[4 * method + 1]);
        write(&dir, "enclave_request", &format!("handle_{method}"), &[4 * method + 3]);
    }

    // NTLM CHALLENGE: a Windows-shaped one, and one without target info.
    let c = windows_challenge();
    write(&dir, "ntlm_challenge", "windows", &c);
    write(&dir, "ntlm_challenge", "header_only", &c[..48]);
    // The same target parses its bytes as a caller's own NEGOTIATE too.
    write(
        &dir,
        "ntlm_challenge",
        "windows_negotiate",
        &credguard_enclave::ntlm::sample::windows_negotiate(),
    );

    // Kerberos: PREAUTH_REQUIRED with ETYPE-INFO2, a clock skew error, an AS-REP, a TGS-REP.
    let info = vec![
        EtypeInfo2Entry {
            etype: 18,
            salt: Some(ks("R.TESTalice")),
            s2kparams: None,
        },
        EtypeInfo2Entry {
            etype: 20,
            salt: None,
            s2kparams: Some(OctetString::from(vec![0, 0, 0x80, 0])),
        },
    ];
    let pa = vec![PaData {
        r#type: 19,
        value: OctetString::from(rasn::der::encode(&info).expect("ETYPE-INFO2")),
    }];
    let e_data = rasn::der::encode(&pa).expect("METHOD-DATA");
    write(&dir, "kerberos_reply", "preauth_required", &krb_error(25, Some(e_data)));
    write(&dir, "kerberos_reply", "clock_skew", &krb_error(37, None));
    let as_rep = rasn::der::encode(&AsRep(kdc_rep(11))).expect("AS-REP");
    write(&dir, "kerberos_reply", "as_rep", &as_rep);
    let tgs_rep = rasn::der::encode(&TgsRep(kdc_rep(13))).expect("TGS-REP");
    write(&dir, "kerberos_reply", "tgs_rep", &tgs_rep);

    // vsock: a guest's memory image (even first byte), and a driver setup as register writes
    // (odd first byte; 5 bytes each: offset / 2 with the low bit clear, value).
    let mut v = vec![0u8];
    v.extend_from_slice(&vsock_memory());
    write(&dir, "vsock_queues", "rings", &v);
    let mut regs = vec![1u8];
    for (offset, value) in [
        (0x070u32, 0u32),
        (0x070, 3),
        (0x024, 1),
        (0x020, 1),
        (0x070, 11),
        (0x030, 1),
        (0x038, 16),
        (0x080, 0x400),
        (0x090, 0x500),
        (0x0a0, 0x600),
        (0x044, 1),
        (0x070, 15),
        (0x050, 1),
    ] {
        regs.push((offset / 2) as u8);
        regs.extend_from_slice(&value.to_le_bytes());
    }
    write(&dir, "vsock_queues", "registers", &regs);
    println!("seeds written to {}", dir.display());
}
