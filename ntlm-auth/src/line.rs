//! Lines of standard input, each at most a given length: a caller (or anything that can write to
//! the helper's input) cannot make it buffer without bound.

use std::io::{self, BufRead};

/// What [`read_line`] read.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line, without its `\n` (or `\r\n`). The last line of the input may lack the `\n`.
    Complete(Vec<u8>),
    /// A line longer than the limit; it was read to its end and dropped.
    TooLong,
    /// The end of the input.
    Eof,
}

/// Reads one line of at most `max` bytes (not counting its end) from `r`.
pub fn read_line(r: &mut impl BufRead, max: usize) -> io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(match (too_long, line.is_empty()) {
                (true, _) => Line::TooLong,
                (false, true) => Line::Eof,
                (false, false) => finish(line, max),
            });
        }
        let (chunk, used, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        // One byte over the bound for a `\r` before the `\n`, checked once the line is whole.
        if !too_long && line.len() + chunk.len() <= max.saturating_add(1) {
            line.extend_from_slice(chunk);
        } else {
            too_long = true;
            line = Vec::new();
        }
        r.consume(used);
        if end {
            return Ok(if too_long { Line::TooLong } else { finish(line, max) });
        }
    }
}

fn finish(mut line: Vec<u8>, max: usize) -> Line {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if line.len() > max {
        Line::TooLong
    } else {
        Line::Complete(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<Line> {
        // A tiny buffer, so that lines arrive in pieces as they do from a pipe.
        let mut r = io::BufReader::with_capacity(3, input);
        let mut out = Vec::new();
        loop {
            let l = read_line(&mut r, max).unwrap();
            let eof = l == Line::Eof;
            out.push(l);
            if eof {
                return out;
            }
        }
    }

    fn complete(s: &str) -> Line {
        Line::Complete(s.as_bytes().to_vec())
    }

    #[test]
    fn lines_are_split_and_bounded() {
        assert_eq!(
            lines(b"YR\nTT abc\r\n\nlast", 8),
            [
                complete("YR"),
                complete("TT abc"),
                complete(""),
                complete("last"),
                Line::Eof
            ]
        );
        // Too long: dropped to its end, and the next line is read as usual.
        assert_eq!(
            lines(b"123456789\nYR\n12345678\n", 8),
            [Line::TooLong, complete("YR"), complete("12345678"), Line::Eof]
        );
        assert_eq!(lines(b"1234567890", 8), [Line::TooLong, Line::Eof]);
        assert_eq!(lines(b"", 8), [Line::Eof]);
        // A long line without an end never grows the buffer past the bound.
        let big = vec![b'a'; 1 << 20];
        assert_eq!(lines(&big, 100), [Line::TooLong, Line::Eof]);
    }
}
