//! Deployment configuration from the environment (SPEC §8). Missing or malformed values fail
//! at cold start with a message naming the variable.

use std::time::Duration;

use uuid::Uuid;

use crate::delivery::CidrList;
use crate::domain::SecretToken;

/// Namespace for the default instance id: UUID v5 of the instance name, stable across deploys.
const INSTANCE_NAMESPACE: Uuid = Uuid::from_u128(0x2b0c_6a4e_91d3_4f57_8e20_5c1a_9d7b_3e46);

/// Longest single wait between attempts: a week.
const MAX_RETRY_STEP_SECS: u64 = 7 * 86400;

pub const DEFAULT_RETRY_SCHEDULE_SECS: [u64; 7] = [5, 300, 1800, 7200, 18000, 36000, 36000];

#[derive(thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is required but not set")]
    Missing { name: &'static str },
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// A Lambda `main` returning this prints it with `Debug`: make that the readable message.
impl std::fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub table_name: Option<String>,
    pub events_queue_url: Option<String>,
    pub dead_letter_queue_url: Option<String>,
    pub instance_name: String,
    pub instance_id: Uuid,
    pub https_only: bool,
    pub allowed_target_cidrs: CidrList,
    /// Deliver only to `allowed_target_cidrs`, never to public addresses.
    pub deny_public_targets: bool,
    pub delivery_timeout: Duration,
    /// Waits before attempts 2, 3, ...; its length + 1 is the number of attempts.
    pub retry_schedule: Vec<Duration>,
    pub log_retention: chrono::Duration,
    /// How long a replaced secret keeps signing, so receivers can roll over.
    pub secret_rotation_grace: chrono::Duration,
    /// A webhook whose deliveries all failed for this long is disabled.
    pub auto_disable_after: chrono::Duration,
    /// Deliveries in flight at once per sender process.
    pub delivery_concurrency: usize,
    /// Subscribers an event is delivered to inline; the rest go through the queue as one task
    /// per webhook, so a sender batch always finishes within its time limit.
    pub fanout_inline_limit: usize,
    /// Local mode only: when set, every route requires `Authorization: Bearer <token>`.
    pub api_token: Option<SecretToken>,
}

impl Default for Config {
    fn default() -> Self {
        Self::from_lookup(|_| None).unwrap_or_else(|_| unreachable!("defaults always parse"))
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let instance_name = get("INSTANCE_NAME").unwrap_or_else(|| "webhooks".to_owned());
        let instance_id = match get("INSTANCE_ID") {
            Some(id) => Uuid::parse_str(&id).map_err(|e| invalid("INSTANCE_ID", e))?,
            None => Uuid::new_v5(&INSTANCE_NAMESPACE, instance_name.as_bytes()),
        };
        let retry_schedule = match get("RETRY_SCHEDULE") {
            Some(text) => text
                .split(',')
                .map(|s| match s.trim().parse::<u64>() {
                    Ok(secs) if secs <= MAX_RETRY_STEP_SECS => Ok(Duration::from_secs(secs)),
                    _ => Err(invalid(
                        "RETRY_SCHEDULE",
                        format!("comma-separated seconds from 0 to {MAX_RETRY_STEP_SECS} expected, got {s:?}"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => DEFAULT_RETRY_SCHEDULE_SECS.iter().map(|s| Duration::from_secs(*s)).collect(),
        };
        let config = Self {
            table_name: get("TABLE_NAME"),
            events_queue_url: get("EVENTS_QUEUE_URL"),
            dead_letter_queue_url: get("DEAD_LETTER_QUEUE_URL"),
            instance_name,
            instance_id,
            https_only: flag(get("HTTPS_ONLY"), "HTTPS_ONLY")?,
            allowed_target_cidrs: match get("ALLOWED_TARGET_CIDRS") {
                Some(text) => text.parse().map_err(|e| invalid("ALLOWED_TARGET_CIDRS", e))?,
                None => CidrList::default(),
            },
            deny_public_targets: flag(get("DENY_PUBLIC_TARGETS"), "DENY_PUBLIC_TARGETS")?,
            delivery_timeout: Duration::from_secs(bounded(
                get("DELIVERY_TIMEOUT_SECS"),
                "DELIVERY_TIMEOUT_SECS",
                15,
                1,
                300,
            )?),
            retry_schedule,
            log_retention: chrono::Duration::days(
                bounded(get("LOG_RETENTION_DAYS"), "LOG_RETENTION_DAYS", 7, 1, 3650)? as i64,
            ),
            secret_rotation_grace: chrono::Duration::seconds(number(
                get("SECRET_ROTATION_GRACE_SECS"),
                "SECRET_ROTATION_GRACE_SECS",
                24 * 3600,
            )? as i64),
            auto_disable_after: chrono::Duration::seconds(number(
                get("AUTO_DISABLE_AFTER_SECS"),
                "AUTO_DISABLE_AFTER_SECS",
                5 * 24 * 3600,
            )? as i64),
            delivery_concurrency: number(get("DELIVERY_CONCURRENCY"), "DELIVERY_CONCURRENCY", 32)?.max(1) as usize,
            fanout_inline_limit: number(get("FANOUT_INLINE_LIMIT"), "FANOUT_INLINE_LIMIT", 16)? as usize,
            api_token: match get("WEBHOOKS_API_TOKEN") {
                Some(token) => {
                    Some(SecretToken::parse(&token).map_err(|_| invalid("WEBHOOKS_API_TOKEN", "1-1024 characters"))?)
                }
                None => None,
            },
        };
        config.check_retention()?;
        Ok(config)
    }

    /// A log entry must outlive its retries: the sender continues a retry from the entry.
    fn check_retention(&self) -> Result<(), ConfigError> {
        let schedule: Duration = self.retry_schedule.iter().sum();
        let needed = chrono::Duration::from_std(schedule.mul_f64(1.25)).unwrap_or(chrono::Duration::MAX);
        if self.log_retention < needed {
            return Err(invalid(
                "LOG_RETENTION_DAYS",
                format!("must cover the retry schedule with jitter ({} hours)", needed.num_hours() + 1),
            ));
        }
        Ok(())
    }

    pub fn require_table_name(&self) -> Result<&str, ConfigError> {
        self.table_name.as_deref().ok_or(ConfigError::Missing { name: "TABLE_NAME" })
    }

    pub fn require_events_queue_url(&self) -> Result<&str, ConfigError> {
        self.events_queue_url.as_deref().ok_or(ConfigError::Missing { name: "EVENTS_QUEUE_URL" })
    }

    pub fn require_dead_letter_queue_url(&self) -> Result<&str, ConfigError> {
        self.dead_letter_queue_url.as_deref().ok_or(ConfigError::Missing { name: "DEAD_LETTER_QUEUE_URL" })
    }

    pub fn ingest_defaults(&self) -> crate::events::IngestDefaults {
        crate::events::IngestDefaults { instance_id: self.instance_id, instance_name: self.instance_name.clone() }
    }
}

fn invalid(name: &'static str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid { name, reason: reason.to_string() }
}

fn flag(value: Option<String>, name: &'static str) -> Result<bool, ConfigError> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("0" | "false" | "no" | "off") => Ok(false),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some(other) => Err(invalid(name, format!("expected true or false, got {other:?}"))),
    }
}

fn number(value: Option<String>, name: &'static str, default: u64) -> Result<u64, ConfigError> {
    bounded(value, name, default, 0, u64::from(u32::MAX))
}

/// A whole number within `min..=max`, so later time arithmetic cannot overflow.
fn bounded(value: Option<String>, name: &'static str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    let Some(text) = value else { return Ok(default) };
    match text.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(invalid(name, format!("expected a whole number from {min} to {max}, got {text:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn defaults_follow_the_spec() {
        let config = config(&[]).unwrap();

        assert_eq!(config.instance_name, "webhooks");
        assert_eq!(config.instance_id, Uuid::new_v5(&INSTANCE_NAMESPACE, b"webhooks"));
        assert_eq!(config.delivery_timeout, Duration::from_secs(15));
        assert_eq!(config.retry_schedule.len(), 7);
        assert_eq!(config.log_retention, chrono::Duration::days(7));
        assert!(!config.https_only);
    }

    #[test]
    fn malformed_values_name_the_variable() {
        for (name, value) in [
            ("RETRY_SCHEDULE", "5,x"),
            ("HTTPS_ONLY", "maybe"),
            ("INSTANCE_ID", "nope"),
            ("DELIVERY_TIMEOUT_SECS", "-1"),
        ] {
            let err = config(&[(name, value)]).unwrap_err().to_string();
            assert!(err.starts_with(name), "{err}");
        }
        assert_eq!(
            config(&[]).unwrap().require_table_name().unwrap_err().to_string(),
            "TABLE_NAME is required but not set"
        );
    }

    #[test]
    fn log_retention_shorter_than_the_retry_schedule_is_refused() {
        let err = config(&[("LOG_RETENTION_DAYS", "1")]).unwrap_err().to_string();

        assert!(err.starts_with("LOG_RETENTION_DAYS"), "{err}");
        assert!(config(&[("LOG_RETENTION_DAYS", "1"), ("RETRY_SCHEDULE", "60,600")]).is_ok());
        // The default schedule sums to about 27.6 h; with a quarter more, 2 days are enough.
        assert!(config(&[("LOG_RETENTION_DAYS", "2")]).is_ok());
    }

    #[test]
    fn the_api_token_is_never_printed_in_debug_output() {
        let config = config(&[("WEBHOOKS_API_TOKEN", "tok-very-secret")]).unwrap();

        assert!(!format!("{config:?}").contains("tok-very-secret"));
    }
}
