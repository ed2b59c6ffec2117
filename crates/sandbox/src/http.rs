//! The sandbox's own outbound HTTP client (its webhooks, and its tests): redirects off
//! and bounded timeouts, like a real institution's sender. The sandbox depends on
//! nothing of finsync's, so it builds its own.

use std::time::Duration;

#[expect(
    clippy::disallowed_methods,
    reason = "the sandbox's one place that builds its client"
)]
pub(crate) fn client() -> reqwest::Client {
    // Fails only when a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .user_agent(concat!("finsync-sandbox/", env!("CARGO_PKG_VERSION")))
        .build()
        // Building fails only if the TLS backend cannot initialise: a broken
        // installation, not a runtime condition.
        .unwrap_or_else(|e| panic!("cannot build the HTTP client: {e}"))
}
