//! A CHALLENGE message shaped like a Windows server's, for tests and benchmarks on both sides of
//! the boundary (the enclave's unit tests, the end-to-end tests, the NTLM benchmark), so that they
//! all exercise the same message.

use alloc::vec::Vec;

/// The DNS computer name in [`windows_challenge`]'s target info (an audit record's target).
pub const SERVER_DNS_NAME: &str = "server.corp.test";

/// A CHALLENGE with NTLMv2 flags (0xe28a8235), server challenge 0102030405060708, version
/// 10.0 build 0, and target info with NetBIOS and DNS domain and computer names and a timestamp.
pub fn windows_challenge() -> Vec<u8> {
    let utf16 = |s: &str| s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect::<Vec<u8>>();
    let mut ti = Vec::new();
    for (id, v) in [
        (2u16, utf16("CORP")),
        (1, utf16("SERVER")),
        (4, utf16("corp.test")),
        (3, utf16(SERVER_DNS_NAME)),
        (7, 0x01dc_0000_0000_0000u64.to_le_bytes().to_vec()),
    ] {
        ti.extend_from_slice(&id.to_le_bytes());
        ti.extend_from_slice(&(v.len() as u16).to_le_bytes());
        ti.extend_from_slice(&v);
    }
    ti.extend_from_slice(&[0; 4]);
    let mut m = b"NTLMSSP\0".to_vec();
    m.extend_from_slice(&2u32.to_le_bytes());
    m.extend_from_slice(&[0, 0, 0, 0, 56, 0, 0, 0]);
    m.extend_from_slice(&0xe28a_8235u32.to_le_bytes());
    m.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    m.extend_from_slice(&[0; 8]);
    m.extend_from_slice(&(ti.len() as u16).to_le_bytes());
    m.extend_from_slice(&(ti.len() as u16).to_le_bytes());
    m.extend_from_slice(&56u32.to_le_bytes());
    m.extend_from_slice(&[10, 0, 0, 0, 0, 0, 0, 15]);
    m.extend_from_slice(&ti);
    m
}

/// The workstation name in [`windows_negotiate`].
pub const CLIENT_WORKSTATION: &str = "WS01";

/// A NEGOTIATE shaped like a Windows client's, as SPNEGO or gss-ntlmssp build their own: flags
/// 0xe2088297 (OEM and LM_KEY asked for besides Unicode and extended session security, as
/// Windows does), the OEM domain "CORP" and workstation [`CLIENT_WORKSTATION`], and a Version.
pub fn windows_negotiate() -> Vec<u8> {
    let mut m = b"NTLMSSP\0".to_vec();
    m.extend_from_slice(&1u32.to_le_bytes());
    m.extend_from_slice(&0xe208_8297u32.to_le_bytes());
    // DomainNameFields then WorkstationFields, their payloads after the 40-byte header.
    m.extend_from_slice(&[4, 0, 4, 0, 40, 0, 0, 0]);
    m.extend_from_slice(&[4, 0, 4, 0, 44, 0, 0, 0]);
    m.extend_from_slice(&[10, 0, 0x63, 0x45, 0, 0, 0, 15]);
    m.extend_from_slice(b"CORP");
    m.extend_from_slice(CLIENT_WORKSTATION.as_bytes());
    m
}
