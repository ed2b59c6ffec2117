//! Institutions: one row per served connector file, recording which version of the
//! file (its fingerprint) is in service.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, EntityTrait, Set};

use super::entities::institution;
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
