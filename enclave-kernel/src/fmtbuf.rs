//! A fixed-capacity `fmt::Write` sink: formatting that never allocates (for panics and logs).

use core::fmt;

/// Formats into `N` bytes; output past the capacity is dropped and [`FixedBuf::truncated`] set.
pub struct FixedBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
    truncated: bool,
}

impl<const N: usize> Default for FixedBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FixedBuf<N> {
    /// An empty buffer.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
            truncated: false,
        }
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Whether some output was dropped.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Replaces the last bytes with `tail` if the output was truncated (e.g. to keep a newline).
    pub fn finish_with(&mut self, tail: &[u8]) {
        let tail = &tail[..tail.len().min(N)];
        if self.len + tail.len() > N {
            self.len = N - tail.len();
        }
        self.buf[self.len..self.len + tail.len()].copy_from_slice(tail);
        self.len += tail.len();
    }
}

impl<const N: usize> fmt::Write for FixedBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = N - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() {
            self.truncated = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn truncates_and_keeps_tail() {
        let mut b = FixedBuf::<8>::new();
        b.write_str("hello").unwrap();
        assert_eq!(b.as_bytes(), b"hello");
        assert!(!b.truncated());
        write!(b, " world").unwrap();
        assert_eq!(b.as_bytes(), b"hello wo");
        assert!(b.truncated());
        b.finish_with(b"\n");
        assert_eq!(b.as_bytes(), b"hello w\n");
        let mut c = FixedBuf::<8>::new();
        c.finish_with(b"\n");
        assert_eq!(c.as_bytes(), b"\n");
    }
}
