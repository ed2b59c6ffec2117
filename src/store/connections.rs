//! Connections (one user's link to one institution), their sealed tokens, and the
//! single-use OAuth `state` records that bind a browser redirect to a link attempt.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Func, NullOrdering};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, Order, QueryFilter,
    QueryOrder, QuerySelect, Set,
};

use super::audit::AuditEntry;
use super::consents::{ActedBy, ConsentKind, NewConsentEvent};
use super::entities::{connection, oauth_state};
use super::{Store, StoreError};
use crate::domain::{ConnectionId, ConnectionStatus, LinkSessionId, TenantId, UserId};

/// The reason a connection whose consent ended is given.
pub const CONSENT_EXPIRED: &str =
    "REAUTH_REQUIRED: the user's consent at the institution has expired";

/// A connection as the rest of finsync sees it. Token columns stay sealed bytes.
#[derive(Debug, Clone)]
pub struct ConnectionRecord {
    pub id: ConnectionId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub institution_id: String,
    pub status: ConnectionStatus,
    pub scopes: Option<String>,
    pub tokens: TokenColumns,
    pub last_synced_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub last_failure_reason: Option<String>,
    pub next_sync_at: Option<DateTime<Utc>>,
    /// This connection's own sync interval, overriding its connector's and the default.
    pub sync_interval_secs: Option<u64>,
    pub consent: Consent,
    /// Moves in the same transaction as every write to the connection's records
    /// (a sync that changed something, an annotation, a disconnect): a cached view
    /// built at the same version holds the records as they are.
    pub records_version: i64,
    /// Where the next incremental sync resumes; written only with the success of
    /// the sync whose data it covers.
    pub sync_cursor: Option<String>,
    /// Set while a refresh that presented the stored refresh token has not recorded
    /// its outcome: when that refresh started. Found set by a later refresh, it says
    /// an earlier one was cut short and the institution may have rotated the token.
    pub refresh_started_at: Option<DateTime<Utc>>,
    /// When the next deep sync (the whole history re-read) is due; `None` until the
    /// first sync picks a time.
    pub deep_sync_due_at: Option<DateTime<Utc>>,
    /// Until when the sync holding the connection's sync lease keeps it, if one
    /// does; a live sync renews it, a dead one's lapses.
    pub sync_lease_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Moves on every change to the row; cached views compare it to detect that
    /// they were built from an outdated connection.
    pub updated_at: DateTime<Utc>,
}

/// What the user granted and when; kept after revocation as the consent history.
#[derive(Debug, Clone, Default)]
pub struct Consent {
    pub granted_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Consent {
    /// Whether a consent still in force ends within `window` of `now`.
    pub fn ends_within(&self, window: chrono::Duration, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_some_and(|at| at - now < window)
    }
}

/// Vault ciphertexts of a connection's tokens and when the access token expires.
#[derive(Clone, Default)]
pub struct TokenColumns {
    pub access_token: Option<Vec<u8>>,
    pub refresh_token: Option<Vec<u8>>,
    pub access_token_expires_at: Option<DateTime<Utc>>,
    /// When the background refresh should renew the access token.
    pub refresh_due_at: Option<DateTime<Utc>>,
    /// The values kept from the token response (a JSON object of text), sealed.
    pub grant_values: Option<Vec<u8>>,
}

impl std::fmt::Debug for TokenColumns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenColumns")
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "sealed"),
            )
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "sealed"),
            )
            .field("access_token_expires_at", &self.access_token_expires_at)
            .field("refresh_due_at", &self.refresh_due_at)
            .field(
                "grant_values",
                &self.grant_values.as_ref().map(|_| "sealed"),
            )
            .finish()
    }
}

/// Institution, last success, last failure, its reason.
type OutcomeRow = (
    String,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<String>,
);

/// One active connection's latest outcomes, as [`Store::recent_outcomes`] reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentOutcome {
    pub institution: String,
    pub last_synced_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub last_failure_reason: Option<String>,
}

/// What a successful sync records on its connection.
#[derive(Debug, Clone, Copy)]
pub struct SyncSuccess<'a> {
    /// When the sync started: the data is at least this fresh.
    pub at: DateTime<Utc>,
    pub next_sync_at: DateTime<Utc>,
    /// Where the next sync resumes; `None` for a connector without one.
    pub cursor: Option<&'a str>,
    /// When the next deep sync is due; `None` leaves it as it is.
    pub deep_sync_due_at: Option<DateTime<Utc>>,
    /// Whose sync this is: recorded only while it holds the sync lease.
    pub lease_owner: &'a str,
    /// The accounts whose data this sync could not read.
    pub unread: &'a [super::UnreadAccount],
    /// The accounts this sync read (listed by the institution this time).
    pub read: &'a [String],
    /// Parts left for a later sync (an institution struggling): an account failing
    /// on one of them was not asked again, so it is not known to have recovered.
    pub deferred: &'a [&'static str],
    /// The connection's last successful sync before this one.
    pub previous: Option<DateTime<Utc>>,
}

/// Records which of the connection's accounts started or stopped failing to be
/// read; returns whether any did. A steady sync writes nothing.
async fn record_account_fetches<C: ConnectionTrait>(
    db: &C,
    connection: &str,
    success: &SyncSuccess<'_>,
) -> Result<bool, StoreError> {
    use super::entities::account;
    use std::collections::BTreeMap;
    // One failure per account: the first part that could not be read.
    let mut failing: BTreeMap<&str, String> = BTreeMap::new();
    for unread in success.unread {
        failing
            .entry(unread.account_id.as_str())
            .or_insert_with(|| format!("{}: {}", unread.endpoint, unread.reason));
    }
    // Recovered: read this time, with nothing failing, and not failing on a part
    // this sync left for later.
    let mut recovery = account::Entity::update_many()
        .col_expr(
            account::Column::RefreshedAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(
            account::Column::FetchFailedAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(
            account::Column::FetchFailure,
            Expr::value(Option::<String>::None),
        )
        .filter(account::Column::ConnectionId.eq(connection))
        .filter(account::Column::FetchFailedAt.is_not_null())
        .filter(account::Column::ExternalId.is_in(success.read.iter().map(String::as_str)))
        .filter(account::Column::ExternalId.is_not_in(failing.keys().copied()));
    for part in success.deferred {
        recovery = recovery.filter(account::Column::FetchFailure.not_like(format!("{part}:%")));
    }
    let recovered = recovery.exec(db).await?.rows_affected;
    let mut began = 0;
    for (account_id, failure) in &failing {
        // Since when and why: kept from the first failing sync; the reason follows
        // the latest.
        began += account::Entity::update_many()
            .col_expr(account::Column::RefreshedAt, Expr::value(success.previous))
            .col_expr(account::Column::FetchFailedAt, Expr::value(success.at))
            .col_expr(account::Column::FetchFailure, Expr::value(failure.clone()))
            .filter(account::Column::ConnectionId.eq(connection))
            .filter(account::Column::ExternalId.eq(*account_id))
            .filter(account::Column::FetchFailedAt.is_null())
            .exec(db)
            .await?
            .rows_affected;
        began += account::Entity::update_many()
            .col_expr(account::Column::FetchFailure, Expr::value(failure.clone()))
            .filter(account::Column::ConnectionId.eq(connection))
            .filter(account::Column::ExternalId.eq(*account_id))
            .filter(
                Condition::any()
                    .add(account::Column::FetchFailure.ne(failure.clone()))
                    .add(account::Column::FetchFailure.is_null()),
            )
            .exec(db)
            .await?
            .rows_affected;
    }
    Ok(recovered + began > 0)
}

/// An account whose data could not be read at its connection's last sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFetchFailure {
    /// When its data was last read, if ever.
    pub refreshed_at: Option<DateTime<Utc>>,
    pub failing_since: DateTime<Utc>,
    /// `<part>: <reason>`.
    pub failure: String,
}

impl AccountFetchFailure {
    /// The failure an account's row records, if its last fetch failed.
    pub(in crate::store) fn of(row: &super::entities::account::Model) -> Option<Self> {
        Some(Self {
            refreshed_at: row.refreshed_at,
            failing_since: row.fetch_failed_at?,
            failure: row.fetch_failure.clone().unwrap_or_default(),
        })
    }
}

/// The two things only one process at a time may do to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Syncing it: two syncs would race on the rows.
    Sync,
    /// Refreshing or revoking its tokens: a rotating refresh token works once.
    Token,
}

impl Lease {
    /// Nobody holds it, the holder's time ran out, or `owner` holds it already
    /// (a re-delivered job).
    fn free_for(self, owner: &str) -> Condition {
        let (owner_column, until_column) = self.columns();
        Condition::any()
            .add(until_column.is_null())
            .add(until_column.lt(Utc::now()))
            .add(owner_column.eq(owner))
    }

    fn columns(self) -> (connection::Column, connection::Column) {
        match self {
            Self::Sync => (
                connection::Column::SyncLeaseOwner,
                connection::Column::SyncLeaseUntil,
            ),
            Self::Token => (
                connection::Column::TokenLeaseOwner,
                connection::Column::TokenLeaseUntil,
            ),
        }
    }
}

/// What is stored for one link attempt, keyed by the hash of its `state`.
pub struct NewState {
    pub state_hash: String,
    /// The app's link session that started this authorization, if one did.
    pub link_session: Option<LinkSessionId>,
    pub connection_id: ConnectionId,
    pub sealed_verifier: Vec<u8>,
    pub redirect_uri: String,
    pub expires_at: DateTime<Utc>,
}

impl Store {
    /// The connection for (tenant, user, institution), created `pending` if new. A
    /// relink reuses the same connection, so its synced data is kept.
    pub async fn upsert_connection(
        &self,
        tenant: TenantId,
        user: &UserId,
        institution: &str,
    ) -> Result<ConnectionRecord, StoreError> {
        if let Some(existing) = self.find_connection(tenant, user, institution).await? {
            return Ok(existing);
        }
        let now = Utc::now();
        let row = connection::ActiveModel {
            id: Set(ConnectionId::new().to_string()),
            tenant_id: Set(tenant.to_string()),
            user_id: Set(user.to_string()),
            institution_id: Set(institution.to_owned()),
            status: Set(ConnectionStatus::Pending.to_string()),
            scopes: Set(None),
            consent_granted_at: Set(None),
            consent_expires_at: Set(None),
            consent_revoked_at: Set(None),
            access_token: Set(None),
            refresh_token: Set(None),
            access_token_expires_at: Set(None),
            refresh_due_at: Set(None),
            grant_values: Set(None),
            token_lease_owner: Set(None),
            token_lease_until: Set(None),
            last_synced_at: Set(None),
            last_failure_at: Set(None),
            last_failure_reason: Set(None),
            next_sync_at: Set(None),
            sync_interval_secs: Set(None),
            sync_lease_owner: Set(None),
            sync_lease_until: Set(None),
            records_version: Set(0),
            sync_cursor: Set(None),
            refresh_started_at: Set(None),
            deep_sync_due_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        };
        match row.insert(self.db()).await {
            Ok(row) => to_record(row),
            // Two link requests raced and the unique index let the other win: use
            // its row. Any other failure is reported as it is.
            Err(e) => match self.find_connection(tenant, user, institution).await? {
                Some(existing) => Ok(existing),
                None => Err(e.into()),
            },
        }
    }

    pub async fn find_connection(
        &self,
        tenant: TenantId,
        user: &UserId,
        institution: &str,
    ) -> Result<Option<ConnectionRecord>, StoreError> {
        connection::Entity::find()
            .filter(connection::Column::TenantId.eq(tenant.to_string()))
            .filter(connection::Column::UserId.eq(user.as_str()))
            .filter(connection::Column::InstitutionId.eq(institution))
            .one(self.db())
            .await?
            .map(to_record)
            .transpose()
    }

    pub async fn connection(&self, id: ConnectionId) -> Result<ConnectionRecord, StoreError> {
        connection::Entity::find_by_id(id.to_string())
            .one(self.db())
            .await?
            .ok_or(StoreError::NotFound("connection"))
            .and_then(to_record)
    }

    /// A tenant's connections for one user, oldest first.
    pub async fn user_connections(
        &self,
        tenant: TenantId,
        user: &UserId,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        connection::Entity::find()
            .filter(connection::Column::TenantId.eq(tenant.to_string()))
            .filter(connection::Column::UserId.eq(user.as_str()))
            .order_by_asc(connection::Column::CreatedAt)
            .all(self.db())
            .await?
            .into_iter()
            .map(to_record)
            .collect()
    }

    /// Every connection of a tenant, by user.
    pub async fn tenant_connections(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        connection::Entity::find()
            .filter(connection::Column::TenantId.eq(tenant.to_string()))
            .order_by_asc(connection::Column::UserId)
            .order_by_asc(connection::Column::CreatedAt)
            .all(self.db())
            .await?
            .into_iter()
            .map(to_record)
            .collect()
    }

    /// Active connections whose next sync is due (or never scheduled).
    pub async fn due_connections(
        &self,
        now: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        use sea_orm::QuerySelect;
        connection::Entity::find()
            .filter(connection::Column::Status.eq(ConnectionStatus::Active.to_string()))
            .filter(
                Condition::any()
                    .add(connection::Column::NextSyncAt.is_null())
                    .add(connection::Column::NextSyncAt.lte(now)),
            )
            // Never-synced connections first, on both databases.
            .order_by_with_nulls(
                connection::Column::NextSyncAt,
                Order::Asc,
                NullOrdering::First,
            )
            .limit(limit)
            .all(self.db())
            .await?
            .into_iter()
            .map(to_record)
            .collect()
    }

    /// Active connections of `institution` whose last sync failed with a reason
    /// that starts with one of `reasons` and whose next attempt is after `after`:
    /// the ones waiting out an institution's trouble.
    pub async fn waiting_on_institution(
        &self,
        institution: &str,
        reasons: &[&str],
        after: DateTime<Utc>,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        let failing = reasons.iter().fold(Condition::any(), |any, reason| {
            any.add(connection::Column::LastFailureReason.starts_with(*reason))
        });
        connection::Entity::find()
            .filter(connection::Column::Status.eq(ConnectionStatus::Active.to_string()))
            .filter(connection::Column::InstitutionId.eq(institution))
            .filter(connection::Column::NextSyncAt.gt(after))
            .filter(failing)
            .order_by_asc(connection::Column::NextSyncAt)
            .all(self.db())
            .await?
            .into_iter()
            .map(to_record)
            .collect()
    }

    /// Moves `next_sync_at` forward only if it still holds `expected`: of several
    /// schedulers that saw the same due connection, exactly one wins the claim.
    pub async fn claim_schedule(
        &self,
        id: ConnectionId,
        expected: Option<DateTime<Utc>>,
        next: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut update = connection::Entity::update_many()
            .col_expr(connection::Column::NextSyncAt, Expr::value(next))
            .filter(connection::Column::Id.eq(id.to_string()));
        update = match expected {
            Some(at) => update.filter(connection::Column::NextSyncAt.eq(at)),
            None => update.filter(connection::Column::NextSyncAt.is_null()),
        };
        Ok(update.exec(self.db()).await?.rows_affected == 1)
    }

    /// Stores freshly granted tokens and the consent, and marks the connection
    /// active (repairing it if it needed re-authentication), recording `audit` with
    /// the consent's scopes and expiry.
    pub async fn save_grant(
        &self,
        id: ConnectionId,
        tokens: TokenColumns,
        scopes: Option<String>,
        consent_expires_at: Option<DateTime<Utc>>,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        let txn = self.begin_write().await?;
        let before = connection::Entity::find_by_id(id.to_string())
            .one(&txn)
            .await?
            .ok_or(StoreError::NotFound("connection"))?;
        let kind = if before.status == ConnectionStatus::ReauthRequired.to_string() {
            ConsentKind::Renewed
        } else {
            ConsentKind::Granted
        };
        super::consents::record(
            &txn,
            NewConsentEvent {
                connection: &before,
                kind,
                acted_by: ActedBy::User,
                scopes: scopes.clone(),
                expires_at: consent_expires_at,
                reason: None,
            },
        )
        .await?;
        let mut row: connection::ActiveModel = before.into();
        let audit = audit
            .target(format!("connection:{id}"))
            .detail(serde_json::json!({
                "scopes": scopes,
                "consent_expires_at": consent_expires_at,
            }));
        row.access_token = Set(tokens.access_token);
        row.refresh_token = Set(tokens.refresh_token);
        row.access_token_expires_at = Set(tokens.access_token_expires_at);
        row.refresh_due_at = Set(tokens.refresh_due_at);
        // A new grant: what an earlier one came with is not carried over.
        row.grant_values = Set(tokens.grant_values);
        row.refresh_started_at = Set(None);
        row.scopes = Set(scopes);
        row.status = Set(ConnectionStatus::Active.to_string());
        row.consent_granted_at = Set(Some(now));
        row.consent_expires_at = Set(consent_expires_at);
        row.consent_revoked_at = Set(None);
        row.last_failure_reason = Set(None);
        row.next_sync_at = Set(None);
        row.updated_at = Set(now);
        row.update(&txn).await?;
        super::audit::append(&txn, audit).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Stores refreshed tokens. A missing refresh token keeps the stored one (the
    /// institution did not rotate it), and missing grant values the stored ones.
    ///
    /// Written only while `lease_owner` holds the token lease and the connection is
    /// still active: a refresh that outlived its lease, or raced a disconnect,
    /// must not put tokens back. Returns whether the tokens were stored.
    pub async fn save_refreshed_tokens(
        &self,
        id: ConnectionId,
        lease_owner: &str,
        tokens: TokenColumns,
    ) -> Result<bool, StoreError> {
        let mut update = connection::Entity::update_many()
            .col_expr(
                connection::Column::AccessToken,
                Expr::value(tokens.access_token),
            )
            .col_expr(
                connection::Column::AccessTokenExpiresAt,
                Expr::value(tokens.access_token_expires_at),
            )
            .col_expr(
                connection::Column::RefreshDueAt,
                Expr::value(tokens.refresh_due_at),
            )
            .col_expr(
                connection::Column::RefreshStartedAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(connection::Column::UpdatedAt, Expr::value(Utc::now()));
        if let Some(refresh) = tokens.refresh_token {
            update = update.col_expr(connection::Column::RefreshToken, Expr::value(refresh));
        }
        if let Some(values) = tokens.grant_values {
            update = update.col_expr(connection::Column::GrantValues, Expr::value(values));
        }
        let saved = update
            .filter(connection::Column::Id.eq(id.to_string()))
            .filter(connection::Column::TokenLeaseOwner.eq(lease_owner))
            .filter(connection::Column::Status.eq(ConnectionStatus::Active.to_string()))
            .exec(self.db())
            .await?;
        Ok(saved.rows_affected == 1)
    }

    /// Records, before the token request goes out, that a refresh presents the
    /// stored refresh token: `since` unless an earlier refresh's start is still
    /// recorded (the earliest is when a rotation may have happened). The
    /// background refresh is made due by `due_by` at the latest, so a refresh cut
    /// short is taken up again as soon as its lease lapses. Written only while
    /// `lease_owner` holds the token lease; returns whether it was.
    pub async fn record_refresh_intent(
        &self,
        id: ConnectionId,
        lease_owner: &str,
        since: DateTime<Utc>,
        due_by: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let recorded = connection::Entity::update_many()
            .col_expr(
                connection::Column::RefreshStartedAt,
                Func::coalesce([
                    Expr::col(connection::Column::RefreshStartedAt),
                    Expr::value(since),
                ])
                .into(),
            )
            .col_expr(connection::Column::RefreshDueAt, Expr::value(due_by))
            .filter(connection::Column::Id.eq(id.to_string()))
            .filter(connection::Column::TokenLeaseOwner.eq(lease_owner))
            .exec(self.db())
            .await?;
        Ok(recorded.rows_affected == 1)
    }

    /// Moves the background refresh to `at`, while `lease_owner` holds the token
    /// lease (a refresh that failed and will give the lease back).
    pub async fn postpone_refresh(
        &self,
        id: ConnectionId,
        lease_owner: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        connection::Entity::update_many()
            .col_expr(connection::Column::RefreshDueAt, Expr::value(at))
            .filter(connection::Column::Id.eq(id.to_string()))
            .filter(connection::Column::TokenLeaseOwner.eq(lease_owner))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Moves an *active* connection to `status` with a reason; a connection that
    /// was revoked or relinked meanwhile is left alone. Returns whether it moved.
    /// `institution_ended_consent`: the institution refused the grant, which the
    /// consent history records as its revocation (an expiry is recognised by its
    /// reason).
    /// A move is audited as finsync's own (`consent.expired`, or
    /// `connection.<status>` with the reason's code).
    pub async fn leave_active(
        &self,
        id: ConnectionId,
        status: ConnectionStatus,
        reason: &str,
        institution_ended_consent: bool,
    ) -> Result<bool, StoreError> {
        let now = Utc::now();
        let txn = self.begin_write().await?;
        let moved = connection::Entity::update_many()
            .col_expr(connection::Column::Status, Expr::value(status.to_string()))
            .col_expr(connection::Column::LastFailureAt, Expr::value(now))
            .col_expr(connection::Column::LastFailureReason, Expr::value(reason))
            .col_expr(connection::Column::UpdatedAt, Expr::value(now))
            .filter(connection::Column::Id.eq(id.to_string()))
            .filter(connection::Column::Status.eq(ConnectionStatus::Active.to_string()))
            .exec(&txn)
            .await?;
        if moved.rows_affected != 1 {
            return Ok(false);
        }
        // The code only: the message after it may quote the institution.
        let code = reason.split(':').next().unwrap_or(reason).trim();
        // The consent ended with it: by its lifetime, or by the institution's refusal.
        let consent = if reason == CONSENT_EXPIRED {
            Some((ConsentKind::Expired, ActedBy::System, "CONSENT_EXPIRED"))
        } else if institution_ended_consent {
            Some((ConsentKind::Revoked, ActedBy::Institution, code))
        } else {
            None
        };
        if let Some((kind, acted_by, why)) = consent {
            let row = connection::Entity::find_by_id(id.to_string())
                .one(&txn)
                .await?
                .ok_or(StoreError::NotFound("connection"))?;
            super::consents::record(
                &txn,
                NewConsentEvent {
                    connection: &row,
                    kind,
                    acted_by,
                    scopes: None,
                    expires_at: row.consent_expires_at,
                    reason: Some(why.to_owned()),
                },
            )
            .await?;
        }
        let action = if reason == CONSENT_EXPIRED {
            "consent.expired".to_owned()
        } else {
            format!("connection.{status}")
        };
        let entry = AuditEntry::new(super::audit::Actor::system(), action)
            .target(format!("connection:{id}"))
            .detail(serde_json::json!({ "reason": code }));
        super::audit::append(&txn, entry).await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Active connections whose consent has ended need the user to grant it again.
    pub async fn expire_consents(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        let expired: Vec<ConnectionRecord> = connection::Entity::find()
            .filter(connection::Column::Status.eq(ConnectionStatus::Active.to_string()))
            .filter(connection::Column::ConsentExpiresAt.lte(now))
            .all(self.db())
            .await?
            .into_iter()
            .map(to_record)
            .collect::<Result<_, _>>()?;
        let mut moved = Vec::new();
        for c in expired {
            let reason = CONSENT_EXPIRED;
            if self
                .leave_active(c.id, ConnectionStatus::ReauthRequired, reason, false)
                .await?
            {
                moved.push(c);
            }
        }
        Ok(moved)
    }

    /// Ends a connection: its tokens are deleted and it is marked revoked; the row
    /// stays as the consent history. Its synced and quarantined records are deleted.
    /// `audit` is recorded in the same transaction.
    pub async fn revoke_connection(
        &self,
        id: ConnectionId,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        use super::entities::{
            account, data_quality_finding, holding, institution_event, instrument_conflict,
            quarantined_record, security, transaction,
        };
        let now = Utc::now();
        let conn = id.to_string();
        let txn = self.begin_write().await?;
        // First, so that a sync writing records waits for this to commit and then
        // finds the connection revoked.
        super::records::records_changed(&txn, &conn, false).await?;
        let before = connection::Entity::find_by_id(conn.clone())
            .one(&txn)
            .await?
            .ok_or(StoreError::NotFound("connection"))?;
        // Ended now, unless it already had (a second disconnect changes nothing).
        if before.consent_revoked_at.is_none() {
            super::consents::record(
                &txn,
                NewConsentEvent {
                    connection: &before,
                    kind: ConsentKind::Revoked,
                    acted_by: ActedBy::of(audit.actor()),
                    scopes: None,
                    expires_at: before.consent_expires_at,
                    reason: None,
                },
            )
            .await?;
        }
        let mut row: connection::ActiveModel = before.into();
        row.access_token = Set(None);
        row.refresh_token = Set(None);
        row.access_token_expires_at = Set(None);
        row.refresh_due_at = Set(None);
        row.grant_values = Set(None);
        row.status = Set(ConnectionStatus::Revoked.to_string());
        row.consent_revoked_at = Set(Some(now));
        row.next_sync_at = Set(None);
        row.sync_cursor = Set(None);
        // A sync running now must not record its success, nor its cursor, on a
        // connection linked again meanwhile.
        row.sync_lease_owner = Set(None);
        row.sync_lease_until = Set(None);
        row.updated_at = Set(now);
        row.update(&txn).await?;
        transaction::Entity::delete_many()
            .filter(transaction::Column::ConnectionId.eq(&conn))
            .exec(&txn)
            .await?;
        holding::Entity::delete_many()
            .filter(holding::Column::ConnectionId.eq(&conn))
            .exec(&txn)
            .await?;
        // Securities first: a catch-up matching one of them holds its row, and
        // its conflicts are committed (and deleted here) by the time this goes on.
        security::Entity::delete_many()
            .filter(security::Column::ConnectionId.eq(&conn))
            .exec(&txn)
            .await?;
        instrument_conflict::Entity::delete_many()
            .filter(instrument_conflict::Column::ConnectionId.eq(&conn))
            .exec(&txn)
            .await?;
        account::Entity::delete_many()
            .filter(account::Column::ConnectionId.eq(&conn))
            .exec(&txn)
            .await?;
        oauth_state::Entity::delete_many()
            .filter(oauth_state::Column::ConnectionId.eq(&conn))
            .exec(&txn)
            .await?;
        quarantined_record::Entity::delete_many()
            .filter(quarantined_record::Column::ConnectionId.eq(&conn))
            .exec(&txn)
            .await?;
        data_quality_finding::Entity::delete_many()
            .filter(data_quality_finding::Column::ConnectionId.eq(&conn))
            .exec(&txn)
            .await?;
        // Events the institution sent about it name its accounts.
        institution_event::Entity::delete_many()
            .filter(institution_event::Column::Connections.contains(&conn))
            .exec(&txn)
            .await?;
        super::audit::append(&txn, audit).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Per institution, when the soonest-expiring access token of an active
    /// connection expires (for the time-to-expiry gauge).
    pub async fn soonest_token_expiry(&self) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        use sea_orm::QuerySelect;
        use sea_orm::sea_query::Func;
        let rows: Vec<(String, Option<DateTime<Utc>>)> = connection::Entity::find()
            .select_only()
            .column(connection::Column::InstitutionId)
            .expr(Func::min(Expr::col(
                connection::Column::AccessTokenExpiresAt,
            )))
            .filter(connection::Column::Status.eq(ConnectionStatus::Active.to_string()))
            .filter(connection::Column::AccessTokenExpiresAt.is_not_null())
            .group_by(connection::Column::InstitutionId)
            .into_tuple()
            .all(self.db())
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(institution, at)| Some((institution, at?)))
            .collect())
    }

    /// Active connections whose background token refresh is due.
    pub async fn due_refreshes(
        &self,
        now: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        use sea_orm::QuerySelect;
        connection::Entity::find()
            .filter(connection::Column::Status.eq(ConnectionStatus::Active.to_string()))
            .filter(connection::Column::RefreshToken.is_not_null())
            .filter(connection::Column::RefreshDueAt.lte(now))
            // One being refreshed right now is not due: its holder renews the lease.
            .filter(
                Condition::any()
                    .add(connection::Column::TokenLeaseUntil.is_null())
                    .add(connection::Column::TokenLeaseUntil.lt(now)),
            )
            .order_by_asc(connection::Column::RefreshDueAt)
            .limit(limit)
            .all(self.db())
            .await?
            .into_iter()
            .map(to_record)
            .collect()
    }

    /// Moves `refresh_due_at` on only if it still holds `expected` (see
    /// [`Store::claim_schedule`]).
    pub async fn claim_refresh(
        &self,
        id: ConnectionId,
        expected: DateTime<Utc>,
        next: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let claimed = connection::Entity::update_many()
            .col_expr(connection::Column::RefreshDueAt, Expr::value(next))
            .filter(connection::Column::Id.eq(id.to_string()))
            .filter(connection::Column::RefreshDueAt.eq(expected))
            .exec(self.db())
            .await?;
        Ok(claimed.rows_affected == 1)
    }

    /// The latest outcomes of every active connection that synced since `since` or
    /// whose latest outcome is a failure, however old.
    pub async fn recent_outcomes(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<RecentOutcome>, StoreError> {
        let rows: Vec<OutcomeRow> = connection::Entity::find()
            .select_only()
            .column(connection::Column::InstitutionId)
            .column(connection::Column::LastSyncedAt)
            .column(connection::Column::LastFailureAt)
            .column(connection::Column::LastFailureReason)
            .filter(connection::Column::Status.eq(ConnectionStatus::Active.to_string()))
            .filter(
                Condition::any()
                    .add(connection::Column::LastSyncedAt.gte(since))
                    .add(
                        Condition::all()
                            .add(connection::Column::LastFailureAt.is_not_null())
                            .add(
                                Condition::any()
                                    .add(connection::Column::LastSyncedAt.is_null())
                                    .add(
                                        Expr::col(connection::Column::LastFailureAt)
                                            .gt(Expr::col(connection::Column::LastSyncedAt)),
                                    ),
                            ),
                    ),
            )
            .into_tuple()
            .all(self.db())
            .await?;
        Ok(rows
            .into_iter()
            .map(|(institution, synced, failed, reason)| RecentOutcome {
                institution,
                last_synced_at: synced,
                last_failure_at: failed,
                last_failure_reason: reason,
            })
            .collect())
    }

    /// Every connection that holds sealed tokens, for re-sealing under a new key.
    pub async fn sealed_connections(&self) -> Result<Vec<ConnectionRecord>, StoreError> {
        connection::Entity::find()
            .filter(
                Condition::any()
                    .add(connection::Column::AccessToken.is_not_null())
                    .add(connection::Column::RefreshToken.is_not_null())
                    .add(connection::Column::GrantValues.is_not_null()),
            )
            .all(self.db())
            .await?
            .into_iter()
            .map(to_record)
            .collect()
    }

    /// Replaces a connection's ciphertexts (tokens and grant values) with `new`'s if
    /// they are still `old` (a refresh that committed meanwhile is newer and already
    /// sealed under the current key).
    pub async fn reseal_tokens(
        &self,
        id: ConnectionId,
        old: &TokenColumns,
        new: TokenColumns,
    ) -> Result<bool, StoreError> {
        let mut update = connection::Entity::update_many()
            .col_expr(
                connection::Column::AccessToken,
                Expr::value(new.access_token),
            )
            .col_expr(
                connection::Column::RefreshToken,
                Expr::value(new.refresh_token),
            )
            .col_expr(
                connection::Column::GrantValues,
                Expr::value(new.grant_values),
            )
            .filter(connection::Column::Id.eq(id.to_string()));
        update = match &old.access_token {
            Some(a) => update.filter(connection::Column::AccessToken.eq(a.clone())),
            None => update.filter(connection::Column::AccessToken.is_null()),
        };
        update = match &old.refresh_token {
            Some(r) => update.filter(connection::Column::RefreshToken.eq(r.clone())),
            None => update.filter(connection::Column::RefreshToken.is_null()),
        };
        update = match &old.grant_values {
            Some(v) => update.filter(connection::Column::GrantValues.eq(v.clone())),
            None => update.filter(connection::Column::GrantValues.is_null()),
        };
        Ok(update.exec(self.db()).await?.rows_affected == 1)
    }

    /// Unused link states, for re-sealing their PKCE verifiers under a new key.
    pub async fn open_states(&self) -> Result<Vec<oauth_state::Model>, StoreError> {
        Ok(oauth_state::Entity::find()
            .filter(oauth_state::Column::UsedAt.is_null())
            .all(self.db())
            .await?)
    }

    pub async fn reseal_state(
        &self,
        state_hash: &str,
        verifier: Vec<u8>,
    ) -> Result<(), StoreError> {
        oauth_state::Entity::update_many()
            .col_expr(oauth_state::Column::PkceVerifier, Expr::value(verifier))
            .filter(oauth_state::Column::StateHash.eq(state_hash))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Records a successful sync that started at `at`: schedules the next one,
    /// stores where it resumes (`cursor`, covering data already committed) and
    /// which accounts started or stopped failing, in one transaction. Only while the connection is active and the sync still holds its
    /// lease: returns false, changing nothing, if a disconnect (which takes the
    /// lease away) or another sync came between. The sync gives the lease back
    /// once its run is closed.
    pub async fn record_sync_success(
        &self,
        id: ConnectionId,
        success: SyncSuccess<'_>,
    ) -> Result<bool, StoreError> {
        let mut update = connection::Entity::update_many()
            .col_expr(connection::Column::LastSyncedAt, Expr::value(success.at))
            .col_expr(
                connection::Column::NextSyncAt,
                Expr::value(success.next_sync_at),
            )
            .col_expr(
                connection::Column::LastFailureReason,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                connection::Column::SyncCursor,
                Expr::value(success.cursor.map(str::to_owned)),
            )
            .col_expr(connection::Column::UpdatedAt, Expr::value(Utc::now()));
        if let Some(due) = success.deep_sync_due_at {
            update = update.col_expr(connection::Column::DeepSyncDueAt, Expr::value(due));
        }
        let txn = self.begin_write().await?;
        let updated = update
            .filter(connection::Column::Id.eq(id.to_string()))
            .filter(connection::Column::Status.eq(ConnectionStatus::Active.to_string()))
            .filter(connection::Column::SyncLeaseOwner.eq(success.lease_owner))
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            return Ok(false);
        }
        if record_account_fetches(&txn, &id.to_string(), &success).await? {
            // Readers' cached views show each account's state: they are rebuilt.
            super::records::records_changed(&txn, &id.to_string(), true).await?;
        }
        txn.commit().await?;
        Ok(true)
    }

    /// Sets (or, with `None`, clears) the connection's own sync interval.
    pub async fn set_sync_interval(
        &self,
        id: ConnectionId,
        secs: Option<u64>,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let txn = self.begin_write().await?;
        let mut row: connection::ActiveModel = connection::Entity::find_by_id(id.to_string())
            .one(&txn)
            .await?
            .ok_or(StoreError::NotFound("connection"))?
            .into();
        row.sync_interval_secs = Set(secs.and_then(|s| i64::try_from(s).ok()));
        row.updated_at = Set(Utc::now());
        row.update(&txn).await?;
        let detail = serde_json::json!({ "sync_interval_secs": secs });
        super::audit::append(&txn, audit.detail(detail)).await?;
        txn.commit().await?;
        Ok(())
    }

    pub async fn record_sync_failure(
        &self,
        id: ConnectionId,
        reason: &str,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        let mut row: connection::ActiveModel = self.connection_row(id).await?.into();
        row.last_failure_at = Set(Some(now));
        row.last_failure_reason = Set(Some(reason.to_owned()));
        row.updated_at = Set(now);
        row.update(self.db()).await?;
        Ok(())
    }

    /// Takes one of the connection's leases for `owner` until `until`, if nobody
    /// else holds an unexpired one. The same owner (a re-delivered job) may take it
    /// again. Leases are rows, not locks: a crashed holder's lease simply expires.
    pub async fn acquire_lease(
        &self,
        lease: Lease,
        id: ConnectionId,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (owner_column, until_column) = lease.columns();
        let taken = connection::Entity::update_many()
            .col_expr(owner_column, Expr::value(owner))
            .col_expr(until_column, Expr::value(until))
            .filter(connection::Column::Id.eq(id.to_string()))
            .filter(lease.free_for(owner))
            .exec(self.db())
            .await?;
        Ok(taken.rows_affected == 1)
    }

    /// Takes the sync lease for `owner` if the connection is active and nobody
    /// else holds an unexpired lease, and returns the connection as it is now;
    /// `None` if it is busy, not active, or gone. One statement: the row read is
    /// the row leased.
    pub async fn lease_for_sync(
        &self,
        id: ConnectionId,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<Option<ConnectionRecord>, StoreError> {
        let (owner_column, until_column) = Lease::Sync.columns();
        connection::Entity::update_many()
            .col_expr(owner_column, Expr::value(owner))
            .col_expr(until_column, Expr::value(until))
            .filter(connection::Column::Id.eq(id.to_string()))
            .filter(connection::Column::Status.eq(ConnectionStatus::Active.to_string()))
            .filter(Lease::Sync.free_for(owner))
            .exec_with_returning(self.db())
            .await?
            .into_iter()
            .next()
            .map(to_record)
            .transpose()
    }

    /// Gives a lease back, if `owner` still holds it.
    pub async fn release_lease(
        &self,
        lease: Lease,
        id: ConnectionId,
        owner: &str,
    ) -> Result<(), StoreError> {
        let (owner_column, until_column) = lease.columns();
        connection::Entity::update_many()
            .col_expr(owner_column, Expr::value(Option::<String>::None))
            .col_expr(until_column, Expr::value(Option::<DateTime<Utc>>::None))
            .filter(connection::Column::Id.eq(id.to_string()))
            .filter(owner_column.eq(owner))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Stores a link attempt's state, and forgets attempts that expired more than a
    /// day ago (kept that long so a late callback is reported as expired, not unknown).
    pub async fn insert_state(&self, state: NewState, audit: AuditEntry) -> Result<(), StoreError> {
        oauth_state::Entity::delete_many()
            .filter(oauth_state::Column::ExpiresAt.lt(Utc::now() - chrono::Duration::days(1)))
            .exec(self.db())
            .await?;
        let txn = self.begin_write().await?;
        oauth_state::ActiveModel {
            state_hash: Set(state.state_hash),
            connection_id: Set(state.connection_id.to_string()),
            pkce_verifier: Set(state.sealed_verifier),
            redirect_uri: Set(state.redirect_uri),
            created_at: Set(Utc::now()),
            expires_at: Set(state.expires_at),
            used_at: Set(None),
            link_session_id: Set(state.link_session.map(|id| id.to_string())),
        }
        .insert(&txn)
        .await?;
        super::audit::append(&txn, audit).await?;
        txn.commit().await?;
        Ok(())
    }

    /// A state as stored, used or not (a look that changes nothing).
    pub async fn state(&self, state_hash: &str) -> Result<Option<oauth_state::Model>, StoreError> {
        Ok(oauth_state::Entity::find_by_id(state_hash.to_owned())
            .one(self.db())
            .await?)
    }

    /// Marks a state used and returns it, if it exists, is unexpired and unused.
    /// The conditional update makes it single-use even when two callbacks race.
    pub async fn consume_state(
        &self,
        state_hash: &str,
    ) -> Result<Option<oauth_state::Model>, StoreError> {
        let now = Utc::now();
        let claimed = oauth_state::Entity::update_many()
            .col_expr(oauth_state::Column::UsedAt, Expr::value(now))
            .filter(oauth_state::Column::StateHash.eq(state_hash))
            .filter(oauth_state::Column::UsedAt.is_null())
            .filter(oauth_state::Column::ExpiresAt.gt(now))
            .exec(self.db())
            .await?;
        if claimed.rows_affected != 1 {
            return Ok(None);
        }
        Ok(oauth_state::Entity::find_by_id(state_hash.to_owned())
            .one(self.db())
            .await?)
    }

    async fn connection_row(&self, id: ConnectionId) -> Result<connection::Model, StoreError> {
        connection::Entity::find_by_id(id.to_string())
            .one(self.db())
            .await?
            .ok_or(StoreError::NotFound("connection"))
    }
}

pub(super) fn to_record(row: connection::Model) -> Result<ConnectionRecord, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("connection {}: {what}", row.id));
    Ok(ConnectionRecord {
        id: row.id.parse().map_err(|_| corrupt("id"))?,
        tenant_id: row.tenant_id.parse().map_err(|_| corrupt("tenant id"))?,
        user_id: UserId::parse(&row.user_id).map_err(|_| corrupt("user id"))?,
        status: row.status.parse().map_err(|_| corrupt("status"))?,
        institution_id: row.institution_id,
        scopes: row.scopes,
        tokens: TokenColumns {
            access_token: row.access_token,
            refresh_token: row.refresh_token,
            access_token_expires_at: row.access_token_expires_at,
            refresh_due_at: row.refresh_due_at,
            grant_values: row.grant_values,
        },
        last_synced_at: row.last_synced_at,
        last_failure_at: row.last_failure_at,
        last_failure_reason: row.last_failure_reason,
        next_sync_at: row.next_sync_at,
        sync_interval_secs: row.sync_interval_secs.and_then(|s| u64::try_from(s).ok()),
        consent: Consent {
            granted_at: row.consent_granted_at,
            expires_at: row.consent_expires_at,
            revoked_at: row.consent_revoked_at,
        },
        records_version: row.records_version,
        sync_cursor: row.sync_cursor,
        refresh_started_at: row.refresh_started_at,
        deep_sync_due_at: row.deep_sync_due_at,
        sync_lease_until: row.sync_lease_owner.and(row.sync_lease_until),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}
