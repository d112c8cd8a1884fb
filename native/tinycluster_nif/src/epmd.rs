//! The EPMD client's bytes: the `NAMES_REQ` request and the parser of its reply.
//!
//! This module knows nothing of sockets or time; `scan.rs` does the I/O and hands the whole
//! reply here. The reply is a 4-byte port followed by text lines `name <alive> at port <p>\n`
//! until EPMD closes the connection.

use crate::error::Error;

/// `NAMES_REQ`: a 2-byte length (1) and the request code `n` (110).
pub const NAMES_REQ: [u8; 3] = [0, 1, b'n'];

/// The most bytes read from one EPMD. A real reply is about 30 bytes a node, so this is room
/// for several thousand nodes; anything longer is hostile or broken and is not parsed.
pub const MAX_REPLY_BYTES: usize = 256 * 1024;

/// The most candidates taken from one host. A host listing more is reported, not probed, so
/// that a hostile EPMD cannot make one scan open thousands of sockets.
pub const MAX_NAMES: usize = 1024;

/// The longest alive part of a node name that Erlang accepts.
pub const MAX_ALIVE_LEN: usize = 255;

/// How much of a malformed line is kept for the report.
const MALFORMED_SAMPLE: usize = 64;

/// The most skipped lines listed one by one in [`Names::malformed`]; any more are counted
/// in one last entry. Without it, 256 KiB of newlines would be 260,000 entries, sent to the
/// poller and kept in its state on every scan.
pub const MAX_MALFORMED: usize = 64;

/// One node as EPMD lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The alive part of the node name, already validated.
    pub alive: String,
    /// The node's distribution port.
    pub port: u16,
}

/// A line of the reply that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// The start of the line, lossily decoded, at most 64 bytes.
    pub sample: String,
    /// What was wrong with it.
    pub reason: &'static str,
}

/// A parsed `NAMES_REQ` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Names {
    /// The port EPMD says it listens on.
    pub epmd_port: u16,
    /// Every well-formed line with a valid name, in EPMD's order, without duplicates.
    pub entries: Vec<Entry>,
    /// The lines that were skipped: the first [`MAX_MALFORMED`], then, if there were more,
    /// one entry that counts them (sample `"<n> more"`).
    pub malformed: Vec<Malformed>,
}

/// Whether `alive` is a valid alive part of a node name: 1 to 255 bytes of ASCII letters,
/// digits, `_` and `-`. Checked before a name is used for anything, so that no other byte
/// ever reaches a probe or an atom.
pub fn valid_alive(alive: &[u8]) -> bool {
    !alive.is_empty()
        && alive.len() <= MAX_ALIVE_LEN
        && alive
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
}

/// Whether `host` is a plausible host part of a node name: 1 to 255 bytes of ASCII letters,
/// digits, `.`, `-`, `_` and `:` (IPv6 literals).
pub fn valid_host(host: &[u8]) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
}

/// Parses a complete `NAMES_REQ` reply (everything EPMD sent before it closed).
///
/// A reply too short to hold the port, or whose port is not a TCP port, is not an EPMD reply
/// and is an error. Bad lines are skipped and listed in [`Names::malformed`]; more than
/// [`MAX_NAMES`] good lines is an error.
pub fn parse_names(reply: &[u8]) -> Result<Names, Error> {
    if reply.len() > MAX_REPLY_BYTES {
        return Err(Error::ReplyTooLarge(MAX_REPLY_BYTES));
    }
    if reply.len() < 4 {
        return Err(Error::Malformed("EPMD reply shorter than its 4-byte port"));
    }
    let port = u32::from_be_bytes([reply[0], reply[1], reply[2], reply[3]]);
    let epmd_port = match u16::try_from(port) {
        Ok(p) if p > 0 => p,
        _ => {
            return Err(Error::Malformed(
                "not an EPMD reply: port field out of range",
            ))
        }
    };
    let mut names = Names {
        epmd_port,
        ..Names::default()
    };
    let body = &reply[4..];
    let mut lines = body.split(|b| *b == b'\n').peekable();
    let mut unlisted = 0usize;
    let mut skip = |names: &mut Names, line: &[u8], reason: &'static str| {
        if names.malformed.len() < MAX_MALFORMED {
            names.malformed.push(malformed(line, reason));
        } else {
            unlisted += 1;
        }
    };
    while let Some(line) = lines.next() {
        let last = lines.peek().is_none();
        if last {
            // The segment after the final newline: empty when the reply ended cleanly.
            if !line.is_empty() {
                skip(&mut names, line, "line not terminated");
            }
            break;
        }
        match parse_line(line) {
            Ok(entry) => {
                if names.entries.iter().any(|e| e.alive == entry.alive) {
                    skip(&mut names, line, "name listed twice");
                } else if names.entries.len() == MAX_NAMES {
                    return Err(Error::TooManyNames(MAX_NAMES));
                } else {
                    names.entries.push(entry);
                }
            }
            Err(reason) => skip(&mut names, line, reason),
        }
    }
    if unlisted > 0 {
        names.malformed.push(Malformed {
            sample: format!("{unlisted} more"),
            reason: "more malformed lines than are listed",
        });
    }
    Ok(names)
}

/// Parses one line, without its newline: `name <alive> at port <port>`.
fn parse_line(line: &[u8]) -> Result<Entry, &'static str> {
    let rest = line
        .strip_prefix(b"name ")
        .ok_or("line does not start with \"name \"")?;
    const SEP: &[u8] = b" at port ";
    let at = rest
        .windows(SEP.len())
        .rposition(|w| w == SEP)
        .ok_or("line has no \" at port \"")?;
    let (alive, port) = (&rest[..at], &rest[at + SEP.len()..]);
    if !valid_alive(alive) {
        return Err("invalid node name");
    }
    let port = parse_port(port).ok_or("invalid port")?;
    Ok(Entry {
        // valid_alive admits ASCII only, so this never fails.
        alive: String::from_utf8_lossy(alive).into_owned(),
        port,
    })
}

/// A decimal TCP port, 1 to 65535, digits only (no sign, no spaces).
fn parse_port(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    u16::try_from(value).ok().filter(|p| *p > 0)
}

fn malformed(line: &[u8], reason: &'static str) -> Malformed {
    let end = line.len().min(MALFORMED_SAMPLE);
    Malformed {
        sample: String::from_utf8_lossy(&line[..end]).into_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(lines: &str) -> Vec<u8> {
        let mut r = vec![0, 0, 0x11, 0x11];
        r.extend_from_slice(lines.as_bytes());
        r
    }

    #[test]
    fn parses_a_real_reply() {
        let names = parse_names(&reply("name a at port 40001\nname b_2-x at port 5\n")).unwrap();
        assert_eq!(names.epmd_port, 4369);
        assert_eq!(
            names.entries,
            vec![
                Entry {
                    alive: "a".into(),
                    port: 40001
                },
                Entry {
                    alive: "b_2-x".into(),
                    port: 5
                }
            ]
        );
        assert!(names.malformed.is_empty());
    }

    #[test]
    fn empty_listing_is_fine() {
        let names = parse_names(&reply("")).unwrap();
        assert!(names.entries.is_empty() && names.malformed.is_empty());
    }

    #[test]
    fn every_truncation_of_a_reply_parses_or_errors_without_panic() {
        let full = reply("name alpha at port 40001\nname beta at port 40002\n");
        for cut in 0..full.len() {
            match parse_names(&full[..cut]) {
                Ok(names) => {
                    // A cut reply never yields a name that was not in the full one.
                    for e in &names.entries {
                        assert!(e.alive == "alpha" || e.alive == "beta");
                    }
                    // A cut inside a line is reported, never silently parsed.
                    let clean = cut == 4 || full[cut - 1] == b'\n';
                    assert_eq!(names.malformed.is_empty(), clean, "cut at {cut}");
                }
                Err(e) => assert!(cut < 4, "cut at {cut}: {e}"),
            }
        }
    }

    #[test]
    fn bad_lines_are_skipped_and_reported() {
        let names = parse_names(&reply(
            "name ok at port 1\n\
             name bad.dot at port 2\n\
             name sp ace at port 3\n\
             name neg at port -4\n\
             name big at port 65536\n\
             name zero at port 0\n\
             name nan at port x1\n\
             hello world\n\
             name ok at port 9\n\
             name  at port 7\n",
        ))
        .unwrap();
        assert_eq!(
            names.entries,
            vec![Entry {
                alive: "ok".into(),
                port: 1
            }]
        );
        let reasons: Vec<_> = names.malformed.iter().map(|m| m.reason).collect();
        assert_eq!(
            reasons,
            vec![
                "invalid node name",
                "invalid node name",
                "invalid port",
                "invalid port",
                "invalid port",
                "invalid port",
                "line does not start with \"name \"",
                "name listed twice",
                "invalid node name",
            ]
        );
    }

    #[test]
    fn skipped_lines_are_listed_up_to_a_cap_then_counted() {
        let junk = "\n".repeat(MAX_MALFORMED + 1000);
        let names = parse_names(&reply(&format!("name ok at port 1\n{junk}"))).unwrap();
        assert_eq!(names.entries.len(), 1);
        assert_eq!(names.malformed.len(), MAX_MALFORMED + 1);
        assert_eq!(names.malformed[MAX_MALFORMED].sample, "1000 more");
        let exact = "\n".repeat(MAX_MALFORMED);
        assert_eq!(
            parse_names(&reply(&exact)).unwrap().malformed.len(),
            MAX_MALFORMED
        );
    }

    #[test]
    fn names_outside_the_alphabet_are_rejected() {
        for bad in [&b"a@b"[..], b"\xff", b"a\0", b"", &[b'a'; 256][..]] {
            assert!(!valid_alive(bad), "{bad:?}");
        }
        assert!(valid_alive(&[b'a'; 255]));
    }

    #[test]
    fn short_or_garbage_replies_are_errors() {
        assert!(matches!(parse_names(b"\0\0\x11"), Err(Error::Malformed(_))));
        assert!(matches!(
            parse_names(b"HTTP/1.1 400"),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            parse_names(&[0, 0, 0, 0]),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn caps_are_enforced() {
        let many: String = (0..=MAX_NAMES)
            .map(|i| format!("name n{i} at port 1\n"))
            .collect();
        assert_eq!(
            parse_names(&reply(&many)),
            Err(Error::TooManyNames(MAX_NAMES))
        );
        let huge = vec![b'x'; MAX_REPLY_BYTES + 1];
        assert_eq!(
            parse_names(&huge),
            Err(Error::ReplyTooLarge(MAX_REPLY_BYTES))
        );
    }
}
