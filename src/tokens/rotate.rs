//! Key rotation: re-seals every stored token and kept grant value (and every
//! pending link's PKCE verifier, every webhook endpoint's signing secret and every
//! answer kept for an idempotent replay) under the vault's current key. Safe while
//! the fleet serves: each row is replaced only if it still holds what was read, so
//! a refresh that committed meanwhile (already sealed with the current key) is
//! never overwritten.

use crate::store::{ConnectionRecord, Store, StoreError, TokenColumns};
use crate::vault::{
    Vault, VaultError, idempotent_answer_context, seal_context, webhook_secret_context,
};

use super::GRANT_VALUES;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RotateError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a rotation did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RotateReport {
    /// Connections whose tokens were re-sealed.
    pub connections: usize,
    /// Pending links whose verifiers were re-sealed.
    pub states: usize,
    /// Webhook endpoints whose signing secrets were re-sealed.
    pub webhook_secrets: usize,
    /// Answers kept for idempotent replay that were re-sealed.
    pub idempotent_answers: usize,
    /// Rows already sealed with the current key.
    pub current: usize,
    /// Rows that changed between reading and writing: run again to cover them.
    pub skipped: usize,
    /// Rows no configured key opens (logged with their connection); left as they are.
    pub unreadable: usize,
}

/// The connection's sealed columns opened and sealed again under the current key.
fn resealed(vault: &Vault, connection: &ConnectionRecord) -> Result<TokenColumns, VaultError> {
    let old = &connection.tokens;
    let reseal = |field: &str, sealed: &Option<Vec<u8>>| -> Result<Option<Vec<u8>>, VaultError> {
        let context = seal_context(connection.id, field);
        sealed
            .as_deref()
            .map(|s| vault.seal(&context, &vault.open(&context, s)?))
            .transpose()
    };
    Ok(TokenColumns {
        access_token: reseal("access_token", &old.access_token)?,
        refresh_token: reseal("refresh_token", &old.refresh_token)?,
        grant_values: reseal(GRANT_VALUES, &old.grant_values)?,
        ..old.clone()
    })
}

pub async fn reseal_all(store: &Store, vault: &Vault) -> Result<RotateReport, RotateError> {
    let current = vault.current_key_id();
    let stale = |sealed: &Option<Vec<u8>>| {
        sealed
            .as_deref()
            .is_some_and(|s| Vault::sealed_with(s) != Some(current))
    };
    let mut report = RotateReport::default();
    for connection in store.sealed_connections().await? {
        let old = &connection.tokens;
        if !stale(&old.access_token) && !stale(&old.refresh_token) && !stale(&old.grant_values) {
            report.current += 1;
            continue;
        }
        let resealed = resealed(vault, &connection);
        let new = match resealed {
            Ok(new) => new,
            Err(e) => {
                tracing::error!(connection = %connection.id, error = %e, "Tokens no configured key opens; left as they are.");
                report.unreadable += 1;
                continue;
            }
        };
        if store.reseal_tokens(connection.id, old, new).await? {
            report.connections += 1;
        } else {
            report.skipped += 1;
        }
    }
    for state in store.open_states().await? {
        if state.pkce_verifier.is_empty()
            || Vault::sealed_with(&state.pkce_verifier) == Some(current)
        {
            continue;
        }
        let connection = state
            .connection_id
            .parse()
            .map_err(|_| StoreError::Corrupt("oauth state connection".into()))?;
        let context = seal_context(connection, "pkce_verifier");
        let verifier = vault.seal(&context, &vault.open(&context, &state.pkce_verifier)?)?;
        store.reseal_state(&state.state_hash, verifier).await?;
        report.states += 1;
    }
    for endpoint in store.all_webhook_endpoints().await? {
        let old = &endpoint.sealed_secret;
        if Vault::sealed_with(old) == Some(current) {
            report.current += 1;
            continue;
        }
        let context = webhook_secret_context(endpoint.id);
        let sealed = match vault.open(&context, old) {
            Ok(secret) => vault.seal(&context, &secret)?,
            Err(e) => {
                tracing::error!(endpoint = %endpoint.id, error = %e, "Webhook secret no configured key opens; left as it is.");
                report.unreadable += 1;
                continue;
            }
        };
        if store
            .reseal_webhook_secret(endpoint.id, old, sealed)
            .await?
        {
            report.webhook_secrets += 1;
        } else {
            report.skipped += 1;
        }
    }
    for (key, old) in store.sealed_idempotent_answers().await? {
        if Vault::sealed_with(&old) == Some(current) {
            report.current += 1;
            continue;
        }
        let context = idempotent_answer_context(&key);
        let sealed = match vault.open(&context, &old) {
            Ok(answer) => vault.seal(&context, &answer)?,
            Err(e) => {
                tracing::error!(error = %e, "A kept idempotent answer no configured key opens; left as it is.");
                report.unreadable += 1;
                continue;
            }
        };
        if store.reseal_idempotent_answer(&key, &old, sealed).await? {
            report.idempotent_answers += 1;
        } else {
            report.skipped += 1;
        }
    }
    tracing::info!(
        key = current,
        connections = report.connections,
        states = report.states,
        webhook_secrets = report.webhook_secrets,
        idempotent_answers = report.idempotent_answers,
        "Vault key rotation finished."
    );
    Ok(report)
}
