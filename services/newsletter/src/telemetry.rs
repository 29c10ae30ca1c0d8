//! Logs: `tracing` to stderr, as text or JSON, filtered by `NEWSLETTER_LOG`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Addresses never reach it in clear: handlers log
/// `EmailAddress::masked()` and ids only.
pub fn init(filter: Option<&str>, json: bool) {
    let filter = EnvFilter::try_new(filter.unwrap_or("info,sqlx=warn"))
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
