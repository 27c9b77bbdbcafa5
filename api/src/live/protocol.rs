//! The live feed's JSON protocol (`GET /api/v1/live`).
//!
//! Client → server, one JSON object per text message:
//! - `{"op":"subscribe","channel":"readings","meters":["m-1"]}` or `…,"feeder":"F1"}`: clean
//!   readings of those meters, or of every meter of the feeder;
//! - `{"op":"subscribe","channel":"aggregates"}`: every interval and window aggregate, or
//!   only those of `meters` / `feeder`;
//! - `{"op":"subscribe","channel":"alerts","after":42}`: alert lifecycle events; `after` (the
//!   `cursor` of the last event received) first replays what was missed;
//! - `{"op":"subscribe","channel":"stats"}`: fleet statistics every `live.stats_interval`;
//! - `{"op":"unsubscribe",…}` with the same selector (no selector: the whole channel);
//! - `{"op":"ping","id":…}`: answered by `{"type":"pong","id":…}`.
//!
//! Server → client: `{"seq":N,"type":…}` with `seq` counting this connection's messages from 1:
//! `welcome`, `subscribed`, `unsubscribed`, `reading`, `aggregate`, `alert` (with `cursor`),
//! `stats`, `pong`, `error` (`code`, `message`) and `lagged` (`dropped`: messages this client
//! lost because it read too slowly).

use std::collections::BTreeSet;

use meterstack_core::reading::MeterId;
use serde::Deserialize;
use serde_json::{Value, json};

/// What a client can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Channel {
    /// Clean readings of chosen meters or a feeder.
    Readings,
    /// Interval and window aggregates.
    Aggregates,
    /// Alert lifecycle events.
    Alerts,
    /// Fleet statistics.
    Stats,
}

impl Channel {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Channel::Readings => "readings",
            Channel::Aggregates => "aggregates",
            Channel::Alerts => "alerts",
            Channel::Stats => "stats",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Wire {
    Subscribe(WireSelection),
    Unsubscribe(WireSelection),
    Ping {
        #[serde(default)]
        id: Value,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSelection {
    channel: Channel,
    #[serde(default)]
    meters: Vec<String>,
    #[serde(default)]
    feeder: Option<String>,
    #[serde(default)]
    after: Option<i64>,
}

/// Which records of a channel: empty sets mean the whole channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Selector {
    pub(crate) meters: BTreeSet<String>,
    pub(crate) feeders: BTreeSet<String>,
}

impl Selector {
    pub(crate) fn is_all(&self) -> bool {
        self.meters.is_empty() && self.feeders.is_empty()
    }
}

/// A valid client request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Request {
    Subscribe {
        channel: Channel,
        selector: Selector,
        /// Alerts: replay events after this cursor first.
        after: Option<i64>,
    },
    Unsubscribe {
        channel: Channel,
        selector: Selector,
    },
    Ping {
        id: Value,
    },
}

/// Parses one client message; `max_meters` bounds a selector. The error is for the client.
pub(crate) fn parse(text: &str, max_meters: usize) -> Result<Request, String> {
    let wire: Wire = serde_json::from_str(text).map_err(|e| {
        format!(
            "not a request ({e}); send {{\"op\":\"subscribe\",\"channel\":\"readings\",\"meters\":[\"…\"]}}"
        )
    })?;
    let (subscribe, sel) = match wire {
        Wire::Ping { id } => return Ok(Request::Ping { id }),
        Wire::Subscribe(sel) => (true, sel),
        Wire::Unsubscribe(sel) => (false, sel),
    };
    if sel.meters.len() > max_meters {
        return Err(format!(
            "at most {max_meters} meters per request; subscribe to a feeder instead"
        ));
    }
    let mut selector = Selector::default();
    for m in sel.meters {
        let id = MeterId::new(&m).map_err(|e| format!("meter {m:?}: {e}"))?;
        selector.meters.insert(id.as_str().to_owned());
    }
    if let Some(f) = sel.feeder {
        if f.is_empty() || f.len() > 128 || f.chars().any(char::is_control) {
            return Err("feeder: 1 to 128 printable characters".into());
        }
        selector.feeders.insert(f);
    }
    match sel.channel {
        Channel::Readings if subscribe && selector.is_all() => {
            return Err("readings need \"meters\" or a \"feeder\"".into());
        }
        Channel::Alerts | Channel::Stats if !selector.is_all() => {
            return Err(format!(
                "channel {} takes no meters or feeder",
                sel.channel.name()
            ));
        }
        _ => {}
    }
    if sel.after.is_some() && !(subscribe && sel.channel == Channel::Alerts) {
        return Err("\"after\" is for subscribing to alerts".into());
    }
    if sel.after.is_some_and(|a| a < 0) {
        return Err("\"after\" is a cursor: 0 or more".into());
    }
    Ok(if subscribe {
        Request::Subscribe {
            channel: sel.channel,
            selector,
            after: sel.after,
        }
    } else {
        Request::Unsubscribe {
            channel: sel.channel,
            selector,
        }
    })
}

/// The answer to a (un)subscription.
pub(crate) fn subscribed(subscribe: bool, channel: Channel, selector: &Selector) -> Value {
    json!({
        "type": if subscribe { "subscribed" } else { "unsubscribed" },
        "channel": channel.name(),
        "meters": selector.meters,
        "feeders": selector.feeders,
    })
}

/// An error message.
pub(crate) fn error(code: &str, message: &str) -> Value {
    json!({ "type": "error", "code": code, "message": message })
}

/// The wire form of a server message: `{"seq":N,` followed by `body` (a JSON object) without
/// its opening brace. Bodies are serialized once and shared by every client.
pub(crate) fn frame(seq: u64, body: &str) -> String {
    let rest = body.strip_prefix('{').unwrap_or(body);
    let mut out = String::with_capacity(rest.len() + 24);
    out.push_str("{\"seq\":");
    out.push_str(&seq.to_string());
    if rest != "}" {
        out.push(',');
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests_parse_and_bad_ones_are_explained() {
        let r = parse(
            r#"{"op":"subscribe","channel":"readings","meters":["m-1","m-2"]}"#,
            10,
        )
        .expect("valid");
        let Request::Subscribe {
            channel, selector, ..
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(channel, Channel::Readings);
        assert_eq!(selector.meters.len(), 2);
        assert_eq!(
            parse(r#"{"op":"subscribe","channel":"alerts","after":7}"#, 10).expect("valid"),
            Request::Subscribe {
                channel: Channel::Alerts,
                selector: Selector::default(),
                after: Some(7)
            }
        );
        assert!(matches!(
            parse(r#"{"op":"ping","id":3}"#, 10).expect("valid"),
            Request::Ping { .. }
        ));
        for (bad, why) in [
            ("", "not a request"),
            ("[]", "not a request"),
            (r#"{"op":"subscribe"}"#, "not a request"),
            (r#"{"op":"shout","channel":"alerts"}"#, "not a request"),
            (r#"{"op":"subscribe","channel":"weather"}"#, "not a request"),
            (
                r#"{"op":"subscribe","channel":"alerts","x":1}"#,
                "not a request",
            ),
            (r#"{"op":"subscribe","channel":"readings"}"#, "need"),
            (
                r#"{"op":"subscribe","channel":"readings","meters":["a b"]}"#,
                "meter",
            ),
            (
                r#"{"op":"subscribe","channel":"readings","meters":["1","2","3"]}"#,
                "at most 2",
            ),
            (
                r#"{"op":"subscribe","channel":"stats","feeder":"F"}"#,
                "takes no",
            ),
            (
                r#"{"op":"subscribe","channel":"readings","feeder":"F","after":1}"#,
                "after",
            ),
            (
                r#"{"op":"subscribe","channel":"alerts","after":-1}"#,
                "cursor",
            ),
            (
                r#"{"op":"subscribe","channel":"aggregates","feeder":""}"#,
                "feeder",
            ),
        ] {
            let e = parse(bad, 2).expect_err("refused");
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn frames_put_the_sequence_number_first() {
        let body = serde_json::to_string(&error("x", "y")).expect("valid");
        let f = frame(12, &body);
        let v: Value = serde_json::from_str(&f).expect("valid");
        assert_eq!(v["seq"], 12);
        assert_eq!(v["type"], "error");
        assert!(f.starts_with("{\"seq\":12,"));
        assert_eq!(frame(1, "{}"), "{\"seq\":1}");
    }

    proptest! {
        /// Any text is a request or a clear error, never a panic.
        #[test]
        fn any_text_parses_or_is_refused(text in ".{0,200}") {
            let _ = parse(&text, 5);
        }

        /// Any JSON object shaped like a request is parsed or refused with a message.
        #[test]
        fn request_shaped_json_parses_or_is_refused(
            op in prop::sample::select(vec!["subscribe", "unsubscribe", "ping", "x"]),
            channel in prop::sample::select(vec!["readings", "aggregates", "alerts", "stats", ""]),
            meters in prop::collection::vec("[a-z0-9 -]{0,8}", 0..4),
            after in prop::option::of(any::<i64>()),
        ) {
            let text = json!({"op": op, "channel": channel, "meters": meters, "after": after}).to_string();
            match parse(&text, 3) {
                Ok(_) => {}
                Err(e) => prop_assert!(!e.is_empty()),
            }
        }
    }
}
