//! `newsletter`: an event-sourced newsletter subscription service.
//!
//! One binary, several roles: `serve` runs everything in one process (the embedded default:
//! SQLite and mail written to files); `api`, `projector` and `mailer` run one role each.

mod access_log;
mod adapters;
mod cli;
mod lease;
mod privacy;
mod roles;
mod secrets;
mod settings;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::roles::Roles;

/// jemalloc instead of glibc's malloc: glibc keeps up to 8 arenas per core, one per thread
/// that allocates (tokio workers, each sqlx SQLite connection's worker), and after catching up
/// on 100,000 subscribers `serve` held 180 MB of RSS, about 50 MB of it free heap that
/// `malloc_trim` could return; with jemalloc 155 MB, and catching up took 60 s instead of 85 s.
/// (SQLite's own allocations still use the system malloc.)
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use crate::settings::{RawSettings, Settings};

/// Event-sourced newsletter subscriptions: double opt-in signup, confirm and one-click
/// unsubscribe links, and subscriber status for internal services.
#[derive(Debug, Parser)]
#[command(name = "newsletter", version, after_help = Settings::help_table())]
struct Cli {
    /// A TOML file with settings (keys as the variables below, lower case, without NEWSLETTER_).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every role in one process: HTTP API, projector and mailer.
    Serve,
    /// Run the HTTP API only (scales out).
    Api,
    /// Run the projector only: keeps the read models up to date.
    Projector,
    /// Run the mailer only: sends the double opt-in confirmation mails.
    Mailer,
    /// Empty the read models and rebuild them from the event log, then exit.
    RebuildProjections,
    /// Erase a subscriber (GDPR art. 17): destroy their data key, delete their read-model rows,
    /// email index entry and outbox mails, record the erasure; prints the receipt as JSON.
    Erase {
        /// The subscriber id.
        id: String,
        /// The data-subject request's reference (letters, digits, . _ -).
        #[arg(long)]
        reference: Option<String>,
        /// Who is acting (recorded in the event and the audit log).
        #[arg(long, default_value = "cli")]
        actor: String,
    },
    /// Export everything held about a subscriber (by id or address) as JSON on stdout.
    Export {
        /// The subscriber id or email address.
        subscriber: String,
        /// Who is acting (recorded in the event and the audit log).
        #[arg(long, default_value = "cli")]
        actor: String,
    },
    /// Re-wrap every data key with the current (first) master key, so older master keys can
    /// be removed from NEWSLETTER_MASTER_KEY. In development, --generate first adds a new
    /// current key to <data dir>/master-key.
    RotateMasterKey {
        /// Development only: generate a new current key in the data dir's master-key file.
        #[arg(long)]
        generate: bool,
    },
    /// Destroy again the data keys (and email index entries) of every erased subscriber: run
    /// after restoring the key vault or the email index from a backup.
    ReapplyErasures,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let raw = match RawSettings::load(cli.config.as_deref()) {
        Ok(raw) => raw,
        Err(e) => {
            eprintln!("newsletter: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(
        raw.get("NEWSLETTER_LOG"),
        raw.get("NEWSLETTER_LOG_FORMAT") == Some("json"),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("newsletter: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let all = Roles {
        api: true,
        projector: true,
        mailer: true,
    };
    let none = Roles {
        api: false,
        projector: false,
        mailer: false,
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => roles::run(raw, all).await,
            Command::Api => roles::run(raw, Roles { api: true, ..none }).await,
            Command::Projector => {
                roles::run(
                    raw,
                    Roles {
                        projector: true,
                        ..none
                    },
                )
                .await
            }
            Command::Mailer => {
                roles::run(
                    raw,
                    Roles {
                        mailer: true,
                        ..none
                    },
                )
                .await
            }
            Command::RebuildProjections => roles::rebuild_projections(raw).await,
            Command::Erase {
                id,
                reference,
                actor,
            } => cli::erase(raw, &id, reference.as_deref(), &actor).await,
            Command::Export { subscriber, actor } => cli::export(raw, &subscriber, &actor).await,
            Command::RotateMasterKey { generate } => cli::rotate_master_key(raw, generate).await,
            Command::ReapplyErasures => cli::reapply_erasures(raw).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("newsletter: {e}");
            ExitCode::FAILURE
        }
    }
}
