//! The initiator's frames of the Erlang distribution handshake, as far as a probe goes.
//!
//! A probe sends `send_name`, reads the status and, on `ok`, the challenge, then closes. This
//! module only encodes and decodes those frames; `probe.rs` does the I/O. Every frame is
//! `len:2 | payload`, and each payload has a hard size cap checked before it is read.

use crate::epmd::{valid_alive, valid_host};
use crate::error::Error;

/// The peer is a visible (published) node. Clear in a challenge means a hidden node.
pub const DFLAG_PUBLISHED: u64 = 0x1;
const DFLAG_EXTENDED_REFERENCES: u64 = 0x4;
const DFLAG_FUN_TAGS: u64 = 0x10;
const DFLAG_NEW_FUN_TAGS: u64 = 0x80;
const DFLAG_EXTENDED_PIDS_PORTS: u64 = 0x100;
const DFLAG_EXPORT_PTR_TAG: u64 = 0x200;
const DFLAG_BIT_BINARIES: u64 = 0x400;
const DFLAG_NEW_FLOATS: u64 = 0x800;
const DFLAG_UTF8_ATOMS: u64 = 0x10000;
const DFLAG_MAP_TAG: u64 = 0x20000;
const DFLAG_BIG_CREATION: u64 = 0x40000;
const DFLAG_HANDSHAKE_23: u64 = 0x100_0000;
const DFLAG_UNLINK_ID: u64 = 0x200_0000;
/// OTP's `dist.hrl` value; the protocol document's "1 bsl 36" is a typo.
const DFLAG_MANDATORY_25_DIGEST: u64 = 0x400_0000;
const DFLAG_V4_NC: u64 = 1 << 34;

/// The flags OTP 25 refuses to talk without.
const MANDATORY_25: u64 = DFLAG_EXTENDED_REFERENCES
    | DFLAG_FUN_TAGS
    | DFLAG_NEW_FUN_TAGS
    | DFLAG_EXTENDED_PIDS_PORTS
    | DFLAG_EXPORT_PTR_TAG
    | DFLAG_BIT_BINARIES
    | DFLAG_NEW_FLOATS
    | DFLAG_UTF8_ATOMS
    | DFLAG_MAP_TAG
    | DFLAG_BIG_CREATION
    | DFLAG_HANDSHAKE_23;

/// The flags OTP 26 and later refuse to talk without: OTP 25's, the digest bit, and two more.
const MANDATORY_26: u64 = MANDATORY_25 | DFLAG_MANDATORY_25_DIGEST | DFLAG_UNLINK_ID | DFLAG_V4_NC;

/// `DFLAG_NAME_ME`: the initiator asks the acceptor to name it; a probe has a name.
pub const DFLAG_NAME_ME: u64 = 1 << 33;
/// `DFLAG_LOCAL_EXT`: internal to a node, never on the wire.
pub const DFLAG_LOCAL_EXT: u64 = 1 << 36;
/// Bits the protocol keeps for changes to the handshake itself.
pub const DFLAG_RESERVED: u64 = 0xF800_0000;

/// The flags that real nodes offer in their own handshakes, read off the challenge each sent
/// to a probe: OTP 25 and 27 offer `0xD_07DF_7FBD`; OTP 29 adds `DFLAG_ALTACT_SIG` (bit 37)
/// and bit 38 (`0x6D_07DF_7FBD`).
pub const OFFERED_BY_OTP_25_TO_29: u64 = 0x6D_07DF_7FBD;

/// The flags a probe offers: everything a current node offers itself, less
/// `DFLAG_PUBLISHED` (the probe is not a node anyone should see), `DFLAG_NAME_ME` and what is
/// internal or reserved. A later release that makes one more of today's defaults mandatory
/// still answers a probe that offers all of them; a release ignores the bits it does not
/// know. Every release CI runs answers it, silently (`test/otp_matrix_test.exs`).
pub const PROBE_FLAGS: u64 = (OFFERED_BY_OTP_25_TO_29 | MANDATORY_26)
    & !(DFLAG_PUBLISHED | DFLAG_NAME_ME | DFLAG_LOCAL_EXT | DFLAG_RESERVED);

/// The largest status payload accepted. Real ones are under 20 bytes.
pub const MAX_STATUS_LEN: usize = 512;

/// The largest challenge payload accepted: 19 fixed bytes and a name of at most 511.
pub const MAX_CHALLENGE_LEN: usize = 19 + 511;

/// Encodes a version 6 `send_name`: `len:2 | 'N' | flags:8 | creation:4 | nlen:2 | name`.
///
/// `name` must be a valid node name (the caller builds it); `creation` must be nonzero, since
/// some peers (JInterface) close the socket on zero.
pub fn encode_send_name(name: &str, flags: u64, creation: u32) -> Vec<u8> {
    let name = name.as_bytes();
    let payload_len = 1 + 8 + 4 + 2 + name.len();
    let mut frame = Vec::with_capacity(2 + payload_len);
    frame.extend_from_slice(&(payload_len as u16).to_be_bytes());
    frame.push(b'N');
    frame.extend_from_slice(&flags.to_be_bytes());
    frame.extend_from_slice(&creation.to_be_bytes());
    frame.extend_from_slice(&(name.len() as u16).to_be_bytes());
    frame.extend_from_slice(name);
    frame
}

/// Whether a frame's first two bytes are a TLS alert record's (content type 21, version
/// 3.x): what a TLS distribution listener answers to a plain-text `send_name`.
pub fn is_tls_alert(header: [u8; 2]) -> bool {
    header == [0x15, 0x03]
}

/// Checks a frame's 2-byte length against the cap for that frame, before anything is read.
pub fn check_frame_len(header: [u8; 2], max: usize) -> Result<usize, Error> {
    let len = u16::from_be_bytes(header) as usize;
    if len == 0 {
        Err(Error::Malformed("empty frame"))
    } else if len > max {
        Err(Error::FrameTooLarge(len))
    } else {
        Ok(len)
    }
}

/// The status a peer answers to `send_name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// `ok`: go on with the challenge.
    Ok,
    /// `ok_simultaneous`: the peer was also connecting to us; go on with the challenge.
    OkSimultaneous,
    /// `nok`: the peer keeps its own connection attempt to us.
    Nok,
    /// `not_allowed`: the peer's allow list refuses us.
    NotAllowed,
    /// `alive`: the peer already has a connection from our name.
    Alive,
}

/// Decodes a status payload (`'s' | text`).
pub fn decode_status(payload: &[u8]) -> Result<Status, Error> {
    let text = payload
        .strip_prefix(b"s")
        .ok_or(Error::Malformed("status frame does not start with 's'"))?;
    match text {
        b"ok" => Ok(Status::Ok),
        b"ok_simultaneous" => Ok(Status::OkSimultaneous),
        b"nok" => Ok(Status::Nok),
        b"not_allowed" => Ok(Status::NotAllowed),
        b"alive" => Ok(Status::Alive),
        other => {
            let end = other.len().min(64);
            Err(Error::UnknownStatus(
                String::from_utf8_lossy(&other[..end]).into_owned(),
            ))
        }
    }
}

/// A version 6 challenge: what the peer says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The peer's distribution flags.
    pub flags: u64,
    /// The challenge number (unused: the probe never answers it).
    pub challenge: u32,
    /// The peer's creation.
    pub creation: u32,
    /// The peer's full node name, validated as `alive@host`.
    pub name: String,
}

impl Challenge {
    /// A hidden node does not set `DFLAG_PUBLISHED`; EPMD cannot tell, since OTP registers
    /// hidden nodes with the same node type as visible ones.
    pub fn hidden(&self) -> bool {
        self.flags & DFLAG_PUBLISHED == 0
    }
}

/// Decodes a challenge payload: `'N' | flags:8 | challenge:4 | creation:4 | nlen:2 | name`.
pub fn decode_challenge(payload: &[u8]) -> Result<Challenge, Error> {
    let rest = match payload.split_first() {
        Some((b'N', rest)) => rest,
        Some((b'n', _)) => return Err(Error::Malformed("version 5 challenge to a version 6 name")),
        _ => return Err(Error::Malformed("challenge frame does not start with 'N'")),
    };
    if rest.len() < 18 {
        return Err(Error::Malformed("challenge shorter than its fixed fields"));
    }
    let flags = u64::from_be_bytes(rest[0..8].try_into().expect("8 bytes"));
    let challenge = u32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
    let creation = u32::from_be_bytes(rest[12..16].try_into().expect("4 bytes"));
    let nlen = u16::from_be_bytes([rest[16], rest[17]]) as usize;
    // The protocol says data after the name must be accepted and ignored: a later release
    // may append fields there. Only a name cut short is an error.
    let name = rest[18..]
        .get(..nlen)
        .ok_or(Error::Malformed("challenge name longer than the frame"))?;
    if name.len() > crate::naming::MAX_NAME_BYTES {
        return Err(Error::NameTooLong(name.len()));
    }
    if !valid_node_name(name) {
        return Err(Error::Malformed("challenge name is not a node name"));
    }
    Ok(Challenge {
        flags,
        challenge,
        creation,
        name: String::from_utf8_lossy(name).into_owned(),
    })
}

/// Whether `name` is `alive@host` with both parts valid.
pub fn valid_node_name(name: &[u8]) -> bool {
    match name.iter().position(|b| *b == b'@') {
        Some(at) => valid_alive(&name[..at]) && valid_host(&name[at + 1..]),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_flags_are_what_nodes_offer_less_what_a_probe_must_not_claim() {
        assert_eq!(PROBE_FLAGS, 0x0000_006D_07DF_7FBC);
        // Every flag OTP 25 to 29 refuse to talk without.
        assert_eq!(PROBE_FLAGS & MANDATORY_26, MANDATORY_26);
        for never in [
            DFLAG_PUBLISHED,
            DFLAG_NAME_ME,
            DFLAG_LOCAL_EXT,
            DFLAG_RESERVED,
        ] {
            assert_eq!(PROBE_FLAGS & never, 0, "{never:#x}");
        }
    }

    #[test]
    fn send_name_is_byte_exact() {
        let frame = encode_send_name("p@h", 0x0102_0304_0506_0708, 0x0A0B_0C0D);
        assert_eq!(
            frame,
            vec![
                0, 18, b'N', 1, 2, 3, 4, 5, 6, 7, 8, 0x0A, 0x0B, 0x0C, 0x0D, 0, 3, b'p', b'@', b'h'
            ]
        );
    }

    #[test]
    fn statuses_decode() {
        assert_eq!(decode_status(b"sok"), Ok(Status::Ok));
        assert_eq!(
            decode_status(b"sok_simultaneous"),
            Ok(Status::OkSimultaneous)
        );
        assert_eq!(decode_status(b"snok"), Ok(Status::Nok));
        assert_eq!(decode_status(b"snot_allowed"), Ok(Status::NotAllowed));
        assert_eq!(decode_status(b"salive"), Ok(Status::Alive));
        assert_eq!(
            decode_status(b"swhat"),
            Err(Error::UnknownStatus("what".into()))
        );
        assert!(matches!(decode_status(b"xok"), Err(Error::Malformed(_))));
        assert!(matches!(decode_status(b""), Err(Error::Malformed(_))));
    }

    fn challenge(flags: u64, name: &[u8]) -> Vec<u8> {
        let mut p = vec![b'N'];
        p.extend_from_slice(&flags.to_be_bytes());
        p.extend_from_slice(&7u32.to_be_bytes());
        p.extend_from_slice(&9u32.to_be_bytes());
        p.extend_from_slice(&(name.len() as u16).to_be_bytes());
        p.extend_from_slice(name);
        p
    }

    #[test]
    fn challenge_decodes_and_tells_hidden() {
        let c = decode_challenge(&challenge(PROBE_FLAGS | DFLAG_PUBLISHED, b"a@vm")).unwrap();
        assert_eq!((c.challenge, c.creation, c.name.as_str()), (7, 9, "a@vm"));
        assert!(!c.hidden());
        assert!(decode_challenge(&challenge(PROBE_FLAGS, b"a@vm"))
            .unwrap()
            .hidden());
    }

    #[test]
    fn bad_challenges_are_errors() {
        for bad in [&b"a"[..], b"a@", b"@h", b"a b@h", b"a@h/x"] {
            assert!(decode_challenge(&challenge(0, bad)).is_err(), "{bad:?}");
        }
        let mut cut_name = challenge(0, b"a@vm");
        cut_name.pop();
        assert!(decode_challenge(&cut_name).is_err());
        let full = challenge(0, b"a@vm");
        for cut in 0..full.len() {
            assert!(decode_challenge(&full[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_challenge_name_longer_than_an_atom_is_name_too_long() {
        let fits = format!("{}@127.0.0.1", "a".repeat(245));
        assert_eq!(fits.len(), 255);
        assert_eq!(
            decode_challenge(&challenge(0, fits.as_bytes()))
                .unwrap()
                .name,
            fits
        );
        let over = format!("{}@127.0.0.1", "a".repeat(246));
        assert_eq!(
            decode_challenge(&challenge(0, over.as_bytes())),
            Err(Error::NameTooLong(256))
        );
    }

    #[test]
    fn bytes_after_the_challenge_name_are_ignored() {
        // The full frame as a peer would send it: the name's length says 4, and 3 bytes of
        // a future field follow the name.
        let mut payload = challenge(PROBE_FLAGS | DFLAG_PUBLISHED, b"a@vm");
        payload.extend_from_slice(&[0xAA, 0xBB, 0xCC]);
        let mut frame = (payload.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(&payload);
        assert_eq!(
            frame,
            [
                &[0, 26, b'N'][..],
                &(PROBE_FLAGS | DFLAG_PUBLISHED).to_be_bytes(),
                &[0, 0, 0, 7, 0, 0, 0, 9, 0, 4, b'a', b'@', b'v', b'm', 0xAA, 0xBB, 0xCC],
            ]
            .concat()
        );
        let c = decode_challenge(&frame[2..]).unwrap();
        assert_eq!((c.name.as_str(), c.creation), ("a@vm", 9));
        assert!(!c.hidden());
        // A trailing byte that would make a longer name valid is not read as part of it.
        let mut odd = challenge(0, b"a@vm");
        odd.push(b'/');
        assert_eq!(decode_challenge(&odd).unwrap().name, "a@vm");
    }

    #[test]
    fn a_tls_alert_is_recognised() {
        assert!(is_tls_alert([0x15, 0x03]));
        assert!(!is_tls_alert([0x00, 0x03]));
    }

    #[test]
    fn frame_lengths_are_capped() {
        assert_eq!(check_frame_len([0, 3], MAX_STATUS_LEN), Ok(3));
        assert_eq!(
            check_frame_len([0xFF, 0xFF], MAX_STATUS_LEN),
            Err(Error::FrameTooLarge(65535))
        );
        assert!(check_frame_len([0, 0], MAX_STATUS_LEN).is_err());
    }
}
