//! The TLS bytes a probe of a TLS distribution listener sends and reads (bytes only).
//!
//! A node started with `-proto_dist inet_tls` answers the plain `send_name` with a fatal
//! alert, and its `ssl` application logs a notice for it. Its liveness can be proven silently
//! instead: send a ClientHello, read the first record of the answer, and close. A ServerHello
//! there means a live TLS listener; OTP logs nothing for a peer that closes in the middle of
//! the handshake (checked against real nodes in `test/tls_test.exs`), whereas answering the
//! server's flight (with no certificate, say) would be logged.
//!
//! No TLS library is needed to stop at this point: the ClientHello is a fixed byte string,
//! built once by [`client_hello`], and the answer is told apart from its first bytes by
//! [`answer_len`] and [`decode_answer`]. `probe.rs` does the I/O.

use once_cell::sync::Lazy;

use crate::error::Error;

/// A record's header: `type:1 | version:2 | length:2`.
pub const RECORD_HEADER_LEN: usize = 5;

/// The largest record length accepted in a header: 2^14 bytes of plaintext and the 2048 of
/// expansion TLS 1.2 allows a protected record (RFC 5246, 6.2.3).
pub const MAX_RECORD_LEN: usize = (1 << 14) + 2048;

const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const HANDSHAKE_SERVER_HELLO: u8 = 2;

/// TLS 1.3 and 1.2 suites, AEAD first, then the CBC ones OTP 25 still enables for TLS 1.2,
/// for RSA and ECDSA certificates alike, so that any server configuration finds one.
const CIPHER_SUITES: [u16; 13] = [
    0x1301, // TLS_AES_128_GCM_SHA256
    0x1302, // TLS_AES_256_GCM_SHA384
    0x1303, // TLS_CHACHA20_POLY1305_SHA256
    0xC02B, // TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    0xC02F, // TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    0xC02C, // TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
    0xC030, // TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
    0xCCA9, // TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
    0xCCA8, // TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
    0xC023, // TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256
    0xC027, // TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256
    0x009E, // TLS_DHE_RSA_WITH_AES_128_GCM_SHA256
    0x009F, // TLS_DHE_RSA_WITH_AES_256_GCM_SHA384
];

/// ECDSA, RSA-PSS and RSA PKCS#1 with SHA-256/384/512: what TLS 1.3 and 1.2 servers sign with.
const SIGNATURE_SCHEMES: [u16; 9] = [
    0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601,
];

/// x25519, secp256r1, secp384r1.
const GROUPS: [u16; 3] = [0x001D, 0x0017, 0x0018];

/// The x25519 key share: RFC 7748's test public key (section 6.1), a valid point, so that a
/// TLS 1.3 server's key agreement succeeds and it answers with its ServerHello. The probe
/// never derives a key: it closes after the ServerHello.
const X25519_SHARE: [u8; 32] = [
    0x85, 0x20, 0xf0, 0x09, 0x89, 0x30, 0xa7, 0x54, 0x74, 0x8b, 0x7d, 0xdc, 0xb4, 0x3e, 0xf7, 0x5a,
    0x0d, 0xbf, 0x3a, 0x0d, 0x26, 0x38, 0x1a, 0xf4, 0xeb, 0xa4, 0xa9, 0x8e, 0xaa, 0x9b, 0x4e, 0x6a,
];

/// The ClientHello's random. Fixed: a handshake that never gets past the ServerHello derives
/// no key from it, and a fixed hello keeps the bytes on the wire testable.
const RANDOM: [u8; 32] = *b"tinycluster probe: live or not?!";

/// The length of the whole hello, padded to it with the `padding` extension (RFC 7685): a
/// plain distribution node reads the hello's first two bytes, `16 03`, as the length of a
/// 5635-byte frame. A hello of exactly 2 + 5635 bytes is then one whole frame for it, whose
/// first byte is no `send_name`, so it closes at once, silently (OTP's `dist_util` shuts
/// the connection down as `no_node`), instead of waiting its setup timeout (7 s) for the
/// rest with the probe's socket open.
pub const CLIENT_HELLO_LEN: usize = 2 + 0x1603;

/// What the first record of a TLS listener's answer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A handshake record that starts with a ServerHello (or a HelloRetryRequest, which has
    /// the same message type): a live TLS listener that accepted the hello.
    ServerHello,
    /// An alert record: a TLS listener that refused the hello (or the plain `send_name`).
    Alert {
        /// 1 warning, 2 fatal.
        level: u8,
        /// The alert description (RFC 8446, 6), e.g. 40 `handshake_failure`.
        description: u8,
    },
}

/// The ClientHello a probe sends, as one TLS record: built once, the same bytes every time.
///
/// TLS 1.2 and 1.3 compatible: `supported_versions` offers 1.3 and 1.2, with an x25519 key
/// share for 1.3 and the ECDHE groups, point format and renegotiation extensions a 1.2
/// server expects. No server name: distribution servers do not ask for one. Padded to
/// [`CLIENT_HELLO_LEN`] bytes, for the plain nodes that may get it.
pub fn client_hello() -> &'static [u8] {
    static HELLO: Lazy<Vec<u8>> = Lazy::new(build_client_hello);
    &HELLO
}

fn build_client_hello() -> Vec<u8> {
    let mut extensions = Vec::new();
    // supported_versions: TLS 1.3, TLS 1.2.
    extension(&mut extensions, 0x002B, &[4, 0x03, 0x04, 0x03, 0x03]);
    extension(&mut extensions, 0x000A, &list16(&u16s(&GROUPS)));
    // ec_point_formats: uncompressed only.
    extension(&mut extensions, 0x000B, &[1, 0]);
    extension(&mut extensions, 0x000D, &list16(&u16s(&SIGNATURE_SCHEMES)));
    let mut share = 0x001Du16.to_be_bytes().to_vec();
    share.extend_from_slice(&list16(&X25519_SHARE));
    extension(&mut extensions, 0x0033, &list16(&share));
    // renegotiation_info, empty: a first handshake that supports secure renegotiation.
    extension(&mut extensions, 0xFF01, &[0]);
    // padding, last, up to CLIENT_HELLO_LEN: the fixed part is 9 bytes of record and
    // handshake headers, 67 of body before the extensions and 2 of their length, and the
    // padding extension's own 4-byte header.
    let fixed = 5 + 4 + 2 + 32 + 1 + 2 + 2 * CIPHER_SUITES.len() + 2 + 2 + 4;
    let padding = vec![0; CLIENT_HELLO_LEN - fixed - extensions.len()];
    extension(&mut extensions, 0x0015, &padding);

    let mut body = vec![0x03, 0x03]; // legacy_version: TLS 1.2
    body.extend_from_slice(&RANDOM);
    body.push(0); // legacy_session_id: empty
    body.extend_from_slice(&list16(&u16s(&CIPHER_SUITES)));
    body.extend_from_slice(&[1, 0]); // compression methods: null only
    body.extend_from_slice(&list16(&extensions));

    let mut handshake = vec![HANDSHAKE_CLIENT_HELLO];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);

    // The record's version is TLS 1.0, as RFC 8446 (5.1) asks of a first ClientHello.
    let mut record = vec![CONTENT_HANDSHAKE, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

fn u16s(values: &[u16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn list16(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

fn extension(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&list16(data));
}

/// From a record header, how many bytes of the answer (header included) tell what it is:
/// the handshake message type of a handshake record, the two bytes of an alert. Anything
/// that is not a TLS 1.x handshake or alert record of a sane length is an error.
pub fn answer_len(header: &[u8; RECORD_HEADER_LEN]) -> Result<usize, Error> {
    if header[1] != 0x03 || header[2] > 0x04 {
        return Err(Error::Malformed("not a TLS record"));
    }
    let len = u16::from_be_bytes([header[3], header[4]]) as usize;
    if len == 0 {
        return Err(Error::Malformed("empty TLS record"));
    }
    if len > MAX_RECORD_LEN {
        return Err(Error::FrameTooLarge(len));
    }
    match header[0] {
        CONTENT_HANDSHAKE => Ok(RECORD_HEADER_LEN + 1),
        CONTENT_ALERT if len == 2 => Ok(RECORD_HEADER_LEN + 2),
        CONTENT_ALERT => Err(Error::Malformed("TLS alert record of the wrong length")),
        _ => Err(Error::Malformed("not a TLS handshake or alert record")),
    }
}

/// Decodes the first [`answer_len`] bytes of a TLS listener's answer. A handshake record
/// whose first message is not a ServerHello is an error: a server answers a ClientHello
/// with nothing else.
pub fn decode_answer(bytes: &[u8]) -> Result<Answer, Error> {
    let header: &[u8; RECORD_HEADER_LEN] = bytes
        .get(..RECORD_HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(Error::Malformed("TLS record cut short"))?;
    let needed = answer_len(header)?;
    let body = bytes
        .get(RECORD_HEADER_LEN..needed)
        .ok_or(Error::Malformed("TLS record cut short"))?;
    match (header[0], body) {
        (CONTENT_HANDSHAKE, [HANDSHAKE_SERVER_HELLO]) => Ok(Answer::ServerHello),
        (CONTENT_HANDSHAKE, _) => Err(Error::Malformed("TLS handshake is not a ServerHello")),
        (_, &[level, description]) => Ok(Answer::Alert { level, description }),
        _ => Err(Error::Malformed("TLS record cut short")),
    }
}

/// The name RFC 8446 (6) gives an alert description, for the ones a TLS 1.2 or 1.3 server
/// sends; `None` for any other number.
pub fn alert_name(description: u8) -> Option<&'static str> {
    Some(match description {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        22 => "record_overflow",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        109 => "missing_extension",
        110 => "unsupported_extension",
        112 => "unrecognized_name",
        113 => "bad_certificate_status_response",
        115 => "unknown_psk_identity",
        116 => "certificate_required",
        120 => "no_application_protocol",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hello restated by hand from RFC 8446 and RFC 5246, field by field.
    #[test]
    fn client_hello_is_byte_exact() {
        let mut expected: Vec<u8> = vec![
            0x16, 0x03, 0x01, 0x16, 0x00, // record: handshake, TLS 1.0, 5632 bytes
            0x01, 0x00, 0x15, 0xFC, // ClientHello, 5628 bytes
            0x03, 0x03, // legacy_version
        ];
        expected.extend_from_slice(b"tinycluster probe: live or not?!");
        expected.push(0x00); // empty session id
        expected.extend_from_slice(&[0x00, 0x1A]); // 13 suites
        expected.extend_from_slice(&[
            0x13, 0x01, 0x13, 0x02, 0x13, 0x03, 0xC0, 0x2B, 0xC0, 0x2F, 0xC0, 0x2C, 0xC0, 0x30,
            0xCC, 0xA9, 0xCC, 0xA8, 0xC0, 0x23, 0xC0, 0x27, 0x00, 0x9E, 0x00, 0x9F,
        ]);
        expected.extend_from_slice(&[0x01, 0x00]); // compression: null
        expected.extend_from_slice(&[0x15, 0xB9]); // 5561 bytes of extensions
        expected.extend_from_slice(&[0x00, 0x2B, 0x00, 0x05, 0x04, 0x03, 0x04, 0x03, 0x03]);
        expected.extend_from_slice(&[
            0x00, 0x0A, 0x00, 0x08, 0x00, 0x06, 0x00, 0x1D, 0x00, 0x17, 0x00, 0x18,
        ]);
        expected.extend_from_slice(&[0x00, 0x0B, 0x00, 0x02, 0x01, 0x00]);
        expected.extend_from_slice(&[
            0x00, 0x0D, 0x00, 0x14, 0x00, 0x12, 0x04, 0x03, 0x05, 0x03, 0x06, 0x03, 0x08, 0x04,
            0x08, 0x05, 0x08, 0x06, 0x04, 0x01, 0x05, 0x01, 0x06, 0x01,
        ]);
        expected.extend_from_slice(&[0x00, 0x33, 0x00, 0x26, 0x00, 0x24, 0x00, 0x1D, 0x00, 0x20]);
        expected.extend_from_slice(&X25519_SHARE);
        expected.extend_from_slice(&[0xFF, 0x01, 0x00, 0x01, 0x00]);
        // padding: 5459 zero bytes, to 5637 bytes in all.
        expected.extend_from_slice(&[0x00, 0x15, 0x15, 0x53]);
        expected.resize(5637, 0);
        assert_eq!(client_hello(), expected.as_slice());
        // Built once: the same allocation every call.
        assert!(std::ptr::eq(client_hello(), client_hello()));
    }

    #[test]
    fn a_server_hello_is_recognised() {
        for version in [0x01, 0x03, 0x04] {
            let answer = [0x16, 0x03, version, 0x00, 0x7A, 0x02];
            assert_eq!(answer_len(answer[..5].try_into().unwrap()), Ok(6));
            assert_eq!(decode_answer(&answer), Ok(Answer::ServerHello));
        }
    }

    #[test]
    fn an_alert_is_told_apart() {
        let alert = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];
        assert_eq!(answer_len(alert[..5].try_into().unwrap()), Ok(7));
        assert_eq!(
            decode_answer(&alert),
            Ok(Answer::Alert {
                level: 2,
                description: 40
            })
        );
    }

    #[test]
    fn alerts_have_their_rfc_names() {
        assert_eq!(alert_name(40), Some("handshake_failure"));
        assert_eq!(alert_name(70), Some("protocol_version"));
        assert_eq!(alert_name(116), Some("certificate_required"));
        assert_eq!(alert_name(255), None);
    }

    #[test]
    fn other_bytes_are_errors() {
        // A plain distribution status, a handshake that is no ServerHello, HTTP, SSL 2.
        for bad in [
            &[0x00, 0x03, b's', b'o', b'k', 0x00][..],
            &[0x16, 0x03, 0x03, 0x00, 0x04, 0x0B],
            b"HTTP/1",
            &[0x16, 0x02, 0x00, 0x00, 0x04, 0x02],
            &[0x17, 0x03, 0x03, 0x00, 0x04, 0x02],
            &[0x15, 0x03, 0x03, 0x00, 0x03, 0x02, 0x28],
            &[0x16, 0x03, 0x03, 0x00, 0x00, 0x02],
        ] {
            let header: [u8; 5] = bad[..5].try_into().unwrap();
            let decoded = answer_len(&header).and_then(|_| decode_answer(bad));
            assert!(decoded.is_err(), "{bad:?} decoded as {decoded:?}");
        }
        assert_eq!(
            answer_len(&[0x16, 0x03, 0x03, 0xFF, 0xFF]),
            Err(Error::FrameTooLarge(0xFFFF))
        );
    }

    #[test]
    fn a_cut_answer_is_an_error_not_a_panic() {
        let full = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];
        for cut in 0..full.len() {
            assert!(decode_answer(&full[..cut]).is_err(), "cut at {cut}");
        }
    }
}
