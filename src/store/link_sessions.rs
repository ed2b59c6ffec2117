//! Link sessions: an app's request to link one of its users, from creation through
//! the hosted page to its outcome. Every step is one conditional update, so a
//! session is opened by one browser only, and ends once.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, Set,
};

use super::entities::link_session;
use super::{Store, StoreError};
use crate::domain::{ConnectionId, LinkSessionId, LinkSessionStatus, TenantId, UserId};

/// A link session as stored.
#[derive(Debug, Clone)]
pub struct LinkSessionRecord {
    pub id: LinkSessionId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    /// Named by the app, or chosen by the user when authorization began.
    pub institution_id: Option<String>,
    /// What the app asked for; empty for anything.
    pub products: Vec<String>,
    pub redirect_uri: String,
    /// The connection the session was opened to repair.
    pub repair_connection_id: Option<ConnectionId>,
    /// The connection being linked, once authorization began.
    pub connection_id: Option<ConnectionId>,
    /// Vault ciphertext of the link URL's token.
    pub sealed_token: Vec<u8>,
    pub browser_hash: Option<String>,
    /// The state hash of the authorization under way, if one is.
    pub attempt: Option<String>,
    pub status: LinkSessionStatus,
    /// The stable code of the last thing that went wrong (`CONSENT_DENIED`, …).
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub opened_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl LinkSessionRecord {
    /// The status as of `now`: a session nobody finished in time has expired.
    pub fn status_at(&self, now: DateTime<Utc>) -> LinkSessionStatus {
        match self.status {
            LinkSessionStatus::Pending | LinkSessionStatus::Open if self.expires_at <= now => {
                LinkSessionStatus::Expired
            }
            status => status,
        }
    }
}

/// A session about to be stored.
pub struct NewLinkSession {
    pub id: LinkSessionId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub institution_id: Option<String>,
    pub products: Vec<String>,
    pub redirect_uri: String,
    pub repair_connection_id: Option<ConnectionId>,
    pub sealed_token: Vec<u8>,
    pub expires_at: DateTime<Utc>,
}

impl Store {
    pub async fn insert_link_session(
        &self,
        new: NewLinkSession,
    ) -> Result<LinkSessionRecord, StoreError> {
        let row = link_session::ActiveModel {
            id: Set(new.id.to_string()),
            tenant_id: Set(new.tenant_id.to_string()),
            user_id: Set(new.user_id.to_string()),
            institution_id: Set(new.institution_id),
            products: Set((!new.products.is_empty())
                .then(|| serde_json::to_string(&new.products).unwrap_or_default())),
            redirect_uri: Set(new.redirect_uri),
            repair_connection_id: Set(new.repair_connection_id.map(|c| c.to_string())),
            connection_id: Set(None),
            sealed_token: Set(new.sealed_token),
            browser_hash: Set(None),
            attempt: Set(None),
            status: Set(LinkSessionStatus::Pending.to_string()),
            error: Set(None),
            created_at: Set(Utc::now()),
            expires_at: Set(new.expires_at),
            opened_at: Set(None),
            completed_at: Set(None),
        }
        .insert(self.db())
        .await?;
        to_record(row)
    }

    pub async fn link_session(
        &self,
        id: LinkSessionId,
    ) -> Result<Option<LinkSessionRecord>, StoreError> {
        link_session::Entity::find_by_id(id.to_string())
            .one(self.db())
            .await?
            .map(to_record)
            .transpose()
    }

    /// A repair session for `connection` returning to `redirect_uri`, asking for
    /// no particular products, that no browser has opened and that stays valid
    /// until at least `valid_until`: the newest, if any.
    pub async fn pending_repair_session(
        &self,
        connection: ConnectionId,
        redirect_uri: &str,
        valid_until: DateTime<Utc>,
    ) -> Result<Option<LinkSessionRecord>, StoreError> {
        link_session::Entity::find()
            .filter(link_session::Column::RepairConnectionId.eq(connection.to_string()))
            .filter(link_session::Column::RedirectUri.eq(redirect_uri))
            .filter(link_session::Column::Products.is_null())
            .filter(link_session::Column::Status.eq(LinkSessionStatus::Pending.as_str()))
            .filter(link_session::Column::ExpiresAt.gt(valid_until))
            .order_by_desc(link_session::Column::CreatedAt)
            .one(self.db())
            .await?
            .map(to_record)
            .transpose()
    }

    /// Marks a pending, unexpired session open by the browser holding
    /// `browser_hash`'s cookie. False when it was opened before, ended or expired.
    pub async fn open_link_session(
        &self,
        id: LinkSessionId,
        browser_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let opened = link_session::Entity::update_many()
            .col_expr(
                link_session::Column::Status,
                Expr::value(LinkSessionStatus::Open.as_str()),
            )
            .col_expr(link_session::Column::BrowserHash, Expr::value(browser_hash))
            .col_expr(link_session::Column::OpenedAt, Expr::value(now))
            .filter(link_session::Column::Id.eq(id.to_string()))
            .filter(link_session::Column::Status.eq(LinkSessionStatus::Pending.as_str()))
            .filter(link_session::Column::ExpiresAt.gt(now))
            .exec(self.db())
            .await?;
        Ok(opened.rows_affected == 1)
    }

    /// Records that the user went to `institution` to authorize `connection` with
    /// the state hashed as `attempt` (an earlier attempt can no longer end the
    /// session); the session then lasts at least until `until`, the
    /// authorization's own deadline. False unless the session is open and unexpired.
    pub async fn begin_link_authorization(
        &self,
        id: LinkSessionId,
        attempt: &str,
        institution: &str,
        connection: ConnectionId,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let Some(session) = self.link_session(id).await? else {
            return Ok(false);
        };
        let begun = link_session::Entity::update_many()
            .col_expr(link_session::Column::Attempt, Expr::value(attempt))
            .col_expr(
                link_session::Column::InstitutionId,
                Expr::value(institution),
            )
            .col_expr(
                link_session::Column::ConnectionId,
                Expr::value(connection.to_string()),
            )
            .col_expr(
                link_session::Column::Error,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                link_session::Column::ExpiresAt,
                Expr::value(session.expires_at.max(until)),
            )
            .filter(link_session::Column::Id.eq(id.to_string()))
            .filter(link_session::Column::Status.eq(LinkSessionStatus::Open.as_str()))
            .filter(link_session::Column::ExpiresAt.gt(now))
            .exec(self.db())
            .await?;
        Ok(begun.rows_affected == 1)
    }

    /// Notes what stopped `attempt` on an open session the user may still retry
    /// (unless a later attempt began meanwhile).
    pub async fn note_link_session_error(
        &self,
        id: LinkSessionId,
        attempt: &str,
        code: &str,
    ) -> Result<(), StoreError> {
        link_session::Entity::update_many()
            .col_expr(link_session::Column::Error, Expr::value(code))
            .filter(link_session::Column::Id.eq(id.to_string()))
            .filter(link_session::Column::Attempt.eq(attempt))
            .filter(link_session::Column::Status.eq(LinkSessionStatus::Open.as_str()))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Ends an open session with the success of `attempt`, its current
    /// authorization. False when the session ended meanwhile (the user left) or a
    /// later attempt began: the link must then not be kept.
    pub async fn finish_link_attempt(
        &self,
        id: LinkSessionId,
        attempt: &str,
        status: LinkSessionStatus,
        connection: ConnectionId,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let finished = link_session::Entity::update_many()
            .col_expr(link_session::Column::Status, Expr::value(status.as_str()))
            .col_expr(
                link_session::Column::Error,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                link_session::Column::ConnectionId,
                Expr::value(connection.to_string()),
            )
            .col_expr(link_session::Column::CompletedAt, Expr::value(now))
            .filter(link_session::Column::Id.eq(id.to_string()))
            .filter(link_session::Column::Attempt.eq(attempt))
            .filter(link_session::Column::Status.eq(LinkSessionStatus::Open.as_str()))
            .exec(self.db())
            .await?;
        Ok(finished.rows_affected == 1)
    }

    /// Ends a session that is still pending or open without a link (`denied`,
    /// `failed`, `expired`, with the code why). False when it had already ended:
    /// a session has one outcome.
    pub async fn finish_link_session(
        &self,
        id: LinkSessionId,
        status: LinkSessionStatus,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let finished = link_session::Entity::update_many()
            .col_expr(link_session::Column::Status, Expr::value(status.as_str()))
            .col_expr(link_session::Column::Error, Expr::value(error))
            .col_expr(link_session::Column::CompletedAt, Expr::value(now))
            .filter(link_session::Column::Id.eq(id.to_string()))
            .filter(link_session::Column::Status.is_in([
                LinkSessionStatus::Pending.as_str(),
                LinkSessionStatus::Open.as_str(),
            ]))
            .exec(self.db())
            .await?;
        Ok(finished.rows_affected == 1)
    }

    /// Takes back a session's success whose grant could not be kept: it ends
    /// `failed` with `code`.
    pub async fn unfinish_link_session(
        &self,
        id: LinkSessionId,
        code: &str,
    ) -> Result<(), StoreError> {
        link_session::Entity::update_many()
            .col_expr(
                link_session::Column::Status,
                Expr::value(LinkSessionStatus::Failed.as_str()),
            )
            .col_expr(link_session::Column::Error, Expr::value(code))
            .filter(link_session::Column::Id.eq(id.to_string()))
            .filter(link_session::Column::Status.is_in([
                LinkSessionStatus::Linked.as_str(),
                LinkSessionStatus::Repaired.as_str(),
            ]))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Deletes sessions that expired before `before`, in batches.
    pub async fn purge_link_sessions(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.delete_in_batches::<link_session::Entity>(
            link_session::Column::Id,
            Condition::all().add(link_session::Column::ExpiresAt.lt(before)),
        )
        .await
    }
}

fn to_record(row: link_session::Model) -> Result<LinkSessionRecord, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("link session {}: {what}", row.id));
    let connection = |id: &Option<String>, what: &str| {
        id.as_deref()
            .map(|id| id.parse::<ConnectionId>().map_err(|_| corrupt(what)))
            .transpose()
    };
    Ok(LinkSessionRecord {
        id: row.id.parse().map_err(|_| corrupt("id"))?,
        tenant_id: row.tenant_id.parse().map_err(|_| corrupt("tenant id"))?,
        user_id: UserId::parse(&row.user_id).map_err(|_| corrupt("user id"))?,
        products: match row.products.as_deref() {
            Some(text) => serde_json::from_str(text).map_err(|_| corrupt("products"))?,
            None => Vec::new(),
        },
        repair_connection_id: connection(&row.repair_connection_id, "repaired connection")?,
        connection_id: connection(&row.connection_id, "connection")?,
        status: row.status.parse().map_err(|_| corrupt("status"))?,
        institution_id: row.institution_id,
        redirect_uri: row.redirect_uri,
        sealed_token: row.sealed_token,
        browser_hash: row.browser_hash,
        attempt: row.attempt,
        error: row.error,
        created_at: row.created_at,
        expires_at: row.expires_at,
        opened_at: row.opened_at,
        completed_at: row.completed_at,
    })
}
