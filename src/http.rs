//! The one place that builds the HTTP client every outbound call shares: redirects
//! off (an OAuth token endpoint that redirects is a misconfiguration or an attack,
//! not something to follow), bounded timeouts, and a user agent that says who calls.
//! The span exporter, which runs on a thread of its own, gets a blocking twin.
//!
//! TLS is rustls with the `ring` provider, the one sqlx already uses, so the
//! process carries one crypto provider rather than two.

use std::time::Duration;

#[expect(
    clippy::disallowed_methods,
    reason = "this is the one place the client is built"
)]
pub fn client() -> reqwest::Client {
    // Fails only when a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("finsync/", env!("CARGO_PKG_VERSION")))
        .build()
        // Building fails only if the TLS backend cannot initialise, which is a
        // broken installation, not a runtime condition.
        .unwrap_or_else(|e| panic!("cannot build the HTTP client: {e}"))
}

/// [`client`]'s blocking twin, for the span exporter's own thread. Build it off the
/// async runtime: it runs one of its own.
#[expect(
    clippy::disallowed_methods,
    reason = "this is the one place the client is built"
)]
pub fn blocking_client() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("finsync/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|e| panic!("cannot build the HTTP client: {e}"))
}
