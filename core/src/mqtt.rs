//! Just enough of MQTT 3.1.1 for meterstack's own two ends of a connection.
//!
//! - The broker's gate: packet framing, the fields of CONNECT, PUBLISH and SUBSCRIBE that
//!   identity and isolation depend on, and the packets it writes itself (CONNECT towards
//!   rumqttd, CONNACK towards a refused client). Everything else passes through to rumqttd
//!   byte for byte, which parses it fully.
//! - The simulator's meters (a client): CONNECT, PUBLISH at QoS 0/1, PUBACK, SUBSCRIBE,
//!   PINGREQ and DISCONNECT, and the packet ids of PUBACK and SUBACK.

use bytes::{BufMut, BytesMut};

/// MQTT control packet types (the high nibble of the first byte).
#[allow(missing_docs)]
pub mod kind {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
}

/// CONNACK return codes of MQTT 3.1.1.
#[allow(missing_docs)]
pub mod connack {
    pub const ACCEPTED: u8 = 0;
    pub const UNACCEPTABLE_PROTOCOL: u8 = 1;
    pub const IDENTIFIER_REJECTED: u8 = 2;
    pub const SERVER_UNAVAILABLE: u8 = 3;
    pub const BAD_CREDENTIALS: u8 = 4;
    pub const NOT_AUTHORIZED: u8 = 5;
}

/// Why bytes from a client are not a packet the gate accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The remaining-length field is longer than four bytes.
    #[error("malformed remaining length")]
    BadLength,
    /// The packet is larger than the configured maximum.
    #[error("packet of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    /// A field runs past the end of the packet or is not valid UTF-8.
    #[error("malformed {0} packet")]
    Malformed(&'static str),
}

/// A complete packet at the front of a buffer: its type, flags, and where its body lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    /// Length of the fixed header.
    pub header_len: usize,
    /// Length of the whole packet.
    pub len: usize,
}

/// The first packet in `buf`, if it is complete (`Ok(None)` means: read more).
pub fn frame(buf: &[u8], max_len: usize) -> Result<Option<Frame>, PacketError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut remaining: usize = 0;
    let mut shift = 0;
    let mut i = 1;
    loop {
        let Some(&byte) = buf.get(i) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7f) << shift;
        i += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err(PacketError::BadLength);
        }
    }
    let len = i + remaining;
    if len > max_len {
        return Err(PacketError::TooLarge {
            size: len,
            limit: max_len,
        });
    }
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some(Frame {
        kind: first >> 4,
        flags: first & 0x0f,
        header_len: i,
        len,
    }))
}

/// Reads MQTT fields from a packet body.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, PacketError> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or(PacketError::Malformed(self.what))?;
        self.buf = rest;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, PacketError> {
        Ok(u16::from(self.u8()?) << 8 | u16::from(self.u8()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], PacketError> {
        let n = usize::from(self.u16()?);
        if self.buf.len() < n {
            return Err(PacketError::Malformed(self.what));
        }
        let (b, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(b)
    }

    fn string(&mut self) -> Result<&'a str, PacketError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| PacketError::Malformed(self.what))
    }
}

/// A client's CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol name as sent (`MQTT` for 3.1.1).
    pub protocol: String,
    /// Protocol level (4 for 3.1.1, 5 for MQTT 5).
    pub level: u8,
    pub clean_session: bool,
    pub keep_alive: u16,
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
}

/// The will message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

/// Parses a CONNECT packet (`packet` is the whole packet).
pub fn parse_connect(packet: &[u8], frame: Frame) -> Result<Connect, PacketError> {
    let mut r = Reader {
        buf: &packet[frame.header_len..frame.len],
        what: "CONNECT",
    };
    let protocol = r.string()?.to_owned();
    let level = r.u8()?;
    if level != 4 {
        // Other levels lay out the rest differently; the caller refuses them.
        return Ok(Connect {
            protocol,
            level,
            clean_session: true,
            keep_alive: 0,
            client_id: String::new(),
            will: None,
            username: None,
            password: None,
        });
    }
    let flags = r.u8()?;
    let keep_alive = r.u16()?;
    let client_id = r.string()?.to_owned();
    let will = if flags & 0x04 != 0 {
        let topic = r.string()?.to_owned();
        let payload = r.bytes()?.to_vec();
        Some(Will {
            topic,
            payload,
            qos: (flags >> 3) & 0x03,
            retain: flags & 0x20 != 0,
        })
    } else {
        None
    };
    let username = if flags & 0x80 != 0 {
        Some(r.string()?.to_owned())
    } else {
        None
    };
    let password = if flags & 0x40 != 0 {
        Some(r.bytes()?.to_vec())
    } else {
        None
    };
    Ok(Connect {
        protocol,
        level,
        clean_session: flags & 0x02 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
    })
}

fn put_remaining_length(out: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_u16(u16::try_from(b.len()).unwrap_or(u16::MAX));
    out.put_slice(&b[..b.len().min(usize::from(u16::MAX))]);
}

impl Connect {
    /// A 3.1.1 CONNECT of `client_id` with `keep_alive` seconds, no will and no credentials.
    pub fn new(client_id: &str, clean_session: bool, keep_alive: u16) -> Self {
        Self {
            protocol: "MQTT".into(),
            level: 4,
            clean_session,
            keep_alive,
            client_id: client_id.to_owned(),
            will: None,
            username: None,
            password: None,
        }
    }

    /// Encodes the CONNECT as MQTT 3.1.1.
    pub fn encode(&self) -> BytesMut {
        let mut body = BytesMut::new();
        put_bytes(&mut body, b"MQTT");
        body.put_u8(4);
        let mut flags = 0;
        if self.username.is_some() {
            flags |= 0x80;
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.clean_session {
            flags |= 0x02;
        }
        if let Some(will) = &self.will {
            flags |= 0x04 | (will.qos & 0x03) << 3;
            if will.retain {
                flags |= 0x20;
            }
        }
        body.put_u8(flags);
        body.put_u16(self.keep_alive);
        put_bytes(&mut body, self.client_id.as_bytes());
        if let Some(will) = &self.will {
            put_bytes(&mut body, will.topic.as_bytes());
            put_bytes(&mut body, &will.payload);
        }
        if let Some(username) = &self.username {
            put_bytes(&mut body, username.as_bytes());
        }
        if let Some(password) = &self.password {
            put_bytes(&mut body, password);
        }
        with_header(kind::CONNECT << 4, &body)
    }
}

fn with_header(first: u8, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(first);
    put_remaining_length(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// Appends a PUBLISH of `payload` to `topic` to `out`: QoS 1 with `packet_id`, or QoS 0 when
/// `packet_id` is `None`.
pub fn put_publish(out: &mut BytesMut, topic: &str, packet_id: Option<u16>, payload: &[u8]) {
    let len = 2 + topic.len() + packet_id.map_or(0, |_| 2) + payload.len();
    out.reserve(len + 5);
    out.put_u8(kind::PUBLISH << 4 | if packet_id.is_some() { 0x02 } else { 0 });
    put_remaining_length(out, len);
    put_bytes(out, topic.as_bytes());
    if let Some(id) = packet_id {
        out.put_u16(id);
    }
    out.put_slice(payload);
}

/// A SUBSCRIBE with `packet_id` to one `filter` at `qos`.
pub fn subscribe(packet_id: u16, filter: &str, qos: u8) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_u16(packet_id);
    put_bytes(&mut body, filter.as_bytes());
    body.put_u8(qos);
    with_header(kind::SUBSCRIBE << 4 | 0x02, &body)
}

/// The PUBACK of `packet_id`.
pub fn puback(packet_id: u16) -> [u8; 4] {
    let [hi, lo] = packet_id.to_be_bytes();
    [kind::PUBACK << 4, 2, hi, lo]
}

/// A PINGREQ.
pub const PINGREQ: [u8; 2] = [kind::PINGREQ << 4, 0];

/// A DISCONNECT.
pub const DISCONNECT: [u8; 2] = [kind::DISCONNECT << 4, 0];

/// The packet id at the start of the body of a PUBACK, SUBACK (or any packet that begins with
/// one), or the return code of a CONNACK in the low byte.
pub fn leading_u16(packet: &[u8], frame: Frame) -> Result<u16, PacketError> {
    Reader {
        buf: &packet[frame.header_len..frame.len],
        what: "acknowledgement",
    }
    .u16()
}

/// The fields of a PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its packet id (QoS 1 and 2 only).
    pub packet_id: Option<u16>,
    /// Its payload.
    pub payload: &'a [u8],
}

/// Parses a PUBLISH packet.
pub fn parse_publish(packet: &[u8], frame: Frame) -> Result<Publish<'_>, PacketError> {
    let mut r = Reader {
        buf: &packet[frame.header_len..frame.len],
        what: "PUBLISH",
    };
    let topic = r.string()?;
    let packet_id = if (frame.flags >> 1) & 0x03 != 0 {
        Some(r.u16()?)
    } else {
        None
    };
    Ok(Publish {
        topic,
        packet_id,
        payload: r.buf,
    })
}

/// A CONNACK refusing the connection with `code`.
pub fn connack(code: u8) -> [u8; 4] {
    [0x20, 0x02, 0x00, code]
}

/// The topic filters of a SUBSCRIBE packet.
pub fn subscribe_filters(packet: &[u8], frame: Frame) -> Result<Vec<&str>, PacketError> {
    let mut r = Reader {
        buf: &packet[frame.header_len..frame.len],
        what: "SUBSCRIBE",
    };
    r.u16()?; // packet id
    let mut filters = Vec::new();
    while !r.buf.is_empty() {
        filters.push(r.string()?);
        r.u8()?; // requested QoS
    }
    if filters.is_empty() {
        return Err(PacketError::Malformed("SUBSCRIBE"));
    }
    Ok(filters)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn connect_fixture(will: bool) -> Connect {
        Connect {
            protocol: "MQTT".into(),
            level: 4,
            clean_session: true,
            keep_alive: 30,
            client_id: "meter-1".into(),
            will: will.then(|| Will {
                topic: "meters/meter-1/readings".into(),
                payload: b"bye".to_vec(),
                qos: 1,
                retain: false,
            }),
            username: Some("gate".into()),
            password: Some(b"token".to_vec()),
        }
    }

    #[test]
    fn connect_round_trips() {
        for will in [false, true] {
            let c = connect_fixture(will);
            let bytes = c.encode();
            let f = frame(&bytes, 1 << 20).unwrap().unwrap();
            assert_eq!(f.kind, kind::CONNECT);
            assert_eq!(f.len, bytes.len());
            assert_eq!(parse_connect(&bytes, f).unwrap(), c);
        }
    }

    #[test]
    fn frames_need_the_whole_packet_and_respect_the_limit() {
        let bytes = connect_fixture(false).encode();
        for cut in 0..bytes.len() {
            assert_eq!(frame(&bytes[..cut], 1 << 20).unwrap(), None);
        }
        assert!(matches!(
            frame(&bytes, 10),
            Err(PacketError::TooLarge { .. })
        ));
        assert_eq!(
            frame(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], usize::MAX),
            Err(PacketError::BadLength)
        );
    }

    #[test]
    fn publish_and_subscribe_fields() {
        // PUBLISH QoS 1 to "a/b" with packet id 7 and payload "x".
        let p = [0x32, 8, 0, 3, b'a', b'/', b'b', 0, 7, b'x'];
        let f = frame(&p, 100).unwrap().unwrap();
        let publish = parse_publish(&p, f).unwrap();
        assert_eq!(
            (publish.topic, publish.packet_id, publish.payload),
            ("a/b", Some(7), &b"x"[..])
        );
        let mut built = BytesMut::new();
        put_publish(&mut built, "a/b", Some(7), b"x");
        assert_eq!(&built[..], &p[..]);
        put_publish(&mut built, "a/b", None, b"x");
        let f = frame(&built[p.len()..], 100).unwrap().unwrap();
        assert_eq!(parse_publish(&built[p.len()..], f).unwrap().packet_id, None);
        // SUBSCRIBE id 1 to "a/#" QoS 1 and "c" QoS 0.
        let s = [0x82, 12, 0, 1, 0, 3, b'a', b'/', b'#', 1, 0, 1, b'c', 0];
        assert_eq!(
            &subscribe(1, "a/#", 1)[..],
            &[0x82, 8, 0, 1, 0, 3, b'a', b'/', b'#', 1]
        );
        let ack = puback(0x1234);
        assert_eq!(
            leading_u16(&ack, frame(&ack, 10).unwrap().unwrap()).unwrap(),
            0x1234
        );
        let f = frame(&s, 100).unwrap().unwrap();
        assert_eq!(subscribe_filters(&s, f).unwrap(), vec!["a/#", "c"]);
        let truncated = [0x82, 4, 0, 1, 0, 3];
        let f = frame(&truncated, 100).unwrap().unwrap();
        assert!(subscribe_filters(&truncated, f).is_err());
    }

    proptest! {
        /// Arbitrary bytes never panic the parsers.
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Some(f)) = frame(&bytes, 1 << 16) {
                let _ = parse_connect(&bytes, f);
                let _ = parse_publish(&bytes, f);
                let _ = leading_u16(&bytes, f);
                let _ = subscribe_filters(&bytes, f);
            }
        }
    }
}
