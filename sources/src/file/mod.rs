//! File replay: JSON lines from files or standard input, with their source positions.
//!
//! Each line is read as bytes and decoded as UTF-8 lossily (an invalid byte becomes U+FFFD; the line
//! is never dropped: outside a JSON string the parser refuses it, inside one the text keeps the
//! replacement character). Blank lines are skipped; the position of a line is its 1-based line
//! number in its file, so a dead letter points at the exact line.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use smol_str::SmolStr;

/// One line read from a source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLine {
    /// File name, or `stdin`.
    pub source: SmolStr,
    /// 1-based line number within the source.
    pub position: u64,
    /// The line, without its newline.
    pub raw: String,
}

/// Errors reading a replay source.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The path given.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Reading failed part-way.
    #[error("reading {name} at line {line}: {source}")]
    Read {
        /// Source name.
        name: SmolStr,
        /// Line being read.
        line: u64,
        /// The cause.
        source: io::Error,
    },
}

/// The longest line read whole (1 MiB; an input line is a few hundred bytes): a longer one is cut
/// to its first [`KEPT_OF_LONG_LINE`] bytes, which do not parse and become a dead letter.
pub const MAX_LINE: usize = 1 << 20;
/// What is kept of a line longer than [`MAX_LINE`].
pub const KEPT_OF_LONG_LINE: usize = 4096;

/// Lines of several sources, one after the other (`-` is standard input).
pub struct Replay {
    pending: Vec<PathBuf>,
    current: Option<(SmolStr, Box<dyn BufRead>, u64)>,
    buf: Vec<u8>,
}

impl Replay {
    /// Replays `paths` in order.
    pub fn new(paths: &[PathBuf]) -> Replay {
        let mut pending = paths.to_vec();
        pending.reverse();
        Replay { pending, current: None, buf: Vec::new() }
    }

    /// Replays any reader (for tests and pipes) under the name `name`.
    pub fn from_reader(name: &str, reader: impl Read + 'static) -> Replay {
        Replay {
            pending: Vec::new(),
            current: Some((name.into(), Box::new(BufReader::new(reader)), 0)),
            buf: Vec::new(),
        }
    }

    fn open(path: &Path) -> Result<(SmolStr, Box<dyn BufRead>), ReplayError> {
        if path == Path::new("-") {
            return Ok(("stdin".into(), Box::new(BufReader::new(io::stdin()))));
        }
        let f = File::open(path).map_err(|source| ReplayError::Open { path: path.to_owned(), source })?;
        let name =
            path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
        Ok((name.into(), Box::new(BufReader::with_capacity(1 << 20, f))))
    }
}

impl Iterator for Replay {
    type Item = Result<SourceLine, ReplayError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.current.is_none() {
                let path = self.pending.pop()?;
                match Self::open(&path) {
                    Ok((name, reader)) => self.current = Some((name, reader, 0)),
                    Err(e) => return Some(Err(e)),
                }
            }
            let (name, reader, line) = self.current.as_mut().expect("just set");
            self.buf.clear();
            match (&mut **reader).take(MAX_LINE as u64).read_until(b'\n', &mut self.buf) {
                Ok(0) => self.current = None,
                Ok(n) => {
                    *line += 1;
                    if n == MAX_LINE && self.buf.last() != Some(&b'\n') {
                        // Longer than any input line: its start goes on (to be refused as a line
                        // that does not parse, with its position), the rest is skipped, and
                        // memory stays bounded.
                        tracing::warn!(source = %name, line = *line, max = MAX_LINE, "line too long: cut");
                        self.buf.truncate(KEPT_OF_LONG_LINE);
                        if let Err(source) = reader.skip_until(b'\n') {
                            let err = ReplayError::Read { name: name.clone(), line: *line, source };
                            self.current = None;
                            return Some(Err(err));
                        }
                    }
                    while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
                        self.buf.pop();
                    }
                    if self.buf.iter().all(|b| b.is_ascii_whitespace()) {
                        continue;
                    }
                    // The line's bytes become its String without a copy when they are UTF-8 (the
                    // usual case; a lossy copy otherwise). The String keeps the buffer's spare
                    // capacity (the previous line's length plus 64, or what reading this one took).
                    let next = Vec::with_capacity(self.buf.len() + 64);
                    let bytes = std::mem::replace(&mut self.buf, next);
                    let raw =
                        String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                    return Some(Ok(SourceLine { source: name.clone(), position: *line, raw }));
                }
                Err(source) => {
                    let err = ReplayError::Read { name: name.clone(), line: *line + 1, source };
                    self.current = None;
                    return Some(Err(err));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_lines_and_skips_blanks() {
        let data = b"{\"a\":1}\n\n{\"b\":2}\r\n\xff\n".to_vec();
        let lines: Vec<_> = Replay::from_reader("t.jsonl", io::Cursor::new(data)).map(|l| l.unwrap()).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!((lines[1].position, lines[1].raw.as_str()), (3, "{\"b\":2}"));
        assert_eq!(lines[2].raw, "\u{fffd}");
        assert_eq!(lines[0].source, "t.jsonl");
    }

    #[test]
    fn a_line_longer_than_the_limit_is_cut_and_the_next_lines_read_on() {
        let mut data = b"{\"a\":1}\n{\"long\":\"".to_vec();
        data.extend(std::iter::repeat_n(b'x', MAX_LINE * 3));
        data.extend_from_slice(b"\"}\n{\"b\":2}\n");
        let lines: Vec<_> = Replay::from_reader("t.jsonl", io::Cursor::new(data)).map(|l| l.unwrap()).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1].position, 2);
        assert_eq!(lines[1].raw.len(), KEPT_OF_LONG_LINE);
        assert!(lines[1].raw.starts_with("{\"long\":\"xxx"));
        assert_eq!((lines[2].position, lines[2].raw.as_str()), (3, "{\"b\":2}"));
    }
}
