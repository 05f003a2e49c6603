//! The worker's configuration: parsing, defaults and validation.
//!
//! The user's object arrives as JSON. It is checked once, at start, and the
//! first bad value stops the worker before anything is claimed. Every error
//! names the field, the value and what is allowed. The flat keys of the
//! alpha worker are mapped onto the grouped fields, each with one warning.

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

/// Longest queue name pgmq accepts (its table names add a prefix).
pub const MAX_QUEUE_NAME_LEN: usize = 47;

/// Default for `queue.batchSize`.
pub const DEFAULT_BATCH_SIZE: u32 = 10;
/// Default for `concurrency.maxConcurrent`.
pub const DEFAULT_MAX_CONCURRENT: u32 = 10;
/// Default for `polling.maxPollSeconds`.
pub const DEFAULT_MAX_POLL_SECONDS: u32 = 5;
/// Default for `polling.pollIntervalMs`.
pub const DEFAULT_POLL_INTERVAL_MS: u32 = 100;
/// Default for `lease.visibilityTimeoutSeconds`.
pub const DEFAULT_VISIBILITY_TIMEOUT_SECONDS: u32 = 30;
/// Default for `retry.limit`.
pub const DEFAULT_RETRY_LIMIT: u32 = 5;
/// Default for `retry.delaySeconds`.
pub const DEFAULT_RETRY_DELAY_SECONDS: u32 = 5;
/// Default for `retry.maxDelaySeconds`.
pub const DEFAULT_RETRY_MAX_DELAY_SECONDS: u32 = 300;
/// Default for `handler.graceMs`.
pub const DEFAULT_HANDLER_GRACE_MS: u32 = 2_000;
/// Default for `connection.maxConnections`.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4;
/// Default for `connection.queryTimeoutSeconds`.
pub const DEFAULT_QUERY_TIMEOUT_SECONDS: u32 = 30;
/// Default for `lifecycle.heartbeatIntervalSeconds`.
pub const DEFAULT_HEARTBEAT_INTERVAL_SECONDS: u32 = 5;

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A field holds a value outside what is allowed.
    #[error("{field}: {value} is not allowed; expected {allowed}")]
    Invalid {
        /// Dotted path of the field, such as `retry.limit`.
        field: String,
        /// The value as JSON text.
        value: String,
        /// What the field accepts.
        allowed: String,
    },
    /// A required field is absent.
    #[error("{field} is required; expected {allowed}")]
    Missing {
        /// Dotted path of the field.
        field: String,
        /// What the field accepts.
        allowed: String,
    },
    /// A key that no group knows.
    #[error("{field}: unknown key; allowed keys are {allowed}")]
    UnknownKey {
        /// Dotted path of the unknown key.
        field: String,
        /// The keys allowed at that level.
        allowed: String,
    },
    /// A deprecated flat key and its grouped field were both given.
    #[error("{legacy} and {field} are both set; keep only {field}")]
    Conflict {
        /// The alpha's flat key.
        legacy: String,
        /// The grouped field that replaces it.
        field: String,
    },
}

impl ConfigError {
    /// Dotted path of the field the error is about.
    pub fn field(&self) -> &str {
        match self {
            ConfigError::Invalid { field, .. }
            | ConfigError::Missing { field, .. }
            | ConfigError::UnknownKey { field, .. }
            | ConfigError::Conflict { field, .. } => field,
        }
    }
}

/// How the delay between attempts grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RetryStrategy {
    /// The same delay before every retry.
    Fixed,
    /// `delay * 2^(attempt - 1)`, capped at the maximum delay.
    Exponential,
}

/// How each retry delay is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    /// The computed delay as it is.
    None,
    /// Uniform between zero and the computed delay.
    Full,
    /// Half the computed delay plus a uniform share of the other half.
    Equal,
}

/// Least severe log level printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Lifecycle detail.
    Debug,
    /// Work that happened.
    Info,
    /// Degraded but carrying on.
    Warn,
    /// Failures.
    Error,
}

impl LogLevel {
    /// The level's name as the shim's logger knows it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// `queue` group.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueConfig {
    /// The pgmq queue name.
    pub name: String,
    /// Most messages one claim may take.
    pub batch_size: u32,
}

/// `concurrency` group.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencyConfig {
    /// Handlers running at once.
    pub max_concurrent: u32,
}

/// `polling` group.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PollingConfig {
    /// Longest wait of one `read_with_poll`, in seconds.
    pub max_poll_seconds: u32,
    /// How often `read_with_poll` looks while waiting, in milliseconds.
    pub poll_interval_ms: u32,
}

/// `lease` group.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseConfig {
    /// Lease taken on claim and on each extension, in seconds.
    pub visibility_timeout_seconds: u32,
    /// Extend a lease when this little of it is left, in seconds.
    pub renew_before_expiry_seconds: u32,
}

/// `retry` group.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryConfig {
    /// Retries after the first attempt before a message is dead-lettered.
    pub limit: u32,
    /// Shape of the delay.
    pub strategy: RetryStrategy,
    /// Fixed delay, or the exponential base, in seconds.
    pub delay_seconds: u32,
    /// Cap of the exponential delay, in seconds.
    pub max_delay_seconds: u32,
    /// Randomisation of each delay.
    pub jitter: Jitter,
}

/// `handler` group.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HandlerConfig {
    /// Abort a handler and count a failure after this long, in seconds.
    pub timeout_seconds: Option<u32>,
    /// How long an aborted handler keeps its slot after a timeout, in ms.
    pub grace_ms: u32,
}

/// `connection` group.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionConfig {
    /// Size of the connection pool, handlers' `ctx.sql` included.
    pub max_connections: u32,
    /// Postgres URL; `None` lets the shim read it from the environment.
    pub url: Option<String>,
    /// Longest wait for one of the worker's own statements, in seconds; a
    /// claim may take `polling.maxPollSeconds` longer.
    pub query_timeout_seconds: u32,
}

/// `lifecycle` group.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleConfig {
    /// Period of the worker row's heartbeat, in seconds.
    pub heartbeat_interval_seconds: u32,
}

/// `logging` group.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggingConfig {
    /// Least severe level printed.
    pub level: LogLevel,
}

/// A validated configuration with every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// Which queue, and how much per claim.
    pub queue: QueueConfig,
    /// How many handlers at once.
    pub concurrency: ConcurrencyConfig,
    /// How claims wait for messages.
    pub polling: PollingConfig,
    /// Visibility timeouts.
    pub lease: LeaseConfig,
    /// Retries and dead letters.
    pub retry: RetryConfig,
    /// Handler limits.
    pub handler: HandlerConfig,
    /// Database connections.
    pub connection: ConnectionConfig,
    /// Heartbeats.
    pub lifecycle: LifecycleConfig,
    /// Log output.
    pub logging: LoggingConfig,
}

/// A flat key of the alpha that the configuration used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deprecation {
    /// The alpha's key, such as `queueName`.
    pub key: &'static str,
    /// What to write instead, such as `queue.name`.
    pub replacement: &'static str,
}

impl std::fmt::Display for Deprecation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "config key {} is deprecated; use {} instead",
            self.key, self.replacement
        )
    }
}

/// A validated configuration and the deprecation warnings it produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The resolved configuration.
    pub config: Config,
    /// One entry per deprecated flat key used.
    pub warnings: Vec<Deprecation>,
}

impl Config {
    /// Parses and validates a user configuration given as JSON.
    pub fn parse(raw: &Value) -> Result<Parsed, ConfigError> {
        let mut root = Group::root(raw)?;
        let mut warnings = Vec::new();
        let legacy = Legacy::take(&mut root, &mut warnings)?;
        let config = Config::from_groups(&mut root, legacy)?;
        Ok(Parsed { config, warnings })
    }

    /// The lease taken on claim and extension.
    pub fn visibility_timeout(&self) -> Duration {
        Duration::from_secs(self.lease.visibility_timeout_seconds.into())
    }

    /// How long before expiry a running handler's lease is extended.
    pub fn renew_before_expiry(&self) -> Duration {
        Duration::from_secs(self.lease.renew_before_expiry_seconds.into())
    }

    /// The heartbeat period.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.lifecycle.heartbeat_interval_seconds.into())
    }

    /// The handler timeout, if any.
    pub fn handler_timeout(&self) -> Option<Duration> {
        self.handler
            .timeout_seconds
            .map(|s| Duration::from_secs(s.into()))
    }

    /// How long a handler aborted for its timeout keeps its slot.
    pub fn handler_grace(&self) -> Duration {
        Duration::from_millis(self.handler.grace_ms.into())
    }

    /// Longest wait for the answer to one of the worker's own statements
    /// (setup, writes, heartbeats). A statement that takes longer counts as
    /// a lost connection and is tried again: a connection can be left
    /// wedged with a query that will never be answered.
    pub fn query_timeout(&self) -> Duration {
        Duration::from_secs(self.connection.query_timeout_seconds.into())
    }

    /// Longest wait for a claim: its poll plus the query timeout.
    pub fn claim_timeout(&self) -> Duration {
        Duration::from_secs(self.polling.max_poll_seconds.into()) + self.query_timeout()
    }

    fn from_groups(root: &mut Group, legacy: Legacy) -> Result<Config, ConfigError> {
        root.reject_unknown(&[
            "queue",
            "concurrency",
            "polling",
            "lease",
            "retry",
            "handler",
            "connection",
            "lifecycle",
            "logging",
        ])?;

        let mut g = root.group("queue", &["name", "batchSize"])?;
        let name = g.legacy_or("name", legacy.queue_name)?;
        let queue = QueueConfig {
            name: queue_name(&g.path("name"), name.as_ref())?,
            batch_size: g.uint("batchSize", 1..=1000, DEFAULT_BATCH_SIZE)?,
        };

        let mut g = root.group("concurrency", &["maxConcurrent"])?;
        g.adopt("maxConcurrent", legacy.max_concurrent)?;
        let concurrency = ConcurrencyConfig {
            max_concurrent: g.uint("maxConcurrent", 1..=1000, DEFAULT_MAX_CONCURRENT)?,
        };

        let mut g = root.group("polling", &["maxPollSeconds", "pollIntervalMs"])?;
        g.adopt("maxPollSeconds", legacy.max_poll_seconds)?;
        g.adopt("pollIntervalMs", legacy.poll_interval_ms)?;
        let polling = PollingConfig {
            max_poll_seconds: g.uint("maxPollSeconds", 1..=60, DEFAULT_MAX_POLL_SECONDS)?,
            poll_interval_ms: g.uint("pollIntervalMs", 10..=10_000, DEFAULT_POLL_INTERVAL_MS)?,
        };

        let mut g = root.group(
            "lease",
            &["visibilityTimeoutSeconds", "renewBeforeExpirySeconds"],
        )?;
        g.adopt("visibilityTimeoutSeconds", legacy.visibility_timeout)?;
        // Two seconds at least, so that a lease can be renewed at least one
        // second before it ends.
        let vt = g.uint(
            "visibilityTimeoutSeconds",
            2..=43_200,
            DEFAULT_VISIBILITY_TIMEOUT_SECONDS,
        )?;
        let lease = LeaseConfig {
            visibility_timeout_seconds: vt,
            renew_before_expiry_seconds: g.uint("renewBeforeExpirySeconds", 1..=vt - 1, vt / 2)?,
        };

        let mut g = root.group(
            "retry",
            &[
                "limit",
                "strategy",
                "delaySeconds",
                "maxDelaySeconds",
                "jitter",
            ],
        )?;
        g.adopt("limit", legacy.retry_limit)?;
        if legacy.retry_delay.is_some() {
            g.adopt("delaySeconds", legacy.retry_delay)?;
            // The alpha only had a fixed delay; keep its meaning.
            g.map
                .entry("strategy")
                .or_insert_with(|| Value::from("fixed"));
        }
        let delay = g.uint("delaySeconds", 0..=86_400, DEFAULT_RETRY_DELAY_SECONDS)?;
        let retry = RetryConfig {
            limit: g.uint("limit", 0..=1000, DEFAULT_RETRY_LIMIT)?,
            strategy: g.choice(
                "strategy",
                &[
                    ("fixed", RetryStrategy::Fixed),
                    ("exponential", RetryStrategy::Exponential),
                ],
                RetryStrategy::Exponential,
            )?,
            delay_seconds: delay,
            max_delay_seconds: g.uint(
                "maxDelaySeconds",
                delay..=604_800,
                DEFAULT_RETRY_MAX_DELAY_SECONDS.max(delay),
            )?,
            jitter: g.choice(
                "jitter",
                &[
                    ("none", Jitter::None),
                    ("full", Jitter::Full),
                    ("equal", Jitter::Equal),
                ],
                Jitter::None,
            )?,
        };

        let mut g = root.group("handler", &["timeoutSeconds", "graceMs"])?;
        let handler = HandlerConfig {
            timeout_seconds: g.optional_uint("timeoutSeconds", 1..=86_400)?,
            grace_ms: g.uint("graceMs", 0..=60_000, DEFAULT_HANDLER_GRACE_MS)?,
        };

        let mut g = root.group(
            "connection",
            &["maxConnections", "url", "queryTimeoutSeconds"],
        )?;
        g.adopt("maxConnections", legacy.max_pg_connections)?;
        let connection = ConnectionConfig {
            max_connections: g.uint("maxConnections", 1..=100, DEFAULT_MAX_CONNECTIONS)?,
            url: g.optional_url("url")?,
            query_timeout_seconds: g.uint(
                "queryTimeoutSeconds",
                1..=600,
                DEFAULT_QUERY_TIMEOUT_SECONDS,
            )?,
        };

        let mut g = root.group("lifecycle", &["heartbeatIntervalSeconds"])?;
        let lifecycle = LifecycleConfig {
            heartbeat_interval_seconds: g.uint(
                "heartbeatIntervalSeconds",
                1..=300,
                DEFAULT_HEARTBEAT_INTERVAL_SECONDS,
            )?,
        };

        let mut g = root.group("logging", &["level"])?;
        let logging = LoggingConfig {
            level: g.choice(
                "level",
                &[
                    ("debug", LogLevel::Debug),
                    ("info", LogLevel::Info),
                    ("warn", LogLevel::Warn),
                    ("error", LogLevel::Error),
                ],
                LogLevel::Info,
            )?,
        };

        Ok(Config {
            queue,
            concurrency,
            polling,
            lease,
            retry,
            handler,
            connection,
            lifecycle,
            logging,
        })
    }
}

/// Checks a queue name against what pgmq can hold without surprises: it
/// lower-cases table names (so `Emails` would share `emails`'s table), a
/// hyphen breaks its SQL, and long names fail deep inside it.
fn queue_name(field: &str, value: Option<&Value>) -> Result<String, ConfigError> {
    const ALLOWED: &str = "1 to 47 characters of a-z, 0-9 and _, not starting with a digit";
    let Some(value) = value else {
        return Err(ConfigError::Missing {
            field: field.to_owned(),
            allowed: format!("a string of {ALLOWED}"),
        });
    };
    let valid = value.as_str().filter(|name| {
        !name.is_empty()
            && name.len() <= MAX_QUEUE_NAME_LEN
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    });
    match valid {
        Some(name) => Ok(name.to_owned()),
        None => Err(invalid(field, value, ALLOWED)),
    }
}

fn invalid(field: &str, value: &Value, allowed: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_owned(),
        value: value.to_string(),
        allowed: allowed.into(),
    }
}

/// One level of the configuration object, with the path that leads to it.
struct Group {
    path: String,
    map: Map<String, Value>,
}

impl Group {
    fn root(raw: &Value) -> Result<Group, ConfigError> {
        match raw {
            Value::Object(map) => Ok(Group {
                path: String::new(),
                map: map.clone(),
            }),
            other => Err(invalid("config", other, "an object")),
        }
    }

    fn path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn reject_unknown(&self, allowed: &[&str]) -> Result<(), ConfigError> {
        match self.map.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(key) => Err(ConfigError::UnknownKey {
                field: self.path(key),
                allowed: allowed.join(", "),
            }),
            None => Ok(()),
        }
    }

    /// The sub-object under `key`; absent or `null` means all defaults.
    fn group(&mut self, key: &str, allowed: &[&str]) -> Result<Group, ConfigError> {
        let path = self.path(key);
        let group = match self.map.remove(key) {
            None | Some(Value::Null) => Group {
                path,
                map: Map::new(),
            },
            Some(Value::Object(map)) => Group { path, map },
            Some(other) => return Err(invalid(&path, &other, "an object")),
        };
        group.reject_unknown(allowed)?;
        Ok(group)
    }

    /// Takes a field's value; `null` counts as absent.
    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    /// Moves a legacy flat value into `key`, refusing to have both.
    fn adopt(&mut self, key: &str, legacy: Option<LegacyValue>) -> Result<(), ConfigError> {
        let Some(legacy) = legacy else {
            return Ok(());
        };
        if self.map.get(key).is_some_and(|v| !v.is_null()) {
            return Err(ConfigError::Conflict {
                legacy: legacy.key.to_owned(),
                field: self.path(key),
            });
        }
        self.map.insert(key.to_owned(), legacy.value);
        Ok(())
    }

    fn legacy_or(
        &mut self,
        key: &str,
        legacy: Option<LegacyValue>,
    ) -> Result<Option<Value>, ConfigError> {
        self.adopt(key, legacy)?;
        Ok(self.take(key))
    }

    fn uint(
        &mut self,
        key: &str,
        range: RangeInclusive<u32>,
        default: u32,
    ) -> Result<u32, ConfigError> {
        Ok(self.optional_uint(key, range)?.unwrap_or(default))
    }

    fn optional_uint(
        &mut self,
        key: &str,
        range: RangeInclusive<u32>,
    ) -> Result<Option<u32>, ConfigError> {
        let Some(value) = self.take(key) else {
            return Ok(None);
        };
        let whole = value
            .as_f64()
            .filter(|n| n.fract() == 0.0 && *n >= 0.0 && *n <= f64::from(u32::MAX))
            .map(|n| n as u32)
            .filter(|n| range.contains(n));
        match whole {
            Some(n) => Ok(Some(n)),
            None => Err(invalid(
                &self.path(key),
                &value,
                format!("a whole number from {} to {}", range.start(), range.end()),
            )),
        }
    }

    fn choice<T: Copy>(
        &mut self,
        key: &str,
        options: &[(&str, T)],
        default: T,
    ) -> Result<T, ConfigError> {
        let Some(value) = self.take(key) else {
            return Ok(default);
        };
        let found = value
            .as_str()
            .and_then(|s| options.iter().find(|(name, _)| *name == s));
        match found {
            Some((_, choice)) => Ok(*choice),
            None => {
                let names: Vec<String> = options.iter().map(|(n, _)| format!("\"{n}\"")).collect();
                Err(invalid(
                    &self.path(key),
                    &value,
                    format!("one of {}", names.join(", ")),
                ))
            }
        }
    }

    fn optional_url(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        let Some(value) = self.take(key) else {
            return Ok(None);
        };
        let url = value
            .as_str()
            .filter(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"));
        match url {
            Some(url) => Ok(Some(url.to_owned())),
            // The URL may hold a password: name the field, never echo it.
            None => Err(ConfigError::Invalid {
                field: self.path(key),
                value: "(hidden)".to_owned(),
                allowed: "a postgres:// or postgresql:// URL".to_owned(),
            }),
        }
    }
}

/// A value given under one of the alpha's flat keys.
struct LegacyValue {
    key: &'static str,
    value: Value,
}

/// The alpha's flat keys, taken off the root before the groups are read.
#[derive(Default)]
struct Legacy {
    queue_name: Option<LegacyValue>,
    max_concurrent: Option<LegacyValue>,
    max_pg_connections: Option<LegacyValue>,
    max_poll_seconds: Option<LegacyValue>,
    poll_interval_ms: Option<LegacyValue>,
    retry_delay: Option<LegacyValue>,
    retry_limit: Option<LegacyValue>,
    visibility_timeout: Option<LegacyValue>,
}

impl Legacy {
    fn take(root: &mut Group, warnings: &mut Vec<Deprecation>) -> Result<Legacy, ConfigError> {
        let mut take = |key: &'static str, replacement: &'static str| {
            let value = root.take(key)?;
            warnings.push(Deprecation { key, replacement });
            Some(LegacyValue { key, value })
        };
        Ok(Legacy {
            queue_name: take("queueName", "queue.name"),
            max_concurrent: take("maxConcurrent", "concurrency.maxConcurrent"),
            max_pg_connections: take("maxPgConnections", "connection.maxConnections"),
            max_poll_seconds: take("maxPollSeconds", "polling.maxPollSeconds"),
            poll_interval_ms: take("pollIntervalMs", "polling.pollIntervalMs"),
            retry_delay: take(
                "retryDelay",
                "retry.delaySeconds with retry.strategy \"fixed\"",
            ),
            retry_limit: take("retryLimit", "retry.limit"),
            visibility_timeout: take("visibilityTimeout", "lease.visibilityTimeoutSeconds"),
        })
    }
}
