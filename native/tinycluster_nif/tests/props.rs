//! Properties of the byte-level modules: no input makes a decoder panic, and what a
//! well-behaved EPMD or peer sends decodes to exactly what it meant.

use proptest::collection::vec;
use proptest::prelude::*;
use tinycluster_nif::epmd::{parse_names, Entry, MAX_NAMES};
use tinycluster_nif::error::Error;
use tinycluster_nif::handshake::{
    check_frame_len, decode_challenge, decode_status, encode_send_name, DFLAG_PUBLISHED,
};
use tinycluster_nif::naming::MAX_NAME_BYTES;

/// An alive part EPMD may list: 1 to 255 of the letters Erlang accepts. Mostly short, as real
/// ones are, and now and then at the length limit.
fn alive() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => "[A-Za-z0-9_-]{1,12}",
        1 => "[A-Za-z0-9_-]{250,255}",
    ]
}

/// A host part a challenge may name, short or at the length limit.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => "[A-Za-z0-9._:-]{1,16}",
        1 => "[A-Za-z0-9._:-]{250,255}",
    ]
}

/// The bytes a reply is made of, and the odd one that is not, for the parser to trip over.
const REPLY_ALPHABET: &[u8] =
    b"\n\n\n    @-+_.0123456789abcdefghijklmnopqrstuvwxyz\x00\xff\x80\r\t";

/// A line a well-behaved EPMD never sends: never `name ` at the start, never a newline.
fn junk_line() -> impl Strategy<Value = Vec<u8>> {
    vec(
        any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
        0..80,
    )
    .prop_map(|mut bytes| {
        bytes.insert(0, b'#');
        bytes
    })
}

fn from_reply_alphabet(bytes: Vec<u8>) -> Vec<u8> {
    bytes
        .iter()
        .map(|b| REPLY_ALPHABET[*b as usize % REPLY_ALPHABET.len()])
        .collect()
}

fn reply(epmd_port: u16, body: &[u8]) -> Vec<u8> {
    let mut r = u32::from(epmd_port).to_be_bytes().to_vec();
    r.extend_from_slice(body);
    r
}

proptest! {
    #[test]
    fn parse_names_never_panics(bytes in vec(any::<u8>(), 0..2048)) {
        let _ = parse_names(&bytes);
    }

    #[test]
    fn parse_names_never_panics_past_a_valid_port(
        port in 1u16..,
        // Bytes drawn from the reply's own alphabet, so that lines get far into parsing.
        body in vec(any::<u8>(), 0..2048).prop_map(from_reply_alphabet),
        prefix_lines in vec("name [a-z@ ]{0,6} at port [-+0-9 ]{0,7}\n", 0..20),
    ) {
        let mut text = prefix_lines.concat().into_bytes();
        text.extend_from_slice(&body);
        if let Ok(names) = parse_names(&reply(port, &text)) {
            prop_assert_eq!(names.epmd_port, port);
            for e in &names.entries {
                prop_assert!(e.port > 0);
                prop_assert!(!e.alive.is_empty() && e.alive.len() <= 255);
            }
        }
    }

    #[test]
    fn well_formed_replies_round_trip(
        port in 1u16..,
        lines in vec((alive(), 1u16..), 0..64),
    ) {
        let mut text = String::new();
        for (a, p) in &lines {
            text.push_str(&format!("name {a} at port {p}\n"));
        }
        let names = parse_names(&reply(port, text.as_bytes())).expect("a well-formed reply");
        prop_assert_eq!(names.epmd_port, port);
        // Every line comes back, in order; a name listed again is the only one reported.
        let mut expected: Vec<Entry> = Vec::new();
        let mut twice = 0;
        for (a, p) in &lines {
            if expected.iter().any(|e| &e.alive == a) {
                twice += 1;
            } else {
                expected.push(Entry { alive: a.clone(), port: *p });
            }
        }
        prop_assert_eq!(&names.entries, &expected);
        prop_assert_eq!(names.malformed.len(), twice);
        prop_assert!(names.malformed.iter().all(|m| m.reason == "name listed twice"));
    }

    #[test]
    fn valid_lines_survive_junk_around_them(
        items in vec(prop_oneof![
            (alive(), 1u16..).prop_map(Ok),
            junk_line().prop_map(Err),
        ], 0..64),
    ) {
        let mut body = Vec::new();
        let mut expected: Vec<Entry> = Vec::new();
        let mut bad = 0;
        for item in &items {
            match item {
                Ok((a, p)) => {
                    body.extend_from_slice(format!("name {a} at port {p}\n").as_bytes());
                    if expected.iter().any(|e| &e.alive == a) {
                        bad += 1;
                    } else {
                        expected.push(Entry { alive: a.clone(), port: *p });
                    }
                }
                Err(junk) => {
                    body.extend_from_slice(junk);
                    body.push(b'\n');
                    bad += 1;
                }
            }
        }
        let names = parse_names(&reply(4369, &body)).expect("an EPMD reply");
        prop_assert_eq!(&names.entries, &expected);
        prop_assert_eq!(names.malformed.len(), bad);
        for m in &names.malformed {
            prop_assert!(m.sample.chars().count() <= 64);
        }
    }

    #[test]
    fn decode_status_never_panics(bytes in vec(any::<u8>(), 0..600)) {
        let _ = decode_status(&bytes);
    }

    #[test]
    fn unknown_statuses_are_named(text in "[a-z_]{0,80}") {
        let known = ["ok", "ok_simultaneous", "nok", "not_allowed", "alive"];
        prop_assume!(!known.contains(&text.as_str()));
        let payload = [b"s".as_slice(), text.as_bytes()].concat();
        let shown: String = text.chars().take(64).collect();
        prop_assert_eq!(decode_status(&payload), Err(Error::UnknownStatus(shown)));
    }

    #[test]
    fn decode_challenge_never_panics(bytes in vec(any::<u8>(), 0..600)) {
        let _ = decode_challenge(&bytes);
    }

    #[test]
    fn decode_challenge_never_panics_on_a_plausible_start(
        tag in prop_oneof![Just(b'N'), Just(b'n'), any::<u8>()],
        fixed in vec(any::<u8>(), 16),
        nlen in any::<u16>(),
        name in vec(any::<u8>(), 0..600),
    ) {
        let mut payload = vec![tag];
        payload.extend_from_slice(&fixed);
        payload.extend_from_slice(&nlen.to_be_bytes());
        payload.extend_from_slice(&name);
        let _ = decode_challenge(&payload);
    }

    #[test]
    fn well_formed_challenges_round_trip(
        flags in any::<u64>(),
        challenge in any::<u32>(),
        creation in any::<u32>(),
        alive in alive(),
        host in host(),
        trailing in vec(any::<u8>(), 0..16),
    ) {
        let name = format!("{alive}@{host}");
        let mut payload = vec![b'N'];
        payload.extend_from_slice(&flags.to_be_bytes());
        payload.extend_from_slice(&challenge.to_be_bytes());
        payload.extend_from_slice(&creation.to_be_bytes());
        payload.extend_from_slice(&(name.len() as u16).to_be_bytes());
        payload.extend_from_slice(name.as_bytes());
        // Whatever follows the name is accepted and ignored, as the protocol asks.
        payload.extend_from_slice(&trailing);
        // A name no atom can hold is refused by its length, whatever its parts.
        if name.len() > MAX_NAME_BYTES {
            prop_assert_eq!(decode_challenge(&payload), Err(Error::NameTooLong(name.len())));
            return Ok(());
        }
        let c = decode_challenge(&payload).expect("a well-formed challenge");
        prop_assert_eq!(c.flags, flags);
        prop_assert_eq!(c.challenge, challenge);
        prop_assert_eq!(c.creation, creation);
        prop_assert_eq!(&c.name, &name);
        prop_assert_eq!(c.hidden(), flags & DFLAG_PUBLISHED == 0);
        // A name length past the end of the frame is refused.
        let mut wrong = payload.clone();
        let past_end = name.len() + trailing.len() + 1;
        wrong[17..19].copy_from_slice(&(past_end as u16).to_be_bytes());
        prop_assert!(decode_challenge(&wrong).is_err());
    }

    #[test]
    fn check_frame_len_never_panics_and_caps(
        header in any::<[u8; 2]>(),
        // Caps around the length itself, where an off-by-one would show, and anywhere else.
        max in prop_oneof![Just(None), Just(Some(0)), any::<usize>().prop_map(Some)],
        near in -1i64..=1,
    ) {
        let len = u16::from_be_bytes(header) as usize;
        let max = max.unwrap_or_else(|| (len as i64 + near).max(0) as usize);
        match check_frame_len(header, max) {
            Ok(n) => prop_assert!(n == len && n >= 1 && n <= max),
            Err(Error::FrameTooLarge(n)) => prop_assert!(n == len && n > max),
            Err(Error::Malformed(_)) => prop_assert_eq!(len, 0),
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn send_name_frames_say_their_own_length(
        alive in alive(),
        host in host(),
        flags in any::<u64>(),
        creation in 1u32..,
    ) {
        let name = format!("{alive}@{host}");
        let frame = encode_send_name(&name, flags, creation);
        prop_assert_eq!(u16::from_be_bytes([frame[0], frame[1]]) as usize, frame.len() - 2);
        prop_assert_eq!(frame[2], b'N');
        prop_assert_eq!(&frame[3..11], &flags.to_be_bytes());
        prop_assert_eq!(&frame[11..15], &creation.to_be_bytes());
        prop_assert_eq!(u16::from_be_bytes([frame[15], frame[16]]) as usize, name.len());
        prop_assert_eq!(&frame[17..], name.as_bytes());
    }
}

/// Not a property: the boundary is three numbers, so each is checked rather than sampled.
#[test]
fn the_name_cap_counts_distinct_names() {
    for extra in [0, 1, 2, 40] {
        for duplicates in [0, 1, 30] {
            let mut text: String = (0..MAX_NAMES + extra)
                .map(|i| format!("name n{i} at port 1\n"))
                .collect();
            // Names listed twice are reported, not counted against the cap.
            for _ in 0..duplicates {
                text.push_str("name n0 at port 2\n");
            }
            let parsed = parse_names(&reply(4369, text.as_bytes()));
            if extra == 0 {
                let names = parsed.expect("exactly the cap is allowed");
                assert_eq!(names.entries.len(), MAX_NAMES);
                assert_eq!(names.malformed.len(), duplicates);
            } else {
                assert_eq!(
                    parsed,
                    Err(Error::TooManyNames(MAX_NAMES)),
                    "{extra} over the cap"
                );
            }
        }
    }
}
