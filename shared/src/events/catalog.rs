//! The 28 OneFuzz event types and their payload schemas (SPEC §5). Schemas are embedded in the
//! binary and each is compiled on first use, so cold starts pay only for the types they see.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::domain::ParseError;

macro_rules! event_types {
    ($($variant:ident => $name:literal),+ $(,)?) => {
        /// An event type of the catalog. Only catalog names parse.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType { $($variant),+ }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(EventType::$variant => $name),+ }
            }

            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

event_types! {
    CrashReported => "crash_reported",
    FileAdded => "file_added",
    InstanceConfigUpdated => "instance_config_updated",
    JobCreated => "job_created",
    JobStopped => "job_stopped",
    NodeCreated => "node_created",
    NodeDeleted => "node_deleted",
    NodeHeartbeat => "node_heartbeat",
    NodeStateUpdated => "node_state_updated",
    NotificationFailed => "notification_failed",
    Ping => "ping",
    PoolCreated => "pool_created",
    PoolDeleted => "pool_deleted",
    ProxyCreated => "proxy_created",
    ProxyDeleted => "proxy_deleted",
    ProxyFailed => "proxy_failed",
    ProxyStateUpdated => "proxy_state_updated",
    RegressionReported => "regression_reported",
    ScalesetCreated => "scaleset_created",
    ScalesetDeleted => "scaleset_deleted",
    ScalesetFailed => "scaleset_failed",
    ScalesetResizeScheduled => "scaleset_resize_scheduled",
    ScalesetStateUpdated => "scaleset_state_updated",
    TaskCreated => "task_created",
    TaskFailed => "task_failed",
    TaskHeartbeat => "task_heartbeat",
    TaskStateUpdated => "task_state_updated",
    TaskStopped => "task_stopped",
}

impl EventType {
    /// Parses a catalog name; an unknown one is refused in SPEC §3's words.
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        value.parse()
    }

    /// The known type whose name is closest to `value`, if one is near enough to be a typo.
    /// The CLI offers it as a hint; the API keeps its error text exact.
    pub fn closest(value: &str) -> Option<EventType> {
        Self::ALL
            .iter()
            .map(|t| (strsim::levenshtein(t.as_str(), value), *t))
            .min_by_key(|(distance, _)| *distance)
            .filter(|(distance, _)| *distance <= 3)
            .map(|(_, t)| t)
    }

    /// Checks an event payload against this type's JSON Schema. The message lists the first
    /// few violations with their JSON pointers.
    pub fn validate(self, event: &Value) -> Result<(), ParseError> {
        let validator = match compiled(self) {
            Ok(validator) => validator,
            Err(message) => return Err(ParseError::new(message.clone())),
        };
        let problems: Vec<String> = validator
            .iter_errors(event)
            .take(3)
            .map(|error| {
                let path = error.instance_path().to_string();
                let at = if path.is_empty() { "/".to_owned() } else { path };
                format!("{at}: {error}")
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ParseError::new(format!("event does not match the {} schema: {}", self.as_str(), problems.join("; "))))
        }
    }
}

impl FromStr for EventType {
    type Err = ParseError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match Self::ALL.iter().find(|t| t.as_str() == value) {
            Some(found) => Ok(*found),
            // Exactly SPEC §3's wording: OneFuzz clients and checks compare this text.
            // A long name is cut short: it is echoed to the client and logged.
            None => Err(ParseError::new(format!("{UNKNOWN_EVENT_TYPE}{}", crate::telemetry::client_value(value)))),
        }
    }
}

/// How a refused event type's error begins; the rest is the name as given.
pub const UNKNOWN_EVENT_TYPE: &str = "unknown event type: ";

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

const SCHEMAS_JSON: &str = include_str!("../../data/event-schemas.json");

type Compiled = Result<jsonschema::Validator, String>;

fn compiled(event_type: EventType) -> &'static Compiled {
    static SCHEMAS: OnceLock<Result<serde_json::Map<String, Value>, String>> = OnceLock::new();
    static VALIDATORS: [OnceLock<Compiled>; 28] = [const { OnceLock::new() }; 28];

    VALIDATORS[event_type.index()].get_or_init(|| {
        let schemas = SCHEMAS.get_or_init(|| {
            serde_json::from_str(SCHEMAS_JSON).map_err(|e| format!("embedded schemas are not JSON: {e}"))
        });
        let schema = schemas
            .as_ref()
            .map_err(Clone::clone)?
            .get(event_type.as_str())
            .ok_or_else(|| format!("no schema for {event_type}"))?;
        // OneFuzz's pydantic models reject a malformed uuid or date-time; so must we.
        jsonschema::options()
            .should_validate_formats(true)
            .build(schema)
            .map_err(|e| format!("schema for {event_type} does not compile: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLES: &str = include_str!("../../data/event-examples.json");

    #[test]
    fn the_catalog_has_the_28_spec_types_and_each_schema_compiles() {
        assert_eq!(EventType::ALL.len(), 28);
        for t in EventType::ALL {
            assert!(compiled(*t).is_ok(), "{t}");
            assert_eq!(EventType::parse(t.as_str()), Ok(*t));
        }
    }

    #[test]
    fn every_example_event_validates_against_its_schema() {
        let examples: serde_json::Map<String, Value> = serde_json::from_str(EXAMPLES).unwrap();

        for t in EventType::ALL {
            let example = &examples[t.as_str()];
            assert_eq!(t.validate(example), Ok(()), "{t}");
        }
    }

    #[test]
    fn an_event_missing_a_required_field_is_refused_with_its_path() {
        let err = EventType::Ping.validate(&serde_json::json!({"other": 1})).unwrap_err();

        assert!(err.0.contains("ping_id"), "{err}");
    }

    #[test]
    fn a_malformed_uuid_in_an_event_is_refused() {
        let err = EventType::Ping.validate(&serde_json::json!({"ping_id": "nope"})).unwrap_err();

        assert!(err.0.contains("/ping_id"), "{err}");
    }

    #[test]
    fn an_unknown_event_type_is_refused_in_the_specs_exact_words() {
        let err = EventType::parse("tsk_created").unwrap_err();

        assert_eq!(err.0, "unknown event type: tsk_created");
    }

    #[test]
    fn the_closest_known_type_is_offered_only_for_a_near_miss() {
        assert_eq!(EventType::closest("tsk_created"), Some(EventType::TaskCreated));
        assert_eq!(EventType::closest("zzzzzzzzzzzzzzzzzzzzzz"), None);
    }
}
