//! Turns the server-backed tests on when their server is named:
//! `NEWSLETTER_TEST_DATABASE_URL` (PostgreSQL, cfg `postgres_tests`) and `KURRENTDB_URL`
//! (KurrentDB / EventStoreDB, cfg `kurrentdb_tests`). Without the variable they are compiled but
//! marked ignored with the reason, so `cargo test` reports them as not run, never as passed.

fn main() {
    println!("cargo:rustc-check-cfg=cfg(postgres_tests)");
    println!("cargo:rustc-check-cfg=cfg(kurrentdb_tests)");
    println!("cargo:rerun-if-env-changed=NEWSLETTER_TEST_DATABASE_URL");
    println!("cargo:rerun-if-env-changed=KURRENTDB_URL");
    if std::env::var_os("NEWSLETTER_TEST_DATABASE_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo:rustc-cfg=postgres_tests");
    }
    if std::env::var_os("KURRENTDB_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo:rustc-cfg=kurrentdb_tests");
    }
}
