//! The service's own secrets: the link-signing key ring, the email index key and the key
//! vault's master keys.
//!
//! Production takes both from settings (`NEWSLETTER_SIGNING_KEYS[_FILE]`,
//! `NEWSLETTER_INDEX_KEY[_FILE]`). Development generates them once in the data dir (mode 0600)
//! and reuses them, so links keep working across restarts.

use std::io::Write;
use std::path::Path;

use newsletter_keyvault::{MasterKey, MasterKeyRing};
use newsletter_projections::EmailIndexKey;
use newsletter_tokens::KeyRing;

use crate::settings::{Mode, RawSettings, SettingError};

/// The loaded secrets.
pub struct Secrets {
    /// Link-signing keys.
    pub keys: KeyRing,
    /// The email index's HMAC key.
    pub index_key: EmailIndexKey,
    /// The key vault's key-encryption keys (current first).
    pub master_keys: MasterKeyRing,
}

/// The file development mode keeps its generated master keys in.
pub const MASTER_KEY_FILE: &str = "master-key";

/// A new master key with an id made of today's date and a random suffix.
pub fn new_master_key() -> Result<MasterKey, SettingError> {
    let mut suffix = [0_u8; 3];
    rand::fill(&mut suffix[..]);
    let id = format!(
        "k{}-{}",
        chrono::Utc::now().format("%Y%m%d"),
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    MasterKey::generate(&id).map_err(|e| SettingError::new("NEWSLETTER_MASTER_KEY", e.to_string()))
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

fn parse_index_key(text: &str, setting: &str) -> Result<EmailIndexKey, SettingError> {
    let text = text.trim();
    let bad = || SettingError::new(setting, "must be 64 hexadecimal digits (32 bytes)");
    if text.len() != 64 {
        return Err(bad());
    }
    let mut bytes = [0_u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(EmailIndexKey::from_bytes(bytes))
}

fn generated(
    path: &Path,
    setting: &str,
    make: impl FnOnce() -> String,
) -> Result<String, SettingError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = make();
            write_private(path, &text).map_err(|e| {
                SettingError::new(setting, format!("cannot write {}: {e}", path.display()))
            })?;
            tracing::warn!(path = %path.display(), "generated a development secret; set {setting} in production");
            Ok(text)
        }
        Err(e) => Err(SettingError::new(
            setting,
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

impl Secrets {
    /// Loads the secrets, generating development ones in `data_dir` when allowed.
    pub fn load(raw: &RawSettings, mode: Mode, data_dir: &Path) -> Result<Self, SettingError> {
        let keys_text = match raw.secret("NEWSLETTER_SIGNING_KEYS")? {
            Some(text) => text,
            None if mode == Mode::Production => {
                return Err(SettingError::new(
                    "NEWSLETTER_SIGNING_KEYS",
                    "is required in production mode",
                ));
            }
            None => generated(
                &data_dir.join("signing-keys"),
                "NEWSLETTER_SIGNING_KEYS",
                || KeyRing::generate().to_file_string(),
            )?,
        };
        let keys = KeyRing::from_file_str(&keys_text).map_err(|e| {
            SettingError::new(
                "NEWSLETTER_SIGNING_KEYS",
                format!("not a valid key ring: {e}"),
            )
        })?;
        let index_text = match raw.secret("NEWSLETTER_INDEX_KEY")? {
            Some(text) => text,
            None if mode == Mode::Production => {
                return Err(SettingError::new(
                    "NEWSLETTER_INDEX_KEY",
                    "is required in production mode",
                ));
            }
            None => generated(&data_dir.join("index-key"), "NEWSLETTER_INDEX_KEY", || {
                let mut bytes = [0_u8; 32];
                rand::fill(&mut bytes[..]);
                bytes.iter().map(|b| format!("{b:02x}")).collect()
            })?,
        };
        let index_key = parse_index_key(&index_text, "NEWSLETTER_INDEX_KEY")?;
        let master_text = match raw.secret("NEWSLETTER_MASTER_KEY")? {
            Some(text) => text,
            None if mode == Mode::Production => {
                return Err(SettingError::new(
                    "NEWSLETTER_MASTER_KEY",
                    "is required in production mode",
                ));
            }
            None => {
                let key = new_master_key()?;
                generated(
                    &data_dir.join(MASTER_KEY_FILE),
                    "NEWSLETTER_MASTER_KEY",
                    || key.to_config_string(),
                )?
            }
        };
        let master_keys = MasterKeyRing::parse(&master_text)
            .map_err(|e| SettingError::new("NEWSLETTER_MASTER_KEY", e.to_string()))?;
        Ok(Self {
            keys,
            index_key,
            master_keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_secrets_are_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = Secrets::load(&RawSettings::default(), Mode::Development, dir.path()).unwrap();
        let second = Secrets::load(&RawSettings::default(), Mode::Development, dir.path()).unwrap();
        assert_eq!(first.keys.to_file_string(), second.keys.to_file_string());
        let email = newsletter_domain::EmailAddress::parse("a@example.com").unwrap();
        assert_eq!(
            first.index_key.digest(&email),
            second.index_key.digest(&email)
        );
        assert_eq!(
            first.master_keys.to_config_string(),
            second.master_keys.to_config_string()
        );
    }

    #[test]
    fn a_bad_master_key_names_the_setting_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        let raw = RawSettings::from_pairs([("NEWSLETTER_MASTER_KEY", "k1:0123456789abcdef")]);
        let error = Secrets::load(&raw, Mode::Development, dir.path())
            .err()
            .unwrap();
        assert_eq!(error.setting, "NEWSLETTER_MASTER_KEY");
        assert!(!error.reason.contains("0123456789abcdef"));
    }

    #[test]
    fn production_requires_configured_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let error = Secrets::load(&RawSettings::default(), Mode::Production, dir.path())
            .err()
            .unwrap();
        assert_eq!(error.setting, "NEWSLETTER_SIGNING_KEYS");
        assert!(!dir.path().join("signing-keys").exists());
    }

    #[test]
    fn a_bad_index_key_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let raw = RawSettings::from_pairs([("NEWSLETTER_INDEX_KEY", "xyz")]);
        let error = Secrets::load(&raw, Mode::Development, dir.path())
            .err()
            .unwrap();
        assert_eq!(error.setting, "NEWSLETTER_INDEX_KEY");
    }
}
