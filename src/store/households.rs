//! Households as stored: a tenant's named groups of its users. A user belongs to at
//! most one household of their tenant; setting a household's name and members
//! replaces both in one transaction, so a failed change leaves nothing half done.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, SqlErr,
};

use super::entities::{household, household_member as member};
use super::{Store, StoreError};
use crate::domain::{HouseholdId, TenantId, UserId};

/// One household, with its members in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Household {
    pub id: HouseholdId,
    pub name: String,
    pub members: Vec<UserId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Why a household could not be written.
#[derive(Debug, thiserror::Error)]
pub enum HouseholdError {
    #[error("user `{user}` already belongs to household `{household}`")]
    MemberElsewhere { user: UserId, household: String },
    #[error("the household or a member changed at the same moment; try again")]
    Concurrent,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sea_orm::DbErr> for HouseholdError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::Store(e.into())
    }
}

/// A unique key another request took meanwhile (the same household created, or
/// a member put in another) is a conflict to retry, not a failure.
fn concurrent(e: sea_orm::DbErr) -> HouseholdError {
    match e.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => HouseholdError::Concurrent,
        _ => e.into(),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("household {what}"))
}

fn assemble(row: household::Model, members: Vec<member::Model>) -> Result<Household, StoreError> {
    let mut members = members
        .into_iter()
        .map(|m| UserId::parse(&m.user_id).map_err(|_| corrupt("member id")))
        .collect::<Result<Vec<_>, _>>()?;
    members.sort();
    Ok(Household {
        id: HouseholdId::parse(&row.id).map_err(|_| corrupt("id"))?,
        name: row.name,
        members,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

impl Store {
    /// Creates household `id` of `tenant`, or replaces its name and members.
    /// Returns it as stored and whether it was created. A member of another
    /// household of the tenant is refused, and nothing changes.
    pub async fn put_household(
        &self,
        tenant: TenantId,
        id: &HouseholdId,
        name: &str,
        members: &[UserId],
    ) -> Result<(Household, bool), HouseholdError> {
        let tenant = tenant.to_string();
        let now = Utc::now();
        let txn = self.begin_write().await?;
        let elsewhere = member::Entity::find()
            .filter(member::Column::TenantId.eq(&tenant))
            .filter(member::Column::UserId.is_in(members.iter().map(UserId::as_str)))
            .filter(member::Column::HouseholdId.ne(id.as_str()))
            .one(&txn)
            .await?;
        if let Some(m) = elsewhere {
            return Err(HouseholdError::MemberElsewhere {
                user: UserId::parse(&m.user_id).map_err(|_| corrupt("member id"))?,
                household: m.household_id,
            });
        }
        let existing = household::Entity::find_by_id((tenant.clone(), id.to_string()))
            .one(&txn)
            .await?;
        let created = existing.is_none();
        let row = match existing {
            Some(row) => {
                let mut active: household::ActiveModel = row.into();
                active.name = Set(name.to_owned());
                active.updated_at = Set(now);
                active.update(&txn).await?
            }
            None => household::ActiveModel {
                tenant_id: Set(tenant.clone()),
                id: Set(id.to_string()),
                name: Set(name.to_owned()),
                created_at: Set(now),
                updated_at: Set(now),
            }
            .insert(&txn)
            .await
            .map_err(concurrent)?,
        };
        member::Entity::delete_many()
            .filter(member::Column::TenantId.eq(&tenant))
            .filter(member::Column::HouseholdId.eq(id.as_str()))
            .exec(&txn)
            .await?;
        if !members.is_empty() {
            member::Entity::insert_many(members.iter().map(|user| member::ActiveModel {
                tenant_id: Set(tenant.clone()),
                user_id: Set(user.to_string()),
                household_id: Set(id.to_string()),
            }))
            .exec_without_returning(&txn)
            .await
            .map_err(concurrent)?;
        }
        txn.commit().await?;
        let members = members
            .iter()
            .map(|user| member::Model {
                tenant_id: tenant.clone(),
                user_id: user.to_string(),
                household_id: id.to_string(),
            })
            .collect();
        Ok((assemble(row, members)?, created))
    }

    /// Household `id` of `tenant`, if there is one.
    pub async fn household(
        &self,
        tenant: TenantId,
        id: &HouseholdId,
    ) -> Result<Option<Household>, StoreError> {
        let tenant = tenant.to_string();
        // The row and its members as of one moment, not a rename from before a
        // concurrent replacement with the members from after it.
        let txn = self.begin_snapshot().await?;
        let Some(row) = household::Entity::find_by_id((tenant.clone(), id.to_string()))
            .one(&txn)
            .await?
        else {
            return Ok(None);
        };
        let members = member::Entity::find()
            .filter(member::Column::TenantId.eq(&tenant))
            .filter(member::Column::HouseholdId.eq(id.as_str()))
            .all(&txn)
            .await?;
        txn.commit().await?;
        assemble(row, members).map(Some)
    }

    /// Up to `limit` households of `tenant` in order of id, after `after` if given.
    pub async fn households(
        &self,
        tenant: TenantId,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<Household>, StoreError> {
        let tenant = tenant.to_string();
        let txn = self.begin_snapshot().await?;
        let mut rows = household::Entity::find().filter(household::Column::TenantId.eq(&tenant));
        if let Some(after) = after {
            rows = rows.filter(household::Column::Id.gt(after));
        }
        let rows = rows
            .order_by_asc(household::Column::Id)
            .limit(limit)
            .all(&txn)
            .await?;
        let mut members: BTreeMap<String, Vec<member::Model>> = BTreeMap::new();
        if !rows.is_empty() {
            for m in member::Entity::find()
                .filter(member::Column::TenantId.eq(&tenant))
                .filter(member::Column::HouseholdId.is_in(rows.iter().map(|r| r.id.clone())))
                .all(&txn)
                .await?
            {
                members.entry(m.household_id.clone()).or_default().push(m);
            }
        }
        txn.commit().await?;
        rows.into_iter()
            .map(|row| {
                let of = members.remove(&row.id).unwrap_or_default();
                assemble(row, of)
            })
            .collect()
    }

    /// Deletes household `id` of `tenant` (its users and their data stay).
    /// Returns whether there was one.
    pub async fn delete_household(
        &self,
        tenant: TenantId,
        id: &HouseholdId,
    ) -> Result<bool, StoreError> {
        let tenant = tenant.to_string();
        let txn = self.begin_write().await?;
        member::Entity::delete_many()
            .filter(member::Column::TenantId.eq(&tenant))
            .filter(member::Column::HouseholdId.eq(id.as_str()))
            .exec(&txn)
            .await?;
        let deleted = household::Entity::delete_by_id((tenant, id.to_string()))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(deleted.rows_affected > 0)
    }
}
