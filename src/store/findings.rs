//! Data-quality findings as stored: each run's reconciliation replaces the findings
//! of the parts of accounts it checked, keeps the rest, and moves the records
//! version when anything changed so that cached views show it.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};

use super::entities::{account, connection, data_quality_finding as row};
use super::records::records_changed;
use super::{Store, StoreError};
use crate::domain::{ConnectionId, FindingCode, FindingScope, Reconciliation};

/// One open finding, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFinding {
    pub connection_id: String,
    pub account_id: String,
    pub code: FindingCode,
    pub scope: FindingScope,
    pub subject: String,
    pub detail: String,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

/// A finding with the institution of its connection, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedFinding {
    pub institution_id: String,
    pub finding: StoredFinding,
}

fn from_row(r: row::Model) -> Result<StoredFinding, StoreError> {
    let corrupt =
        |what: &str| StoreError::Corrupt(format!("data-quality finding {}: {what}", r.id));
    Ok(StoredFinding {
        code: r.code.parse().map_err(|_| corrupt("code"))?,
        scope: r.scope.parse().map_err(|_| corrupt("scope"))?,
        connection_id: r.connection_id,
        account_id: r.account_external_id,
        subject: r.subject,
        detail: r.detail,
        first_seen_at: r.first_seen_at,
        last_seen_at: r.last_seen_at,
    })
}

impl Store {
    /// Records what run `run` of `connection` found: a finding seen again keeps
    /// when it was first seen; one in a part the run checked and no longer found
    /// is resolved (deleted), as is any about an account no longer stored.
    pub async fn record_findings(
        &self,
        connection: ConnectionId,
        run: &str,
        found: &Reconciliation,
    ) -> Result<(), StoreError> {
        let conn = connection.to_string();
        let now = Utc::now();
        let db = self.db();
        let stored: HashMap<(String, String), row::Model> = row::Entity::find()
            .filter(row::Column::ConnectionId.eq(&conn))
            .all(db)
            .await?
            .into_iter()
            .map(|r| ((r.code.clone(), r.subject.clone()), r))
            .collect();
        // Clean data on a clean record: nothing more to read or write.
        if stored.is_empty() && found.findings.is_empty() {
            return Ok(());
        }
        let accounts: BTreeSet<String> = account::Entity::find()
            .select_only()
            .column(account::Column::ExternalId)
            .filter(account::Column::ConnectionId.eq(&conn))
            .into_tuple::<String>()
            .all(db)
            .await?
            .into_iter()
            .collect();
        let fresh: HashMap<(String, String), _> = found
            .findings
            .iter()
            .map(|f| ((f.code.as_str().to_owned(), f.subject.clone()), f))
            .collect();
        let resolved: Vec<&row::Model> = stored
            .iter()
            .filter(|(key, r)| {
                !fresh.contains_key(key)
                    && (!accounts.contains(&r.account_external_id)
                        || r.scope.parse().is_ok_and(|scope: FindingScope| {
                            found
                                .checked
                                .contains(&(r.account_external_id.clone(), scope))
                        }))
            })
            .map(|(_, r)| r)
            .collect();
        if fresh.is_empty() && resolved.is_empty() {
            return Ok(());
        }

        let txn = self.begin_write().await?;
        // First, as in every write of the connection's records: a disconnect
        // meanwhile stops here, and cached views see when findings were last seen.
        records_changed(&txn, &conn, true).await?;
        for r in resolved {
            row::Entity::delete_by_id(r.id.clone()).exec(&txn).await?;
        }
        for (key, f) in &fresh {
            match stored.get(key) {
                Some(r) => {
                    let mut update: row::ActiveModel = r.clone().into();
                    update.account_external_id = Set(f.account.clone());
                    update.scope = Set(f.scope.as_str().to_owned());
                    update.detail = Set(f.detail.clone());
                    update.last_run_id = Set(run.to_owned());
                    update.last_seen_at = Set(now);
                    update.update(&txn).await?;
                }
                None => {
                    row::ActiveModel {
                        id: Set(uuid::Uuid::new_v4().to_string()),
                        connection_id: Set(conn.clone()),
                        account_external_id: Set(f.account.clone()),
                        scope: Set(f.scope.as_str().to_owned()),
                        code: Set(f.code.as_str().to_owned()),
                        subject: Set(f.subject.clone()),
                        detail: Set(f.detail.clone()),
                        first_run_id: Set(run.to_owned()),
                        last_run_id: Set(run.to_owned()),
                        first_seen_at: Set(now),
                        last_seen_at: Set(now),
                    }
                    .insert(&txn)
                    .await?;
                }
            }
        }
        txn.commit().await?;
        Ok(())
    }

    /// The open findings of `connection`, by account, code and record.
    pub async fn findings(
        &self,
        connection: ConnectionId,
    ) -> Result<Vec<StoredFinding>, StoreError> {
        row::Entity::find()
            .filter(row::Column::ConnectionId.eq(connection.to_string()))
            .order_by_asc(row::Column::AccountExternalId)
            .order_by_asc(row::Column::Code)
            .order_by_asc(row::Column::Subject)
            .all(self.db())
            .await?
            .into_iter()
            .map(from_row)
            .collect()
    }

    /// Every open finding, of one institution's connections or of all, with the
    /// institution, ordered by institution, connection, account, code and record.
    pub async fn findings_report(
        &self,
        institution: Option<&str>,
    ) -> Result<Vec<ReportedFinding>, StoreError> {
        let mut connections = connection::Entity::find()
            .select_only()
            .column(connection::Column::Id)
            .column(connection::Column::InstitutionId);
        if let Some(institution) = institution {
            connections = connections.filter(connection::Column::InstitutionId.eq(institution));
        }
        let institutions: HashMap<String, String> = connections
            .into_tuple::<(String, String)>()
            .all(self.db())
            .await?
            .into_iter()
            .collect();
        let mut report = Vec::new();
        // Findings are few (one per record that does not add up); read them whole.
        for r in row::Entity::find().all(self.db()).await? {
            let Some(institution_id) = institutions.get(&r.connection_id).cloned() else {
                continue;
            };
            report.push(ReportedFinding {
                institution_id,
                finding: from_row(r)?,
            });
        }
        report.sort_by(|a, b| {
            (
                &a.institution_id,
                &a.finding.connection_id,
                &a.finding.account_id,
            )
                .cmp(&(
                    &b.institution_id,
                    &b.finding.connection_id,
                    &b.finding.account_id,
                ))
                .then_with(|| a.finding.code.as_str().cmp(b.finding.code.as_str()))
                .then_with(|| a.finding.subject.cmp(&b.finding.subject))
        });
        Ok(report)
    }
}
