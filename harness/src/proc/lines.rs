//! Bounded line capture: one channel's bytes turned into lines under the channel's [`Bounds`].
//! What mmx reads from a child's pipe or socket goes through here and nowhere else.
//!
//! Memory is bounded whatever arrives: one partial line of at most `max_line` bytes, a tail of
//! [`TAIL_LINES`] lines of at most [`TAIL_LINE_CHARS`] characters, a buffered log writer. A line
//! longer than `max_line` is delivered once, cut, and the rest of it up to its newline is counted
//! and dropped; past `max_bytes` the channel is *flooded*: the log ends with a marker and nothing
//! more is read. Bytes that are not UTF-8 become U+FFFD in the delivered text and are counted;
//! the log keeps the bytes as they came.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};

/// How much one channel may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// A longer line is cut there, marked and counted.
    pub max_line: usize,
    /// Past this many bytes the channel is *flooded*: reading stops.
    pub max_bytes: u64,
}

/// What one channel carried, and what the bounds did to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub bytes: u64,
    pub lines: u64,
    /// Lines longer than the limit, cut and marked.
    pub lines_cut: u64,
    /// Bytes that were not UTF-8 (decoded as U+FFFD).
    pub invalid_utf8: u64,
    /// The channel passed its byte budget and the rest was not read.
    pub flooded: bool,
}

/// Lines of each channel kept for excerpts (a timeout's evidence, a panic's lead-up).
pub const TAIL_LINES: usize = 40;
/// Characters of a line kept in the tail: an excerpt is for reading, not for whole result lines.
pub const TAIL_LINE_CHARS: usize = 1024;

/// A line as the reader hands it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Lossily decoded, without its `\n` or trailing `\r`.
    pub text: String,
    /// Longer than the channel's `max_line`: this is its beginning.
    pub cut: bool,
}

/// The bounded reader of one channel.
#[derive(Debug)]
pub struct LineReader {
    bounds: Bounds,
    partial: Vec<u8>,
    /// Inside a cut line: bytes are dropped up to its newline.
    skipping: bool,
    log: Option<BufWriter<File>>,
    stats: Stats,
    tail: VecDeque<String>,
    /// EOF or flood: nothing more is read.
    closed: bool,
}

impl LineReader {
    pub fn new(bounds: Bounds, log: Option<File>) -> LineReader {
        LineReader {
            bounds,
            partial: Vec::new(),
            skipping: false,
            log: log.map(BufWriter::new),
            stats: Stats::default(),
            tail: VecDeque::new(),
            closed: false,
        }
    }

    /// Take bytes as read; returns the lines they complete. Past the byte budget only the bytes
    /// within it are taken and the channel is closed as flooded ([`LineReader::flooded`]).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Line> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        let room = self.bounds.max_bytes.saturating_sub(self.stats.bytes);
        let over = u64::try_from(bytes.len()).unwrap_or(u64::MAX) > room;
        let take = if over {
            &bytes[..usize::try_from(room).unwrap_or(usize::MAX).min(bytes.len())]
        } else {
            bytes
        };
        self.stats.bytes += take.len() as u64;
        self.split(take, &mut out);
        if over {
            self.flood();
        }
        self.flush();
        out
    }

    /// The writer is gone: a last line without its newline is still a line.
    pub fn finish(&mut self) -> Vec<Line> {
        let mut out = Vec::new();
        if !self.closed {
            if !self.partial.is_empty() {
                out.push(self.complete(false));
            }
            self.closed = true;
        }
        self.flush();
        out
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn flooded(&self) -> bool {
        self.stats.flooded
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    /// The last lines, oldest first.
    pub fn tail(&self) -> impl Iterator<Item = &str> {
        self.tail.iter().map(String::as_str)
    }

    fn split(&mut self, mut rest: &[u8], out: &mut Vec<Line>) {
        let max = self.bounds.max_line;
        while !rest.is_empty() {
            let newline = rest.iter().position(|b| *b == b'\n');
            if self.skipping {
                match newline {
                    Some(i) => {
                        self.skipping = false;
                        rest = &rest[i + 1..];
                    }
                    None => rest = &[],
                }
                continue;
            }
            let room = max.saturating_sub(self.partial.len());
            match newline {
                Some(i) if i <= room => {
                    self.partial.extend_from_slice(&rest[..i]);
                    out.push(self.complete(false));
                    rest = &rest[i + 1..];
                }
                None if rest.len() <= room => {
                    self.partial.extend_from_slice(rest);
                    rest = &[];
                }
                // More than the line may hold before its newline (or none in sight): cut here.
                Some(_) | None => {
                    self.partial.extend_from_slice(&rest[..room]);
                    rest = &rest[room..];
                    out.push(self.complete(true));
                    self.skipping = true;
                }
            }
        }
    }

    /// Deliver the partial line: log it as it came, decode it, keep it in the tail.
    fn complete(&mut self, cut: bool) -> Line {
        let raw = std::mem::take(&mut self.partial);
        self.stats.lines += 1;
        if cut {
            self.stats.lines_cut += 1;
        }
        if let Some(log) = self.log.as_mut() {
            let _ = log.write_all(&raw);
            if cut {
                let _ = write!(
                    log,
                    " [mmx: line cut: longer than {} bytes]",
                    self.bounds.max_line
                );
            }
            let _ = log.write_all(b"\n");
        }
        let mut text = decode(&raw, &mut self.stats.invalid_utf8);
        if text.ends_with('\r') {
            text.pop();
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail
            .push_back(text.chars().take(TAIL_LINE_CHARS).collect());
        Line { text, cut }
    }

    fn flood(&mut self) {
        self.stats.flooded = true;
        self.closed = true;
        if let Some(log) = self.log.as_mut() {
            if !self.partial.is_empty() && !self.skipping {
                let _ = log.write_all(&self.partial);
                let _ = log.write_all(b"\n");
            }
            let _ = writeln!(
                log,
                "[mmx: output stopped: more than {} bytes on this channel]",
                self.bounds.max_bytes
            );
        }
        self.partial = Vec::new();
    }

    fn flush(&mut self) {
        if let Some(log) = self.log.as_mut() {
            let _ = log.flush();
        }
    }
}

/// `bytes` as text, every invalid sequence one U+FFFD; adds the invalid bytes to `invalid`.
pub fn decode(bytes: &[u8], invalid: &mut u64) -> String {
    let mut s = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        s.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            *invalid += chunk.invalid().len() as u64;
            s.push(char::REPLACEMENT_CHARACTER);
        }
    }
    s
}

/// The last `n` non-blank lines of `lines`, for a report: enough to see what led up to the end.
/// Terminal escape characters (firmware, a hostile guest) are dropped so the excerpt reads as
/// text.
pub fn excerpt<'a>(lines: impl Iterator<Item = &'a str>, n: usize) -> String {
    let kept: Vec<&str> = lines
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    let tail = &kept[kept.len().saturating_sub(n)..];
    tail.join("\n").chars().filter(|c| *c != '\u{1b}').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(max_line: usize, max_bytes: u64) -> LineReader {
        LineReader::new(
            Bounds {
                max_line,
                max_bytes,
            },
            None,
        )
    }

    fn texts(lines: Vec<Line>) -> Vec<(String, bool)> {
        lines.into_iter().map(|l| (l.text, l.cut)).collect()
    }

    #[test]
    fn lines_split_across_reads_and_carriage_returns_go() {
        let mut r = reader(100, 1000);
        assert!(r.push(b"Linux ver").is_empty());
        assert_eq!(
            texts(r.push(b"sion 6.1\r\nnext\n")),
            [("Linux version 6.1".into(), false), ("next".into(), false)]
        );
        assert_eq!(texts(r.finish()), []);
        let mut r = reader(100, 1000);
        r.push(b"no newline");
        assert_eq!(texts(r.finish()), [("no newline".into(), false)]);
        assert_eq!(r.stats().lines, 1);
    }

    #[test]
    fn a_long_line_is_cut_once_and_the_rest_dropped_up_to_its_newline() {
        let mut r = reader(4, 1000);
        assert_eq!(texts(r.push(b"abcd\n")), [("abcd".into(), false)]);
        assert_eq!(texts(r.push(b"abcdefgh")), [("abcd".into(), true)]);
        assert!(r.push(b"ijklmnop").is_empty(), "still the cut line");
        assert_eq!(texts(r.push(b"qr\nok\n")), [("ok".into(), false)]);
        assert_eq!(r.stats().lines_cut, 1);
        assert_eq!(r.stats().lines, 3);
        assert_eq!(r.stats().bytes, 5 + 8 + 8 + 6);
    }

    #[test]
    fn past_the_budget_the_channel_is_flooded_and_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut r = LineReader::new(
            Bounds {
                max_line: 100,
                max_bytes: 10,
            },
            Some(File::create(&path).unwrap()),
        );
        assert_eq!(texts(r.push(b"12345\n")), [("12345".into(), false)]);
        assert!(!r.flooded());
        // 4 more bytes fit (10 in all), the 5th does not.
        assert!(r.push(b"abcdefgh\n").is_empty());
        assert!(r.flooded() && r.is_closed());
        assert_eq!(r.stats().bytes, 10);
        assert!(r.push(b"more\n").is_empty());
        assert!(r.finish().is_empty());
        let log = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            log,
            "12345\nabcd\n[mmx: output stopped: more than 10 bytes on this channel]\n"
        );
    }

    #[test]
    fn exactly_the_budget_is_not_a_flood() {
        let mut r = reader(100, 6);
        assert_eq!(texts(r.push(b"12345\n")), [("12345".into(), false)]);
        assert!(!r.flooded());
    }

    #[test]
    fn invalid_bytes_are_replaced_counted_and_logged_as_they_came() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut r = LineReader::new(
            Bounds {
                max_line: 100,
                max_bytes: 1000,
            },
            Some(File::create(&path).unwrap()),
        );
        let lines = r.push(b"a\xff\xfeb\xc3(\n\xe2\x82\xac\n");
        assert_eq!(
            texts(lines),
            [
                ("a\u{fffd}\u{fffd}b\u{fffd}(".into(), false),
                ("€".into(), false)
            ]
        );
        assert_eq!(r.stats().invalid_utf8, 3);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"a\xff\xfeb\xc3(\n\xe2\x82\xac\n"
        );
    }

    #[test]
    fn the_tail_is_bounded_in_lines_and_characters() {
        let mut r = reader(1 << 20, 1 << 30);
        let long = "y".repeat(10_000);
        for i in 0..100 {
            r.push(format!("{i} {long}\n").as_bytes());
        }
        let tail: Vec<&str> = r.tail().collect();
        assert_eq!(tail.len(), TAIL_LINES);
        assert!(tail[0].starts_with("60 "));
        assert!(tail.iter().all(|l| l.chars().count() <= TAIL_LINE_CHARS));
    }

    #[test]
    fn excerpt_keeps_the_last_non_blank_lines_without_escapes() {
        let lines = ["a\r", "", "b", "\x1b[2Jc", "d"];
        assert_eq!(excerpt(lines.iter().copied(), 2), "[2Jc\nd");
        assert_eq!(excerpt(lines.iter().copied(), 10), "a\nb\n[2Jc\nd");
        assert_eq!(excerpt(std::iter::empty(), 3), "");
    }
}
