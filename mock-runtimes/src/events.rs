//! The mock's event logs: events kept prost-encoded in a bounded ring, encoded straight from an
//! object's borrowed metadata, and the filter the `ListEvents` RPCs share.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use iri_spec::{event::v1alpha1 as event, kind::Service, meta::v1alpha1 as meta};
use prost::Message as _;

/// One event, prost-encoded as an `event::Event`: one allocation per event, where the decoded
/// message holds a copy of the object's metadata with its label and annotation maps.
#[derive(Debug, Clone)]
pub(crate) struct EncodedEvent(Box<[u8]>);

impl From<event::Event> for EncodedEvent {
    fn from(ev: event::Event) -> Self {
        EncodedEvent(ev.encode_to_vec().into_boxed_slice())
    }
}

/// The borrowed fields of an `event::EventSpec`, encoded without copying the metadata.
pub(crate) struct EventParts<'a> {
    pub(crate) meta: &'a meta::ObjectMetadata,
    pub(crate) reason: &'a str,
    pub(crate) message: &'a str,
    pub(crate) r#type: &'a str,
    pub(crate) event_time: i64,
    pub(crate) action: &'a str,
}

impl EventParts<'_> {
    /// Field numbers of `EventSpec` (iri-spec/proto/event/v1alpha1/api.proto).
    const META: u32 = 1;
    const REASON: u32 = 2;
    const MESSAGE: u32 = 3;
    const TYPE: u32 = 4;
    const EVENT_TIME: u32 = 5;
    const ACTION: u32 = 6;
    /// Field number of `Event.spec`.
    const SPEC: u32 = 2;

    fn str_len(tag: u32, value: &str) -> usize {
        if value.is_empty() {
            0
        } else {
            prost::encoding::key_len(tag)
                + prost::encoding::encoded_len_varint(value.len() as u64)
                + value.len()
        }
    }

    fn put_str(tag: u32, value: &str, buf: &mut Vec<u8>) {
        if value.is_empty() {
            return;
        }
        prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, buf);
        prost::encoding::encode_varint(value.len() as u64, buf);
        buf.extend_from_slice(value.as_bytes());
    }

    /// Encodes `Event { spec: Some(EventSpec { .. }) }` exactly as prost would.
    pub(crate) fn encode(&self) -> EncodedEvent {
        use prost::encoding::{encode_key, encode_varint, encoded_len_varint, int64, message};
        let spec_len = message::encoded_len(Self::META, self.meta)
            + Self::str_len(Self::REASON, self.reason)
            + Self::str_len(Self::MESSAGE, self.message)
            + Self::str_len(Self::TYPE, self.r#type)
            + if self.event_time == 0 {
                0
            } else {
                int64::encoded_len(Self::EVENT_TIME, &self.event_time)
            }
            + Self::str_len(Self::ACTION, self.action);
        let total =
            prost::encoding::key_len(Self::SPEC) + encoded_len_varint(spec_len as u64) + spec_len;
        let mut buf = Vec::with_capacity(total);
        encode_key(
            Self::SPEC,
            prost::encoding::WireType::LengthDelimited,
            &mut buf,
        );
        encode_varint(spec_len as u64, &mut buf);
        message::encode(Self::META, self.meta, &mut buf);
        Self::put_str(Self::REASON, self.reason, &mut buf);
        Self::put_str(Self::MESSAGE, self.message, &mut buf);
        Self::put_str(Self::TYPE, self.r#type, &mut buf);
        if self.event_time != 0 {
            int64::encode(Self::EVENT_TIME, &self.event_time, &mut buf);
        }
        Self::put_str(Self::ACTION, self.action, &mut buf);
        EncodedEvent(buf.into_boxed_slice())
    }
}

/// A bounded ring of events.
#[derive(Debug)]
pub(crate) struct EventLog {
    events: VecDeque<EncodedEvent>,
    capacity: usize,
}

impl EventLog {
    pub(crate) fn new(capacity: usize) -> Self {
        EventLog {
            events: VecDeque::new(),
            capacity,
        }
    }

    pub(crate) fn push(&mut self, ev: impl Into<EncodedEvent>) {
        if self.capacity == 0 {
            return;
        }
        if self.events.len() >= self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(ev.into());
    }

    /// Decoded copies of the events, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = event::Event> + '_ {
        // The bytes were encoded from an `event::Event`, so decoding cannot fail.
        self.events
            .iter()
            .map(|ev| event::Event::decode(&ev.0[..]).unwrap_or_default())
    }
}

/// The filter fields common to the three `EventFilter` messages.
#[derive(Debug, Default, Clone)]
pub(crate) struct EventQuery {
    pub(crate) id: String,
    pub(crate) labels: HashMap<String, String>,
    pub(crate) from: i64,
    pub(crate) to: i64,
}

/// The event log of each service (a volume service's log has its volumes' and its snapshots'
/// events, in the order they happened).
#[derive(Debug)]
pub(crate) struct EventLogs {
    machine: Mutex<EventLog>,
    volume: Mutex<EventLog>,
    bucket: Mutex<EventLog>,
}

impl EventLogs {
    pub(crate) fn new(capacity: usize) -> Self {
        EventLogs {
            machine: Mutex::new(EventLog::new(capacity)),
            volume: Mutex::new(EventLog::new(capacity)),
            bucket: Mutex::new(EventLog::new(capacity)),
        }
    }

    /// The log of `service`.
    pub(crate) fn of(&self, service: Service) -> &Mutex<EventLog> {
        match service {
            Service::Machine => &self.machine,
            Service::Volume => &self.volume,
            Service::Bucket => &self.bucket,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Metadata with one label, one annotation and fixed numbers.
    pub(crate) fn labelled_meta(id: &str) -> meta::ObjectMetadata {
        meta::ObjectMetadata {
            id: id.to_owned(),
            labels: HashMap::from([("a".to_owned(), "1".to_owned())]),
            annotations: HashMap::from([("b".to_owned(), "2".to_owned())]),
            generation: 3,
            created_at: 17,
            deleted_at: 0,
        }
    }

    #[test]
    fn borrowed_event_encoding_matches_prost() {
        let meta = labelled_meta("m1");
        for (message, action, event_time) in [
            ("machine created", "Create", 1_700_000_000),
            ("", "", 0),
            ("x", "", -5),
        ] {
            let parts = EventParts {
                meta: &meta,
                reason: "Created",
                message,
                r#type: "Normal",
                event_time,
                action,
            };
            let expected = event::Event {
                spec: Some(event::EventSpec {
                    involved_object_meta: Some(meta.clone()),
                    reason: "Created".to_owned(),
                    message: message.to_owned(),
                    r#type: "Normal".to_owned(),
                    event_time,
                    action: action.to_owned(),
                }),
            };
            let encoded = parts.encode();
            assert_eq!(event::Event::decode(&encoded.0[..]).unwrap(), expected);
            // Same bytes as prost up to map order, so compare lengths as well.
            assert_eq!(encoded.0.len(), expected.encoded_len());
        }
    }
}
