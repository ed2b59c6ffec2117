//! Institutions and their connector files: one row per served institution, recording
//! which version of its file (its fingerprint) is in service, and every version of
//! every file ever published.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};

use super::audit::AuditEntry;
use super::entities::{connector_version, institution};
use super::{Store, StoreError};
use crate::domain::Institution;

impl Store {
    pub async fn upsert_institution(&self, institution: &Institution) -> Result<(), StoreError> {
        let row = institution::ActiveModel {
            id: Set(institution.id.clone()),
            name: Set(institution.name.clone()),
            country: Set(institution.country.clone()),
            connector_hash: Set(institution.connector_hash.clone()),
            updated_at: Set(Utc::now()),
        };
        let find = || institution::Entity::find_by_id(institution.id.clone()).one(self.db());
        match find().await? {
            Some(existing) if existing.connector_hash == institution.connector_hash => Ok(()),
            Some(_) => row.update(self.db()).await.map(|_| ()).map_err(Into::into),
            // Another process may insert the same row at the same moment; either wins.
            None => match row.insert(self.db()).await {
                Ok(_) => Ok(()),
                Err(_) if find().await?.is_some() => Ok(()),
                Err(e) => Err(e.into()),
            },
        }
    }
}

/// Where a connector version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSource {
    /// A file in the connectors directory, added or changed.
    File,
    /// `PUT /admin/connectors/{id}`.
    Api,
}

impl VersionSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Api => "api",
        }
    }
}

/// One stored version of a connector file.
pub type ConnectorVersion = connector_version::Model;

/// What publishing a connector text did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// A new version, now the latest.
    New(ConnectorVersion),
    /// Nothing: the same text is already what its source last published.
    Unchanged(ConnectorVersion),
}

/// Attempts at taking the next version number when other processes publish too.
const PUBLISH_ATTEMPTS: usize = 5;

impl Store {
    /// Records `content` as the next version of connector `id`, unless it is what
    /// `source` last published: a file left as it was must not undo an API change
    /// when a process restarts, and a repeated PUT adds nothing.
    pub async fn publish_connector(
        &self,
        id: &str,
        content: &str,
        hash: &str,
        source: VersionSource,
        actor: &str,
        audit: AuditEntry,
    ) -> Result<Published, StoreError> {
        let audit = audit.target(format!("connector:{id}"));
        for _ in 0..PUBLISH_ATTEMPTS {
            let versions = connector_version::Entity::find()
                .filter(connector_version::Column::ConnectorId.eq(id))
                .order_by_desc(connector_version::Column::Version)
                .all(self.db())
                .await?;
            let last_from_source = match source {
                VersionSource::File => versions.iter().find(|v| v.source == source.as_str()),
                VersionSource::Api => versions.first(),
            };
            if let Some(same) = last_from_source.filter(|v| v.hash == hash) {
                // Someone asked to publish it (a file unchanged since the last start
                // is nobody's act).
                if source == VersionSource::Api {
                    let detail = serde_json::json!({ "version": same.version, "unchanged": true });
                    self.record(audit.detail(detail)).await?;
                }
                return Ok(Published::Unchanged(same.clone()));
            }
            let version = versions.first().map_or(1, |v| v.version + 1);
            let row = connector_version::ActiveModel {
                connector_id: Set(id.to_owned()),
                version: Set(version),
                content: Set(content.to_owned()),
                hash: Set(hash.to_owned()),
                source: Set(source.as_str().to_owned()),
                actor: Set(actor.to_owned()),
                created_at: Set(Utc::now()),
            };
            let txn = self.begin_write().await?;
            // A primary-key clash means another process took the number: look again.
            if let Ok(inserted) = row.insert(&txn).await {
                let detail = serde_json::json!({ "version": version, "hash": hash });
                super::audit::append(&txn, audit.clone().detail(detail)).await?;
                txn.commit().await?;
                return Ok(Published::New(inserted));
            }
        }
        Err(StoreError::Conflict(format!(
            "could not take a version number for connector `{id}`"
        )))
    }

    /// The latest version number of every connector: one small query, cheap to poll.
    pub async fn latest_connector_versions(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(connector_version::Entity::find()
            .select_only()
            .column(connector_version::Column::ConnectorId)
            .column_as(connector_version::Column::Version.max(), "version")
            .group_by(connector_version::Column::ConnectorId)
            .into_tuple()
            .all(self.db())
            .await?)
    }

    /// One stored version of a connector.
    pub async fn connector_version(
        &self,
        id: &str,
        version: i64,
    ) -> Result<ConnectorVersion, StoreError> {
        connector_version::Entity::find_by_id((id.to_owned(), version))
            .one(self.db())
            .await?
            .ok_or(StoreError::NotFound("connector version"))
    }

    /// Every version of one connector, newest first.
    pub async fn connector_versions(&self, id: &str) -> Result<Vec<ConnectorVersion>, StoreError> {
        Ok(connector_version::Entity::find()
            .filter(connector_version::Column::ConnectorId.eq(id))
            .order_by_desc(connector_version::Column::Version)
            .all(self.db())
            .await?)
    }
}

/// How an institution's connections are doing, for admins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstitutionHealth {
    pub connections: u64,
    /// Connections by status (`active`, `reauth_required`, …).
    pub by_status: std::collections::BTreeMap<String, u64>,
    /// Connections whose last sync failed (a failure after the last success).
    pub failing: u64,
    pub last_synced_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
}

impl Store {
    pub async fn institution_health(&self, id: &str) -> Result<InstitutionHealth, StoreError> {
        use super::entities::connection;
        type Row = (String, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
        let rows: Vec<Row> = connection::Entity::find()
            .select_only()
            .column(connection::Column::Status)
            .column(connection::Column::LastSyncedAt)
            .column(connection::Column::LastFailureAt)
            .filter(connection::Column::InstitutionId.eq(id))
            .into_tuple()
            .all(self.db())
            .await?;
        let mut health = InstitutionHealth::default();
        for (status, synced, failed) in rows {
            health.connections += 1;
            *health.by_status.entry(status).or_default() += 1;
            if failed.is_some() && failed > synced {
                health.failing += 1;
            }
            health.last_synced_at = health.last_synced_at.max(synced);
            health.last_failure_at = health.last_failure_at.max(failed);
        }
        Ok(health)
    }
}
