//! Exchange rates as stored: each provider's publications, one row per currency and
//! day, written again when a provider corrects one; and the latest of them, which
//! conversions read.

use chrono::{Days, NaiveDate, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use super::entities::fx_rate as row;
use super::{Store, StoreError};
use crate::domain::{Rate, RateTable};

/// A currency whose newest rate is this much older than the source's newest
/// publication is left out of conversions: the provider stopped publishing it.
const RATE_SHELF_LIFE_DAYS: u64 = 31;

impl Store {
    /// Stores `rates` (a correction replaces the rate of the same source, currency
    /// and day). Returns how many were written.
    pub async fn store_rates(&self, rates: &[Rate]) -> Result<usize, StoreError> {
        let now = Utc::now();
        // Batches keep each statement well under SQLite's bound-parameter limit.
        for batch in rates.chunks(500) {
            let rows = batch.iter().map(|r| row::ActiveModel {
                source: sea_orm::Set(r.source.clone()),
                quote: sea_orm::Set(r.quote.to_string()),
                date: sea_orm::Set(r.date),
                base: sea_orm::Set(r.base.to_string()),
                rate: sea_orm::Set(r.rate.to_string()),
                fetched_at: sea_orm::Set(now),
            });
            row::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::columns([
                        row::Column::Source,
                        row::Column::Quote,
                        row::Column::Date,
                    ])
                    .update_columns([row::Column::Base, row::Column::Rate, row::Column::FetchedAt])
                    .to_owned(),
                )
                .exec_without_returning(self.db())
                .await?;
        }
        Ok(rates.len())
    }

    /// The newest rate of each currency `source` published, within a month of its
    /// newest publication; `None` before its first.
    pub async fn latest_rates(&self, source: &str) -> Result<Option<RateTable>, StoreError> {
        let newest: Option<NaiveDate> = row::Entity::find()
            .select_only()
            .column_as(row::Column::Date.max(), "newest")
            .filter(row::Column::Source.eq(source))
            .into_tuple::<Option<NaiveDate>>()
            .one(self.db())
            .await?
            .flatten();
        let Some(newest) = newest else {
            return Ok(None);
        };
        let since = newest
            .checked_sub_days(Days::new(RATE_SHELF_LIFE_DAYS))
            .unwrap_or(NaiveDate::MIN);
        let rows = row::Entity::find()
            .filter(row::Column::Source.eq(source))
            .filter(row::Column::Date.gte(since))
            .all(self.db())
            .await?;
        let rates = rows
            .into_iter()
            .map(|r| {
                let corrupt = |what: &str| {
                    StoreError::Corrupt(format!(
                        "fx rate {} {} {}: {what}",
                        r.source, r.quote, r.date
                    ))
                };
                Ok(Rate {
                    base: r.base.parse().map_err(|_| corrupt("base"))?,
                    quote: r.quote.parse().map_err(|_| corrupt("quote"))?,
                    rate: r.rate.parse().map_err(|_| corrupt("rate"))?,
                    date: r.date,
                    source: r.source,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(RateTable::latest(rates))
    }
}
