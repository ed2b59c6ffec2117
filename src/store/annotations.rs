//! What users attach to synced transactions: tags and a note. Institutions never
//! send them, so syncs never write them; when a pending transaction posts, the
//! posted one inherits them in the database transaction that deletes the pending
//! one, and a transaction moved to another account keeps them
//! (`records::apply`). A transaction is found by the institution's id among a
//! tenant's connections, as the read API shows it.

use sea_orm::sea_query::{Condition, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, Set,
};

use super::entities::{connection, transaction};
use super::records::{records_changed, transaction_from_row};
use super::{Store, StoreError};
use crate::domain::{ConnectionId, TenantId, Transaction};

/// A transaction's tags (each once, in the order given) and note.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    pub tags: Vec<String>,
    pub note: Option<String>,
}

impl Annotations {
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.note.is_none()
    }

    /// Ours first, then what `other` adds: its new tags, and its note after ours
    /// when both have a different one. Nothing a user wrote is dropped.
    fn merged(mut self, other: Self) -> Self {
        for tag in other.tags {
            if !self.tags.contains(&tag) {
                self.tags.push(tag);
            }
        }
        self.note = match (self.note, other.note) {
            (Some(ours), Some(theirs)) if ours != theirs => Some(format!("{ours}\n\n{theirs}")),
            (ours, theirs) => ours.or(theirs),
        };
        self
    }
}

/// A change to a transaction's annotations; `None` leaves that part as it is.
#[derive(Debug, Clone, Default)]
pub struct AnnotationChange {
    pub tags: Option<Vec<String>>,
    /// `Some(None)` clears the note.
    pub note: Option<Option<String>>,
}

/// A stored transaction with what the user attached to it.
#[derive(Debug, Clone)]
pub struct AnnotatedTransaction {
    pub connection: ConnectionId,
    pub transaction: Transaction,
    pub annotations: Annotations,
}

pub(super) fn annotations_from_row(r: &transaction::Model) -> Result<Annotations, StoreError> {
    let tags = serde_json::from_str(&r.tags)
        .map_err(|_| StoreError::Corrupt(format!("transaction {}: tags", r.id)))?;
    Ok(Annotations {
        tags,
        note: r.note.clone(),
    })
}

pub(super) async fn write_annotations<C: ConnectionTrait>(
    db: &C,
    row_id: String,
    annotations: &Annotations,
) -> Result<transaction::Model, StoreError> {
    let tags =
        serde_json::to_string(&annotations.tags).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(transaction::ActiveModel {
        id: Set(row_id),
        tags: Set(tags),
        note: Set(annotations.note.clone()),
        ..Default::default()
    }
    .update(db)
    .await?)
}

/// Before a stored transaction is deleted: the posted transaction of the same
/// connection that names it as its pending one takes its annotations.
///
/// Both rows are read again under a row lock (PostgreSQL; SQLite writers take
/// turns anyway), so a `PATCH` committed since the sync read them is carried, and
/// one still running waits and then finds the pending transaction gone.
pub(super) async fn carry_to_posted<C: ConnectionTrait>(
    db: &C,
    gone: &transaction::Model,
) -> Result<(), StoreError> {
    let Some(gone) = transaction::Entity::find_by_id(gone.id.clone())
        .lock_exclusive()
        .one(db)
        .await?
    else {
        return Ok(());
    };
    let annotations = annotations_from_row(&gone)?;
    if annotations.is_empty() {
        return Ok(());
    }
    let Some(posted) = transaction::Entity::find()
        .filter(transaction::Column::ConnectionId.eq(&gone.connection_id))
        .filter(transaction::Column::PendingExternalId.eq(&gone.external_id))
        .lock_exclusive()
        .one(db)
        .await?
    else {
        // Cancelled rather than posted: the annotations go with it.
        return Ok(());
    };
    let merged = annotations_from_row(&posted)?.merged(annotations);
    write_annotations(db, posted.id, &merged).await?;
    Ok(())
}

impl Store {
    /// Changes the annotations of the tenant's transaction `external_id` (within
    /// `connection` when given). The transaction's records version moves, so a
    /// portfolio view built before this is rebuilt (see `portfolio::refresh`).
    ///
    /// `NotFound` when the tenant has no such transaction; `Conflict` when several
    /// of its connections have one with that id and none was named.
    pub async fn annotate_transaction(
        &self,
        tenant: TenantId,
        external_id: &str,
        connection: Option<ConnectionId>,
        change: AnnotationChange,
    ) -> Result<AnnotatedTransaction, StoreError> {
        let txn = self.begin_write().await?;
        let tenant_connections = Query::select()
            .column(connection::Column::Id)
            .from(connection::Entity)
            .and_where(connection::Column::TenantId.eq(tenant.to_string()))
            .to_owned();
        let mut scope = Condition::all()
            .add(transaction::Column::ExternalId.eq(external_id))
            .add(transaction::Column::ConnectionId.in_subquery(tenant_connections));
        if let Some(connection) = connection {
            scope = scope.add(transaction::Column::ConnectionId.eq(connection.to_string()));
        }
        let mut found = transaction::Entity::find().filter(scope).all(&txn).await?;
        let found = match found.len() {
            0 => return Err(StoreError::NotFound("transaction")),
            1 => found.remove(0),
            n => {
                return Err(StoreError::Conflict(format!(
                    "{n} connections have a transaction `{external_id}`; name one with `connection_id`"
                )));
            }
        };
        // The connection first, as every writer of records takes it, so that a
        // view built before this is rebuilt (see `portfolio::refresh`). Then the
        // row, locked, so a sync deleting it or carrying its annotations waits.
        records_changed(&txn, &found.connection_id, false).await?;
        let row = transaction::Entity::find_by_id(found.id)
            .lock_exclusive()
            .one(&txn)
            .await?
            .ok_or(StoreError::NotFound("transaction"))?;
        let mut annotations = annotations_from_row(&row)?;
        if let Some(tags) = change.tags {
            annotations.tags = tags;
        }
        if let Some(note) = change.note {
            annotations.note = note;
        }
        let row = write_annotations(&txn, row.id, &annotations).await?;
        txn.commit().await?;
        Ok(AnnotatedTransaction {
            connection: row.connection_id.parse().map_err(|_| {
                StoreError::Corrupt(format!("transaction {}: connection id", row.id))
            })?,
            transaction: transaction_from_row(&row)?,
            annotations,
        })
    }
}
