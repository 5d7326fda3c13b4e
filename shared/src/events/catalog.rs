//! The event catalog: OneFuzz's 28 types (SPEC §5) and the 2 operational ones (§10), each with
//! its payload's JSON Schema and an example. Schemas and examples are embedded in the binary
//! and each schema is compiled on first use, so cold starts pay only for the types they see.
//! A leaf module: it imports nothing from the rest of the crate but the helper that cuts
//! client-supplied text short for messages (`telemetry::client_value`).

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Why a name or a payload was refused. The text is safe to show to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// Exactly SPEC §3's wording: OneFuzz clients and checks compare this text.
    #[error("unknown event type: {0}")]
    UnknownType(String),
    #[error("event does not match the {event_type} schema: {problems}")]
    SchemaMismatch { event_type: EventType, problems: String },
    /// The embedded data is broken: a build defect, not the client's fault.
    #[error("{0}")]
    Embedded(String),
}

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
    WebhookDisabled => "webhook_disabled",
    DeliveryFailed => "delivery_failed",
}

impl EventType {
    /// Parses a catalog name; an unknown one is refused in SPEC §3's words.
    pub fn parse(value: &str) -> Result<Self, CatalogError> {
        value.parse()
    }

    /// The service's own types (SPEC §10), raised by the sender rather than a producer.
    pub fn is_operational(self) -> bool {
        matches!(self, Self::WebhookDisabled | Self::DeliveryFailed)
    }

    /// Whether `"*"` subscribes to this type: every OneFuzz type, present and future, but no
    /// operational type, which must be named (SPEC §9.2).
    pub fn matched_by_wildcard(self) -> bool {
        !self.is_operational()
    }

    /// The JSON Schema `event` payloads of this type are validated against.
    pub fn schema(self) -> Result<&'static Value, CatalogError> {
        lookup(embedded_schemas(), self, "schema")
    }

    /// An example payload; it validates against [`EventType::schema`].
    pub fn example(self) -> Result<&'static Value, CatalogError> {
        lookup(embedded_examples(), self, "example")
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
    pub fn validate(self, event: &Value) -> Result<(), CatalogError> {
        let validator = compiled(self).as_ref().map_err(|message| CatalogError::Embedded(message.clone()))?;
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
            Err(CatalogError::SchemaMismatch { event_type: self, problems: problems.join("; ") })
        }
    }
}

impl FromStr for EventType {
    type Err = CatalogError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .find(|t| t.as_str() == value)
            .copied()
            // A long name is cut short: it is echoed to the client and logged.
            .ok_or_else(|| CatalogError::UnknownType(crate::telemetry::client_value(value)))
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
const EXAMPLES_JSON: &str = include_str!("../../data/event-examples.json");

type Embedded = Result<serde_json::Map<String, Value>, String>;
type Compiled = Result<jsonschema::Validator, String>;

fn embedded_schemas() -> &'static Embedded {
    static SCHEMAS: OnceLock<Embedded> = OnceLock::new();
    SCHEMAS
        .get_or_init(|| serde_json::from_str(SCHEMAS_JSON).map_err(|e| format!("embedded schemas are not JSON: {e}")))
}

fn embedded_examples() -> &'static Embedded {
    static EXAMPLES: OnceLock<Embedded> = OnceLock::new();
    EXAMPLES
        .get_or_init(|| serde_json::from_str(EXAMPLES_JSON).map_err(|e| format!("embedded examples are not JSON: {e}")))
}

fn lookup(data: &'static Embedded, event_type: EventType, what: &str) -> Result<&'static Value, CatalogError> {
    data.as_ref()
        .map_err(|e| CatalogError::Embedded(e.clone()))?
        .get(event_type.as_str())
        .ok_or_else(|| CatalogError::Embedded(format!("no {what} for {event_type}")))
}

fn compiled(event_type: EventType) -> &'static Compiled {
    static VALIDATORS: [OnceLock<Compiled>; EventType::ALL.len()] = [const { OnceLock::new() }; EventType::ALL.len()];

    VALIDATORS[event_type.index()].get_or_init(|| {
        let schema = event_type.schema().map_err(|e| e.to_string())?;
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

    #[test]
    fn the_catalog_has_the_28_spec_types_and_the_2_operational_ones_and_each_schema_compiles() {
        assert_eq!(EventType::ALL.len(), 30);
        assert_eq!(EventType::ALL.iter().filter(|t| t.is_operational()).count(), 2);
        for t in EventType::ALL {
            assert!(compiled(*t).is_ok(), "{t}");
            assert_eq!(EventType::parse(t.as_str()), Ok(*t));
        }
    }

    #[test]
    fn every_example_event_validates_against_its_schema() {
        for t in EventType::ALL {
            let example = t.example().unwrap();
            assert_eq!(t.validate(example), Ok(()), "{t}");
        }
    }

    #[test]
    fn only_the_operational_types_escape_the_wildcard() {
        let escaping: Vec<&str> =
            EventType::ALL.iter().filter(|t| !t.matched_by_wildcard()).map(|t| t.as_str()).collect();

        assert_eq!(escaping, ["webhook_disabled", "delivery_failed"]);
    }

    #[test]
    fn an_event_missing_a_required_field_is_refused_with_its_path() {
        let err = EventType::Ping.validate(&serde_json::json!({"other": 1})).unwrap_err();

        assert!(err.to_string().contains("ping_id"), "{err}");
    }

    #[test]
    fn a_malformed_uuid_in_an_event_is_refused() {
        let err = EventType::Ping.validate(&serde_json::json!({"ping_id": "nope"})).unwrap_err();

        assert!(err.to_string().contains("/ping_id"), "{err}");
    }

    #[test]
    fn an_unknown_event_type_is_refused_in_the_specs_exact_words() {
        let err = EventType::parse("tsk_created").unwrap_err();

        assert_eq!(err.to_string(), "unknown event type: tsk_created");
    }

    #[test]
    fn the_closest_known_type_is_offered_only_for_a_near_miss() {
        assert_eq!(EventType::closest("tsk_created"), Some(EventType::TaskCreated));
        assert_eq!(EventType::closest("zzzzzzzzzzzzzzzzzzzzzz"), None);
    }
}
