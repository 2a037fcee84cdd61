//! The host side of hybrid vsock: the `CONNECT <port>\n` line a host client sends first, and
//! the replies it gets.

/// Longest `CONNECT` line accepted, newline included.
pub const MAX_CONNECT_LINE: usize = 32;

/// Why a `CONNECT` line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectLineError {
    /// No newline within [`MAX_CONNECT_LINE`] bytes.
    #[error("line too long")]
    TooLong,
    /// The line does not start with `CONNECT `.
    #[error("expected CONNECT <port>")]
    BadCommand,
    /// The port is not a decimal `u32`.
    #[error("bad port")]
    BadPort,
}

/// Outcome of feeding bytes to a [`ConnectLine`].
#[derive(Debug, PartialEq, Eq)]
pub enum LineStatus {
    /// No newline yet.
    Incomplete,
    /// The line named this port; the bytes after the newline are data for the guest.
    Connect {
        /// The guest port.
        port: u32,
        /// Bytes the client sent after the line.
        rest: Vec<u8>,
    },
}

/// Accumulates the `CONNECT` line of one client.
#[derive(Debug, Default)]
pub struct ConnectLine {
    buf: Vec<u8>,
}

impl ConnectLine {
    /// How many more bytes may be read before the line is too long (reads should not ask for
    /// more, so no data past the line is consumed beyond this bound).
    pub fn room(&self) -> usize {
        MAX_CONNECT_LINE - self.buf.len()
    }

    /// Adds bytes read from the client.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<LineStatus, ConnectLineError> {
        self.buf.extend_from_slice(bytes);
        let Some(nl) = self.buf.iter().position(|&b| b == b'\n') else {
            if self.buf.len() >= MAX_CONNECT_LINE {
                return Err(ConnectLineError::TooLong);
            }
            return Ok(LineStatus::Incomplete);
        };
        let port = parse_connect(&self.buf[..nl])?;
        let rest = self.buf[nl + 1..].to_vec();
        self.buf.clear();
        Ok(LineStatus::Connect { port, rest })
    }
}

/// Parses `CONNECT <port>` (without the newline; a trailing `\r` is allowed).
pub fn parse_connect(line: &[u8]) -> Result<u32, ConnectLineError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let port = line.strip_prefix(b"CONNECT ").ok_or(ConnectLineError::BadCommand)?;
    if port.is_empty() || port.len() > 10 || !port.iter().all(u8::is_ascii_digit) {
        return Err(ConnectLineError::BadPort);
    }
    std::str::from_utf8(port)
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .ok_or(ConnectLineError::BadPort)
}

/// The reply to an accepted connection: `OK <port>\n`, with the guest port the client asked for.
pub fn ok_line(port: u32) -> Vec<u8> {
    format!("OK {port}\n").into_bytes()
}

/// The reply to a refused `CONNECT` line or connection: `ERR <reason>\n`.
pub fn err_line(reason: &dyn std::fmt::Display) -> Vec<u8> {
    format!("ERR {reason}\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_connect_lines() {
        assert_eq!(parse_connect(b"CONNECT 7000"), Ok(7000));
        assert_eq!(parse_connect(b"CONNECT 7000\r"), Ok(7000));
        assert_eq!(parse_connect(b"CONNECT 4294967295"), Ok(u32::MAX));
        assert_eq!(parse_connect(b"CONNECT 4294967296"), Err(ConnectLineError::BadPort));
        assert_eq!(parse_connect(b"CONNECT x"), Err(ConnectLineError::BadPort));
        assert_eq!(parse_connect(b"CONNECT -1"), Err(ConnectLineError::BadPort));
        assert_eq!(parse_connect(b"CONNECT "), Err(ConnectLineError::BadPort));
        assert_eq!(parse_connect(b"connect 1"), Err(ConnectLineError::BadCommand));
    }

    #[test]
    fn line_split_across_reads_keeps_the_rest() {
        let mut l = ConnectLine::default();
        assert_eq!(l.feed(b"CONN"), Ok(LineStatus::Incomplete));
        assert_eq!(
            l.feed(b"ECT 5\nhello"),
            Ok(LineStatus::Connect {
                port: 5,
                rest: b"hello".to_vec()
            })
        );
    }

    #[test]
    fn overlong_line_is_refused() {
        let mut l = ConnectLine::default();
        assert_eq!(l.feed(&[b'A'; MAX_CONNECT_LINE]), Err(ConnectLineError::TooLong));
    }
}
