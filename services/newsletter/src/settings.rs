//! Settings: environment variables `NEWSLETTER_*`, or the same keys (lower case, without the
//! prefix) in a TOML file given with `--config`. The environment wins over the file.
//!
//! Every problem is reported as one line naming the setting; secrets are never echoed.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One documented setting: its variable, its default, what it does.
pub struct SettingDoc {
    /// The environment variable.
    pub env: &'static str,
    /// The default, as shown to people.
    pub default: &'static str,
    /// What it does.
    pub help: &'static str,
}

/// Every setting, in the order `--help` and the README list them.
pub const SETTINGS: &[SettingDoc] = &[
    SettingDoc {
        env: "NEWSLETTER_MODE",
        default: "development",
        help: "development or production; production refuses to start without secrets, SMTP and a public URL",
    },
    SettingDoc {
        env: "NEWSLETTER_LISTEN",
        default: "127.0.0.1:8080",
        help: "address the HTTP server binds",
    },
    SettingDoc {
        env: "NEWSLETTER_OPS_LISTEN",
        default: "unset: no HTTP in the projector and mailer roles",
        help: "address where the projector and mailer roles serve /health/live and /health/ready (the api role serves them on NEWSLETTER_LISTEN)",
    },
    SettingDoc {
        env: "NEWSLETTER_READY_MAX_LAG",
        default: "5m",
        help: "the projector role reports not ready when its projection is further behind than this",
    },
    SettingDoc {
        env: "NEWSLETTER_PUBLIC_URL",
        default: "http://<listen>",
        help: "base of every link in mails and headers",
    },
    SettingDoc {
        env: "NEWSLETTER_DATA_DIR",
        default: "./data",
        help: "SQLite files, the mail outbox and generated development keys",
    },
    SettingDoc {
        env: "NEWSLETTER_DATABASE_URL",
        default: "SQLite in the data dir",
        help: "postgres://… to keep events, read models and the email index in PostgreSQL",
    },
    SettingDoc {
        env: "NEWSLETTER_SMTP_URL",
        default: "unset: mail goes to <data dir>/outbox as .eml",
        help: "lettre SMTP URL, e.g. smtp://host:2525 or smtps://user:pass@host",
    },
    SettingDoc {
        env: "NEWSLETTER_MAIL_FROM",
        default: "Newsletter <newsletter@localhost>",
        help: "sender of confirmation mails",
    },
    SettingDoc {
        env: "NEWSLETTER_LISTS",
        default: "newsletter",
        help: "comma-separated list ids; the first is the default list",
    },
    SettingDoc {
        env: "NEWSLETTER_TOKENS",
        default: "none",
        help: "service tokens name:secret:scope+scope, comma-separated; scopes status, admin",
    },
    SettingDoc {
        env: "NEWSLETTER_SIGNUP_RATE_LIMIT",
        default: "20",
        help: "signups per minute per client IP; 0 turns the limit off",
    },
    SettingDoc {
        env: "NEWSLETTER_CONFIRM_TTL",
        default: "7d",
        help: "how long a confirm link works (humantime: 7d, 48h)",
    },
    SettingDoc {
        env: "NEWSLETTER_THANK_YOU_URL",
        default: "unset",
        help: "303 target after a form signup instead of the built-in page",
    },
    SettingDoc {
        env: "NEWSLETTER_POLICY_VERSION",
        default: "1",
        help: "privacy-policy version stamped on consent evidence",
    },
    SettingDoc {
        env: "NEWSLETTER_POLICY_VERSIONS",
        default: "none",
        help: "published policy versions 'version url yyyy-mm-dd', comma-separated; when set, NEWSLETTER_POLICY_VERSION must be one in effect",
    },
    SettingDoc {
        env: "NEWSLETTER_PRIVACY_URL",
        default: "the public URL",
        help: "the privacy policy linked from every confirmation mail",
    },
    SettingDoc {
        env: "NEWSLETTER_TRUSTED_PROXIES",
        default: "none",
        help: "comma-separated proxy IPs whose X-Forwarded-For is believed",
    },
    SettingDoc {
        env: "NEWSLETTER_SIGNING_KEYS",
        default: "development: generated in <data dir>/signing-keys",
        help: "link-signing key ring (the signing-keys file format); or NEWSLETTER_SIGNING_KEYS_FILE",
    },
    SettingDoc {
        env: "NEWSLETTER_INDEX_KEY",
        default: "development: generated in <data dir>/index-key",
        help: "64 hex digits keying the email index hash; or NEWSLETTER_INDEX_KEY_FILE",
    },
    SettingDoc {
        env: "NEWSLETTER_MASTER_KEY",
        default: "development: generated in <data dir>/master-key",
        help: "key-encryption keys of the key vault, id:64-hex-digits, comma-separated, current first; or NEWSLETTER_MASTER_KEY_FILE",
    },
    SettingDoc {
        env: "NEWSLETTER_RETENTION_PENDING",
        default: "30d",
        help: "unconfirmed signups older than this are erased by the projector (humantime)",
    },
    SettingDoc {
        env: "NEWSLETTER_MAIL_RETRY_BASE",
        default: "1s",
        help: "first retry delay after a transient SMTP failure (doubles each time)",
    },
    SettingDoc {
        env: "NEWSLETTER_MAIL_RETRY_MAX",
        default: "5m",
        help: "longest delay between two retries",
    },
    SettingDoc {
        env: "NEWSLETTER_MAIL_RETRY_ATTEMPTS",
        default: "8",
        help: "attempts before a confirmation mail is recorded as failed",
    },
    SettingDoc {
        env: "NEWSLETTER_HTTP_WORKERS",
        default: "number of CPUs",
        help: "HTTP worker threads",
    },
    SettingDoc {
        env: "NEWSLETTER_LOG",
        default: "info",
        help: "log filter (tracing EnvFilter syntax)",
    },
    SettingDoc {
        env: "NEWSLETTER_LOG_FORMAT",
        default: "text",
        help: "text or json",
    },
];

/// A setting that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct SettingError {
    /// The environment variable (also the key in the TOML file).
    pub setting: String,
    /// What is wrong, without the value when it may be secret.
    pub reason: String,
}

impl SettingError {
    /// An error about one setting.
    pub fn new(setting: &str, reason: impl Into<String>) -> Self {
        Self {
            setting: setting.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Whether the service may invent what is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keys generated in the data dir, mail to files, links to the listen address.
    Development,
    /// Every secret, the SMTP relay and the public URL must be configured.
    Production,
}

/// The raw values, from the file and the environment.
#[derive(Debug, Default)]
pub struct RawSettings {
    values: BTreeMap<String, String>,
}

impl RawSettings {
    /// Reads the optional TOML file, then the `NEWSLETTER_*` environment over it.
    pub fn load(config_file: Option<&Path>) -> Result<Self, SettingError> {
        let mut values = BTreeMap::new();
        if let Some(path) = config_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                SettingError::new("--config", format!("cannot read {}: {e}", path.display()))
            })?;
            let table: toml::Table = text.parse().map_err(|e| {
                SettingError::new(
                    "--config",
                    format!("{} is not valid TOML: {e}", path.display()),
                )
            })?;
            for (key, value) in table {
                let env = format!("NEWSLETTER_{}", key.to_ascii_uppercase());
                if !SETTINGS.iter().any(|s| s.env == env) && !env.ends_with("_FILE") {
                    return Err(SettingError::new(
                        &env,
                        format!("unknown setting {key:?} in {}", path.display()),
                    ));
                }
                let text = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Array(items) => items
                        .iter()
                        .map(|i| {
                            i.as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| i.to_string())
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                    other => other.to_string(),
                };
                values.insert(env, text);
            }
        }
        for (key, value) in std::env::vars_os() {
            let (Some(key), Some(value)) = (key.to_str(), value.to_str()) else {
                continue;
            };
            if key.starts_with("NEWSLETTER_") {
                values.insert(key.to_owned(), value.to_owned());
            }
        }
        Ok(Self { values })
    }

    /// Builds raw settings from pairs (tests).
    #[cfg(test)]
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    /// The value of a setting, if set and not blank.
    pub fn get(&self, env: &str) -> Option<&str> {
        self.values
            .get(env)
            .map(String::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    /// A secret given directly or through a `<NAME>_FILE` path.
    pub fn secret(&self, env: &str) -> Result<Option<String>, SettingError> {
        if let Some(value) = self.get(env) {
            return Ok(Some(value.to_owned()));
        }
        let file_env = format!("{env}_FILE");
        match self.get(&file_env) {
            Some(path) => std::fs::read_to_string(path)
                .map(|text| Some(text.trim().to_owned()))
                .map_err(|e| SettingError::new(&file_env, format!("cannot read {path}: {e}"))),
            None => Ok(None),
        }
    }

    fn parsed<T>(
        &self,
        env: &str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, SettingError> {
        match self.get(env) {
            Some(raw) => parse(raw).map_err(|reason| SettingError::new(env, reason)),
            None => Ok(default),
        }
    }
}

fn duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw).map_err(|e| format!("not a duration like 7d or 250ms ({e})"))
}

/// Checked settings (secrets and lists are parsed where they are used).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Development or production.
    pub mode: Mode,
    /// Where the HTTP server binds.
    pub listen: SocketAddr,
    /// Where roles without the API serve their health probes, if anywhere.
    pub ops_listen: Option<SocketAddr>,
    /// The projection lag past which the projector role is not ready.
    pub ready_max_lag: Duration,
    /// Base of every link, without a trailing slash.
    pub public_url: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// `postgres://…`, or `None` for SQLite files in the data dir.
    pub database_url: Option<String>,
    /// `kurrentdb://…`/`esdb://…` for events in KurrentDB, or `None`.
    pub eventstore_url: Option<String>,
    /// SMTP relay URL, or `None` for the outbox.
    pub smtp_url: Option<String>,
    /// Sender mailbox.
    pub mail_from: String,
    /// Configured list ids; the first is the default.
    pub lists: Vec<String>,
    /// Signups per minute per IP.
    pub signup_rate_limit: u32,
    /// Confirm link validity.
    pub confirm_ttl: Duration,
    /// Optional thank-you redirect.
    pub thank_you_url: Option<String>,
    /// Privacy-policy version.
    pub policy_version: String,
    /// Where the privacy policy is published.
    pub privacy_url: Option<String>,
    /// Trusted proxies.
    pub trusted_proxies: Vec<IpAddr>,
    /// First retry delay of the mailer.
    pub mail_retry_base: Duration,
    /// Longest retry delay of the mailer.
    pub mail_retry_max: Duration,
    /// Attempts before a mail is recorded as failed.
    pub mail_retry_attempts: u32,
    /// HTTP workers.
    pub http_workers: usize,
    /// How long an unconfirmed signup is kept before retention erases it.
    pub retention_pending: Duration,
    /// The published privacy-policy versions (URL and effective date).
    pub policies: Vec<newsletter_api::export::PolicyInfo>,
}

/// Parses `version url yyyy-mm-dd[, …]` and checks that `current` is one of them, in effect.
fn policy_versions(
    raw: &str,
    current: &str,
) -> Result<Vec<newsletter_api::export::PolicyInfo>, String> {
    let mut out: Vec<newsletter_api::export::PolicyInfo> = Vec::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let parts: Vec<&str> = entry.split_whitespace().collect();
        let [version, url, date] = parts.as_slice() else {
            return Err(format!("{entry:?} is not 'version url yyyy-mm-dd'"));
        };
        newsletter_domain::PolicyVersion::parse(version)
            .map_err(|e| format!("{version:?}: {e}"))?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!("{url:?} is not an http(s) URL"));
        }
        let effective_from = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .map_err(|_| format!("{date:?} is not a date like 2026-11-01"))?;
        if out.iter().any(|p| p.version == *version) {
            return Err(format!("version {version:?} is listed twice"));
        }
        out.push(newsletter_api::export::PolicyInfo {
            version: (*version).to_owned(),
            url: (*url).to_owned(),
            effective_from,
        });
    }
    match out.iter().find(|p| p.version == current) {
        None if !out.is_empty() => Err(format!(
            "does not list the current NEWSLETTER_POLICY_VERSION {current:?}"
        )),
        Some(p) if p.effective_from > chrono::Utc::now().date_naive() => Err(format!(
            "the current version {current:?} takes effect only on {}",
            p.effective_from
        )),
        _ => Ok(out),
    }
}

impl Settings {
    /// Checks every non-secret setting.
    pub fn from_raw(raw: &RawSettings) -> Result<Self, SettingError> {
        let mode = raw.parsed("NEWSLETTER_MODE", Mode::Development, |v| match v {
            "development" | "dev" => Ok(Mode::Development),
            "production" | "prod" => Ok(Mode::Production),
            _ => Err("must be development or production".to_owned()),
        })?;
        let listen: SocketAddr = raw.parsed(
            "NEWSLETTER_LISTEN",
            SocketAddr::from(([127, 0, 0, 1], 8080)),
            |v| {
                v.parse()
                    .map_err(|_| "not a socket address like 127.0.0.1:8080".to_owned())
            },
        )?;
        let ops_listen = match raw.get("NEWSLETTER_OPS_LISTEN") {
            Some(v) => Some(v.parse().map_err(|_| {
                SettingError::new(
                    "NEWSLETTER_OPS_LISTEN",
                    "not a socket address like 0.0.0.0:8080",
                )
            })?),
            None => None,
        };
        let ready_max_lag = raw.parsed(
            "NEWSLETTER_READY_MAX_LAG",
            Duration::from_secs(300),
            duration,
        )?;
        let public_url = match raw.get("NEWSLETTER_PUBLIC_URL") {
            Some(url) => {
                let url = url.trim_end_matches('/');
                if !(url.starts_with("http://") || url.starts_with("https://"))
                    || url.contains(['?', '#', ' ', '"', '<', '>'])
                {
                    return Err(SettingError::new(
                        "NEWSLETTER_PUBLIC_URL",
                        "must be an http:// or https:// base URL without query or fragment",
                    ));
                }
                url.to_owned()
            }
            None if mode == Mode::Production => {
                return Err(SettingError::new(
                    "NEWSLETTER_PUBLIC_URL",
                    "is required in production mode",
                ));
            }
            None => format!("http://{listen}"),
        };
        let data_dir = PathBuf::from(raw.get("NEWSLETTER_DATA_DIR").unwrap_or("./data"));
        let database_url = raw.get("NEWSLETTER_DATABASE_URL").map(str::to_owned);
        if let Some(url) = &database_url
            && !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:"))
        {
            return Err(SettingError::new(
                "NEWSLETTER_DATABASE_URL",
                "must start with postgres://, postgresql:// or sqlite:",
            ));
        }
        let eventstore_url = raw.get("NEWSLETTER_EVENTSTORE_URL").map(str::to_owned);
        if let Some(url) = &eventstore_url {
            let scheme = url.split("://").next().unwrap_or_default();
            if !matches!(
                scheme,
                "kurrentdb" | "esdb" | "kurrent" | "kdb" | "kurrentdb+discover" | "esdb+discover"
            ) {
                return Err(SettingError::new(
                    "NEWSLETTER_EVENTSTORE_URL",
                    "must start with kurrentdb:// or esdb://",
                ));
            }
        }
        let smtp_url = raw.get("NEWSLETTER_SMTP_URL").map(str::to_owned);
        if mode == Mode::Production && smtp_url.is_none() {
            return Err(SettingError::new(
                "NEWSLETTER_SMTP_URL",
                "is required in production mode",
            ));
        }
        let mail_from = match raw.get("NEWSLETTER_MAIL_FROM") {
            Some(from) => from.to_owned(),
            None if mode == Mode::Production => {
                return Err(SettingError::new(
                    "NEWSLETTER_MAIL_FROM",
                    "is required in production mode",
                ));
            }
            None => "Newsletter <newsletter@localhost>".to_owned(),
        };
        let lists: Vec<String> = raw
            .get("NEWSLETTER_LISTS")
            .unwrap_or("newsletter")
            .split(',')
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        if lists.is_empty() {
            return Err(SettingError::new("NEWSLETTER_LISTS", "names no list"));
        }
        let signup_rate_limit = raw.parsed("NEWSLETTER_SIGNUP_RATE_LIMIT", 20, |v| {
            v.parse()
                .map_err(|_| "must be a whole number (0 turns the limit off)".to_owned())
        })?;
        let confirm_ttl = raw.parsed(
            "NEWSLETTER_CONFIRM_TTL",
            Duration::from_secs(7 * 24 * 3600),
            duration,
        )?;
        if confirm_ttl < Duration::from_secs(1) {
            return Err(SettingError::new(
                "NEWSLETTER_CONFIRM_TTL",
                "must be at least one second",
            ));
        }
        let thank_you_url = raw.get("NEWSLETTER_THANK_YOU_URL").map(str::to_owned);
        if let Some(url) = &thank_you_url
            && (url.contains(['\r', '\n'])
                || !(url.starts_with("http://")
                    || url.starts_with("https://")
                    || url.starts_with('/')))
        {
            return Err(SettingError::new(
                "NEWSLETTER_THANK_YOU_URL",
                "must be an http(s) URL or a path",
            ));
        }
        let policy_version = raw
            .get("NEWSLETTER_POLICY_VERSION")
            .unwrap_or("1")
            .to_owned();
        let privacy_url = raw.get("NEWSLETTER_PRIVACY_URL").map(str::to_owned);
        let trusted_proxies = match raw.get("NEWSLETTER_TRUSTED_PROXIES") {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| {
                    p.parse().map_err(|_| {
                        SettingError::new(
                            "NEWSLETTER_TRUSTED_PROXIES",
                            format!("{p:?} is not an IP address"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let mail_retry_base = raw.parsed(
            "NEWSLETTER_MAIL_RETRY_BASE",
            Duration::from_secs(1),
            duration,
        )?;
        let mail_retry_max = raw.parsed(
            "NEWSLETTER_MAIL_RETRY_MAX",
            Duration::from_secs(300),
            duration,
        )?;
        let mail_retry_attempts = raw.parsed("NEWSLETTER_MAIL_RETRY_ATTEMPTS", 8, |v| {
            v.parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| "must be a whole number of at least 1".to_owned())
        })?;
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        let http_workers = raw.parsed("NEWSLETTER_HTTP_WORKERS", cpus, |v| {
            v.parse::<usize>()
                .ok()
                .filter(|n| (1..=256).contains(n))
                .ok_or_else(|| "must be a whole number from 1 to 256".to_owned())
        })?;
        let retention_pending = raw.parsed(
            "NEWSLETTER_RETENTION_PENDING",
            Duration::from_secs(30 * 24 * 3600),
            duration,
        )?;
        if retention_pending < Duration::from_secs(1) {
            return Err(SettingError::new(
                "NEWSLETTER_RETENTION_PENDING",
                "must be at least one second",
            ));
        }
        let policies = match raw.get("NEWSLETTER_POLICY_VERSIONS") {
            Some(list) => policy_versions(list, &policy_version)
                .map_err(|reason| SettingError::new("NEWSLETTER_POLICY_VERSIONS", reason))?,
            None => Vec::new(),
        };
        Ok(Self {
            policies,
            retention_pending,
            mode,
            listen,
            ops_listen,
            ready_max_lag,
            public_url,
            data_dir,
            database_url,
            eventstore_url,
            smtp_url,
            mail_from,
            lists,
            signup_rate_limit,
            confirm_ttl,
            thank_you_url,
            policy_version,
            privacy_url,
            trusted_proxies,
            mail_retry_base,
            mail_retry_max,
            mail_retry_attempts,
            http_workers,
        })
    }

    /// The settings table for `--help`.
    pub fn help_table() -> String {
        let mut out = String::from(
            "Settings (environment variables; a --config TOML file may set the same keys in lower case without the NEWSLETTER_ prefix):\n",
        );
        for s in SETTINGS {
            out.push_str(&format!(
                "  {:<30} {}\n  {:<30} default: {}\n",
                s.env, s.help, "", s.default
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_settings() {
        let settings = Settings::from_raw(&RawSettings::default()).unwrap();
        assert_eq!(settings.mode, Mode::Development);
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.public_url, "http://127.0.0.1:8080");
        assert_eq!(settings.lists, vec!["newsletter"]);
        assert_eq!(settings.signup_rate_limit, 20);
        assert_eq!(settings.confirm_ttl, Duration::from_secs(7 * 86400));
        assert_eq!(settings.retention_pending, Duration::from_secs(30 * 86400));
    }

    #[test]
    fn errors_name_the_setting() {
        for (key, value) in [
            ("NEWSLETTER_SIGNUP_RATE_LIMIT", "abc"),
            ("NEWSLETTER_LISTEN", "nowhere"),
            ("NEWSLETTER_CONFIRM_TTL", "forever"),
            ("NEWSLETTER_DATABASE_URL", "mysql://x"),
            ("NEWSLETTER_MODE", "chaos"),
            ("NEWSLETTER_TRUSTED_PROXIES", "10.0.0.1,proxy"),
            ("NEWSLETTER_RETENTION_PENDING", "soon"),
            ("NEWSLETTER_RETENTION_PENDING", "0s"),
            ("NEWSLETTER_POLICY_VERSIONS", "1 https://x.example/p"),
            (
                "NEWSLETTER_POLICY_VERSIONS",
                "2 https://x.example/p 2026-01-01",
            ),
            (
                "NEWSLETTER_POLICY_VERSIONS",
                "1 https://x.example/p 2999-01-01",
            ),
        ] {
            let error = Settings::from_raw(&RawSettings::from_pairs([(key, value)])).unwrap_err();
            assert_eq!(error.setting, key, "{error}");
        }
    }

    #[test]
    fn policy_versions_have_a_url_and_a_date() {
        let settings = Settings::from_raw(&RawSettings::from_pairs([
            ("NEWSLETTER_POLICY_VERSION", "2026-11"),
            (
                "NEWSLETTER_POLICY_VERSIONS",
                "2026-11 https://x.example/privacy/2026-11 2026-11-01, 2025-05 https://x.example/privacy/2025-05 2025-05-01",
            ),
        ]))
        .unwrap();
        assert_eq!(settings.policies.len(), 2);
        assert_eq!(
            settings.policies[0].url,
            "https://x.example/privacy/2026-11"
        );
        assert_eq!(
            settings.policies[1].effective_from.to_string(),
            "2025-05-01"
        );
    }

    #[test]
    fn production_requires_what_development_invents() {
        let error = Settings::from_raw(&RawSettings::from_pairs([(
            "NEWSLETTER_MODE",
            "production",
        )]))
        .unwrap_err();
        assert_eq!(error.setting, "NEWSLETTER_PUBLIC_URL");
        let error = Settings::from_raw(&RawSettings::from_pairs([
            ("NEWSLETTER_MODE", "production"),
            ("NEWSLETTER_PUBLIC_URL", "https://news.example.com"),
        ]))
        .unwrap_err();
        assert_eq!(error.setting, "NEWSLETTER_SMTP_URL");
    }

    #[test]
    fn the_readme_documents_every_setting() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .expect("README.md at the repository root");
        for setting in SETTINGS {
            assert!(
                readme.contains(setting.env),
                "README.md does not mention {}",
                setting.env
            );
        }
    }

    #[test]
    fn every_setting_is_documented_once() {
        let mut names: Vec<_> = SETTINGS.iter().map(|s| s.env).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SETTINGS.len());
        assert!(Settings::help_table().contains("NEWSLETTER_SIGNUP_RATE_LIMIT"));
    }
}
