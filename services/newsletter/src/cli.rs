//! The admin CLI's GDPR commands: `erase`, `export`, `rotate-master-key`. They open the same
//! storage as the service (it may keep running) and record what they do in the audit log.

use newsletter_domain::{ActorName, EmailAddress, ErasureReference, SubscriberId};
use uuid::Uuid;

use crate::roles::{prepare, privacy};
use crate::secrets::{MASTER_KEY_FILE, new_master_key};
use crate::settings::{Mode, RawSettings, SettingError, Settings};

fn failed(what: &str, error: impl std::fmt::Display) -> SettingError {
    SettingError::new(what, error.to_string())
}

fn actor(name: &str) -> Result<ActorName, SettingError> {
    ActorName::parse(name).map_err(|e| failed("--actor", e))
}

fn print_json(value: &impl serde::Serialize) -> Result<(), SettingError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| failed("output", e))?;
    println!("{text}");
    Ok(())
}

/// `newsletter erase <id>`.
pub async fn erase(
    raw: RawSettings,
    id: &str,
    reference: Option<&str>,
    actor_name: &str,
) -> Result<(), SettingError> {
    let subscriber = Uuid::parse_str(id)
        .map(SubscriberId::from_uuid)
        .map_err(|_| SettingError::new("<id>", "is not a subscriber id (a UUID)"))?;
    let reference = match reference {
        Some(r) => ErasureReference::parse(r).map_err(|e| failed("--reference", e))?,
        None => ErasureReference::parse(&format!("erasure-{}", Uuid::now_v7().simple()))
            .map_err(|e| failed("--reference", e))?,
    };
    let actor = actor(actor_name)?;
    let (settings, _, storage) = prepare(&raw).await?;
    let privacy = privacy(&settings, &storage);
    let receipt = privacy
        .erase(subscriber, &actor, &reference)
        .await
        .map_err(|e| failed("erase", e))?;
    let outcome = if receipt.is_some() { "ok" } else { "not_found" };
    privacy
        .record(
            actor.as_str(),
            "subscriber.erase",
            Some(subscriber),
            outcome,
            Some(reference.as_str()),
        )
        .await
        .map_err(|e| failed("audit", e))?;
    match receipt {
        Some(receipt) => print_json(&receipt),
        None => Err(SettingError::new("<id>", "names no subscriber")),
    }
}

/// `newsletter export <id|email>`.
pub async fn export(raw: RawSettings, who: &str, actor_name: &str) -> Result<(), SettingError> {
    let actor = actor(actor_name)?;
    let (settings, _, storage) = prepare(&raw).await?;
    let privacy = privacy(&settings, &storage);
    let subscriber = match Uuid::parse_str(who) {
        Ok(uuid) => SubscriberId::from_uuid(uuid),
        Err(_) => {
            let email = EmailAddress::parse(who).map_err(|_| {
                SettingError::new(
                    "<subscriber>",
                    "is neither a subscriber id nor an email address",
                )
            })?;
            match storage
                .index
                .find(&email)
                .await
                .map_err(|e| failed("email index", e))?
            {
                Some(id) => id,
                None => {
                    privacy
                        .record(
                            actor.as_str(),
                            "subscriber.export_by_email",
                            None,
                            "not_found",
                            None,
                        )
                        .await
                        .map_err(|e| failed("audit", e))?;
                    return Err(SettingError::new(
                        "<subscriber>",
                        "no subscriber has this address",
                    ));
                }
            }
        }
    };
    match privacy
        .export(subscriber, &actor)
        .await
        .map_err(|e| failed("export", e))?
    {
        Some(document) => print_json(&document),
        None => Err(SettingError::new(
            "<subscriber>",
            "names no subscriber (or an erased one: nothing is held)",
        )),
    }
}

/// `newsletter rotate-master-key [--generate]`.
pub async fn rotate_master_key(raw: RawSettings, generate: bool) -> Result<(), SettingError> {
    if generate {
        let settings = Settings::from_raw(&raw)?;
        if settings.mode != Mode::Development || raw.secret("NEWSLETTER_MASTER_KEY")?.is_some() {
            return Err(SettingError::new(
                "--generate",
                "only for the generated development key file; in production put a new key first in NEWSLETTER_MASTER_KEY (keep the old ones after it) and run rotate-master-key",
            ));
        }
        let path = settings.data_dir.join(MASTER_KEY_FILE);
        let old = std::fs::read_to_string(&path).map_err(|e| {
            failed(
                "NEWSLETTER_MASTER_KEY",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let ring = newsletter_keyvault::MasterKeyRing::parse(&old)
            .map_err(|e| failed("NEWSLETTER_MASTER_KEY", e))?
            .with_new_current(new_master_key()?);
        let tmp = path.with_extension("new");
        write_private(&tmp, &ring.to_config_string())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| {
                failed(
                    "NEWSLETTER_MASTER_KEY",
                    format!("cannot write {}: {e}", path.display()),
                )
            })?;
        eprintln!(
            "added master key {} to {}",
            ring.current().id(),
            path.display()
        );
    }
    let (settings, secrets, storage) = prepare(&raw).await?;
    let report = storage
        .vault
        .rotate()
        .await
        .map_err(|e| failed("rotate-master-key", e))?;
    privacy(&settings, &storage)
        .record(
            "cli",
            "master_key.rotate",
            None,
            "ok",
            Some(secrets.master_keys.current().id()),
        )
        .await
        .map_err(|e| failed("audit", e))?;
    let in_use = storage
        .vault
        .key_ids_in_use()
        .await
        .map_err(|e| failed("rotate-master-key", e))?;
    print_json(&serde_json::json!({
        "current_key_id": secrets.master_keys.current().id(),
        "rewrapped": report.rewrapped,
        "already_current": report.current,
        "data_keys_per_master_key": in_use.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
    }))
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// `newsletter reapply-erasures`: completes the erasure of every subscriber whose stream holds
/// `SubscriberErased` (outbox files, email index entry, data key, SQLite write-ahead logs): the
/// projector's erasure sweep over the whole log, by hand. Run it after restoring the key vault
/// (or the email index) from a backup: keys destroyed after the backup was taken come back with
/// it, and this shreds them again. Idempotent.
pub async fn reapply_erasures(raw: RawSettings) -> Result<(), SettingError> {
    let (settings, _, storage) = prepare(&raw).await?;
    let privacy = privacy(&settings, &storage);
    let report = privacy
        .sweep_erasures(None, None, None)
        .await
        .map_err(|e| failed("reapply-erasures", e))?;
    privacy
        .record("cli", "erasures.reapply", None, "ok", None)
        .await
        .map_err(|e| failed("audit", e))?;
    print_json(&report)
}
