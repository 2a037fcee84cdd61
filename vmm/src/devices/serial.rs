//! The enclave's serial console: a 16550 UART at [`abi::SERIAL_PORT`] whose output becomes
//! lines of the VMM's log.
//!
//! The guest is untrusted, so its output is bounded everywhere: lines are cut at
//! [`MAX_LINE_LEN`] bytes, at most [`MAX_LINES_PER_SECOND`] lines reach the log per second (the
//! rest are counted and reported as one line), control characters are escaped so the guest cannot
//! forge log lines or terminal sequences, and only the last [`RECENT_LINES`] lines are kept for a
//! panic report.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use credguard_proto::abi;
use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};

/// Longest line kept; longer output is split into lines of this length.
pub const MAX_LINE_LEN: usize = 512;
/// Lines logged per second before the rest are dropped (and counted).
pub const MAX_LINES_PER_SECOND: u32 = 50;
/// Lines kept for [`SerialConsole::recent_lines`].
pub const RECENT_LINES: usize = 20;
/// Number of I/O ports the UART decodes, from [`abi::SERIAL_PORT`].
pub const PORT_COUNT: u16 = 8;

const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Errors of the serial console.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// The UART model refused a register write.
    #[error("serial register write at offset {offset}: {reason}")]
    Write {
        /// Register offset from [`abi::SERIAL_PORT`].
        offset: u8,
        /// The UART model's error.
        reason: String,
    },
}

/// The enclave's serial interrupt is not wired (the enclave polls the line status), so the UART's
/// interrupt requests go nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoInterrupt;

impl Trigger for NoInterrupt {
    type E = io::Error;

    fn trigger(&self) -> Result<(), Self::E> {
        Ok(())
    }
}

/// Splits the UART's byte stream into log lines, with the bounds described in the module docs.
#[derive(Debug)]
pub struct LineLog {
    current: Vec<u8>,
    recent: VecDeque<String>,
    window_start: Option<Instant>,
    logged_in_window: u32,
    dropped: u64,
}

impl Default for LineLog {
    fn default() -> Self {
        Self::new()
    }
}

impl LineLog {
    /// An empty log.
    pub fn new() -> Self {
        LineLog {
            current: Vec::with_capacity(128),
            recent: VecDeque::with_capacity(RECENT_LINES),
            window_start: None,
            logged_in_window: 0,
            dropped: 0,
        }
    }

    /// Feeds one byte of guest output, as of `now`.
    pub fn push_byte(&mut self, byte: u8, now: Instant) {
        match byte {
            b'\n' => self.finish_line(now),
            // Carriage returns come with newlines from most consoles; dropping them keeps the
            // log free of stray `\r`.
            b'\r' => {}
            _ => {
                self.current.push(byte);
                if self.current.len() >= MAX_LINE_LEN {
                    self.finish_line(now);
                }
            }
        }
    }

    /// Ends the current partial line, if any (the guest stopped mid-line).
    pub fn flush(&mut self, now: Instant) {
        if !self.current.is_empty() {
            self.finish_line(now);
        }
    }

    /// The last [`RECENT_LINES`] lines, oldest first, whether or not they were rate limited.
    pub fn recent_lines(&self) -> Vec<String> {
        self.recent.iter().cloned().collect()
    }

    /// Lines dropped by the rate limit so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn finish_line(&mut self, now: Instant) {
        let line = sanitize(&self.current);
        self.current.clear();
        if self.admit(now) {
            tracing::info!(target: "enclave", "{line}");
        }
        if self.recent.len() == RECENT_LINES {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
    }

    /// Whether a line finished at `now` may be logged; reports the drops of the previous window
    /// when a new one starts.
    fn admit(&mut self, now: Instant) -> bool {
        let expired = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= RATE_WINDOW);
        if expired {
            if self.logged_in_window > MAX_LINES_PER_SECOND {
                let n = self.logged_in_window - MAX_LINES_PER_SECOND;
                tracing::warn!(target: "enclave", "{n} lines dropped (more than {MAX_LINES_PER_SECOND} lines per second)");
            }
            self.window_start = Some(now);
            self.logged_in_window = 0;
        }
        self.logged_in_window = self.logged_in_window.saturating_add(1);
        if self.logged_in_window > MAX_LINES_PER_SECOND {
            self.dropped += 1;
            false
        } else {
            true
        }
    }
}

/// Guest bytes as printable text: invalid UTF-8 is replaced and control characters are escaped,
/// so a guest cannot inject log lines or terminal escape sequences.
fn sanitize(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Hands each byte the UART transmits to the [`LineLog`].
#[derive(Debug, Default)]
pub struct LineWriter {
    log: LineLog,
}

impl io::Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let now = Instant::now();
        for &b in buf {
            self.log.push_byte(b, now);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // The UART flushes after every byte; a line only ends at a newline.
        Ok(())
    }
}

/// The serial console device: the UART model plus its line log.
pub struct SerialConsole {
    uart: Serial<NoInterrupt, NoEvents, LineWriter>,
}

impl std::fmt::Debug for SerialConsole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialConsole")
            .field("log", &self.uart.writer().log)
            .finish()
    }
}

impl Default for SerialConsole {
    fn default() -> Self {
        Self::new()
    }
}

impl SerialConsole {
    /// A console with an empty log.
    pub fn new() -> Self {
        SerialConsole {
            uart: Serial::new(NoInterrupt, LineWriter::default()),
        }
    }

    /// Whether `port` is one of the UART's registers.
    pub fn handles(port: u16) -> bool {
        (abi::SERIAL_PORT..abi::SERIAL_PORT + PORT_COUNT).contains(&port)
    }

    /// An `out` to `port`. A `rep outsb` arrives as one exit with many bytes: each is a separate
    /// register write, as it would be on the hardware.
    pub fn pio_write(&mut self, port: u16, data: &[u8]) -> Result<(), SerialError> {
        let offset = Self::offset(port);
        for &b in data {
            self.uart.write(offset, b).map_err(|e| SerialError::Write {
                offset,
                reason: format!("{e:?}"),
            })?;
        }
        Ok(())
    }

    /// An `in` from `port`.
    pub fn pio_read(&mut self, port: u16, data: &mut [u8]) {
        let offset = Self::offset(port);
        for b in data.iter_mut() {
            *b = self.uart.read(offset);
        }
    }

    /// Ends a partial last line so it is logged and kept.
    pub fn flush(&mut self) {
        self.uart.writer_mut().log.flush(Instant::now());
    }

    /// The last lines of output, oldest first.
    pub fn recent_lines(&self) -> Vec<String> {
        self.uart.writer().log.recent_lines()
    }

    fn offset(port: u16) -> u8 {
        // `handles` bounds the port, so the offset is below 8.
        (port.wrapping_sub(abi::SERIAL_PORT) & (PORT_COUNT - 1)) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rep_outsb_bytes_become_lines() {
        let mut console = SerialConsole::new();
        console.pio_write(abi::SERIAL_PORT, b"hello\r\nwor").unwrap();
        console.pio_write(abi::SERIAL_PORT, b"ld\n").unwrap();
        console.pio_write(abi::SERIAL_PORT, b"partial").unwrap();
        console.flush();
        assert_eq!(console.recent_lines(), vec!["hello", "world", "partial"]);
    }

    #[test]
    fn long_lines_are_cut() {
        let mut log = LineLog::new();
        let now = Instant::now();
        for _ in 0..MAX_LINE_LEN * 2 + 3 {
            log.push_byte(b'x', now);
        }
        log.flush(now);
        let lines = log.recent_lines();
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE_LEN));
    }

    #[test]
    fn rate_limit_drops_and_keeps_recent() {
        let mut log = LineLog::new();
        let t0 = Instant::now();
        for i in 0..200u32 {
            for b in format!("line {i}\n").bytes() {
                log.push_byte(b, t0);
            }
        }
        assert_eq!(log.dropped(), 150);
        let recent = log.recent_lines();
        assert_eq!(recent.len(), RECENT_LINES);
        assert_eq!(recent.last().map(String::as_str), Some("line 199"));
        // A new window logs again.
        for b in b"later\n" {
            log.push_byte(*b, t0 + Duration::from_secs(2));
        }
        assert_eq!(log.dropped(), 150);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(sanitize(b"a\x1b[31mb\tc"), "a\\u{1b}[31mb\tc");
        assert_eq!(sanitize(&[0xff, b'a']), "\u{fffd}a");
    }

    #[test]
    fn line_status_reports_transmitter_empty() {
        let mut console = SerialConsole::new();
        let mut lsr = [0u8];
        console.pio_read(abi::SERIAL_PORT + 5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "THR empty bit");
    }
}
