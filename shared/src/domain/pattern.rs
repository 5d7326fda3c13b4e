//! What a webhook subscribes to: one event type, or `"*"` (SPEC §9.2).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ParseError;
use crate::events::EventType;

/// One entry of a webhook's `event_types`. `All` is stored as itself, not expanded, so a type
/// a later version adds reaches it without a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventPattern {
    /// `"*"`: every OneFuzz type; operational types must be named.
    All,
    Type(EventType),
}

impl EventPattern {
    pub const ALL_NAME: &'static str = "*";

    /// `"*"` or a catalog name; an unknown name is refused in SPEC §3's words.
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        if value == Self::ALL_NAME { Ok(Self::All) } else { Ok(Self::Type(EventType::parse(value)?)) }
    }

    /// The stored spelling, also the key of its subscription items.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => Self::ALL_NAME,
            Self::Type(event_type) => event_type.as_str(),
        }
    }

    pub fn matches(self, event_type: EventType) -> bool {
        match self {
            Self::All => event_type.matched_by_wildcard(),
            Self::Type(named) => named == event_type,
        }
    }
}

impl From<EventType> for EventPattern {
    fn from(event_type: EventType) -> Self {
        Self::Type(event_type)
    }
}

impl fmt::Display for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Self::parse(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wildcard_matches_every_onefuzz_type_but_no_operational_one() {
        for t in EventType::ALL {
            assert_eq!(EventPattern::All.matches(*t), !t.is_operational(), "{t}");
            assert!(EventPattern::Type(*t).matches(*t));
        }
        assert!(!EventPattern::All.matches(EventType::WebhookDisabled));
        assert!(!EventPattern::All.matches(EventType::DeliveryFailed));
        assert!(EventPattern::All.matches(EventType::Ping));
        assert!(!EventPattern::Type(EventType::TaskCreated).matches(EventType::TaskFailed));
    }

    #[test]
    fn patterns_round_trip_through_their_stored_spelling() {
        for text in ["*", "task_created", "delivery_failed"] {
            let pattern = EventPattern::parse(text).unwrap();
            assert_eq!(pattern.as_str(), text);
            assert_eq!(serde_json::to_value(pattern).unwrap(), text);
            assert_eq!(serde_json::from_value::<EventPattern>(serde_json::json!(text)).unwrap(), pattern);
        }
        assert_eq!(EventPattern::parse("tsk_created").unwrap_err().0, "unknown event type: tsk_created");
        assert!(EventPattern::parse("**").is_err() && EventPattern::parse("task_*").is_err());
    }
}
