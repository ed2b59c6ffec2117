//! Corporate actions as stored: splits recorded against the instruments of the
//! securities master, once whichever connection saw them first: a split of the
//! same ratio within a week of one recorded is the same split (a jump is detected
//! on the day a sync sees it, not the day it took effect). And who holds an
//! instrument, so that their cached views can show a split another connection
//! recorded.

use std::collections::BTreeMap;

use chrono::{Days, NaiveDate, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, TryInsertResult,
};

use super::entities::{connection, corporate_action as row, security};
use super::{Store, StoreError};
use crate::domain::{ConnectionId, Split, SplitRatio, SplitSource, TenantId, UserId};

/// Splits of the same ratio this close together are one.
const SAME_SPLIT_DAYS: u64 = 7;

/// A split of an instrument, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedSplit {
    pub instrument_id: String,
    pub ratio: SplitRatio,
    pub date: NaiveDate,
    pub source: SplitSource,
}

const SPLIT: &str = "split";

impl Store {
    /// Records `splits` (each with the instrument its security matched) seen by
    /// `connection`; one already recorded (the same ratio within a week) is
    /// kept. Returns the instruments that gained a split.
    pub async fn record_splits(
        &self,
        connection: ConnectionId,
        splits: &[(String, Split)],
    ) -> Result<Vec<String>, StoreError> {
        let now = Utc::now();
        let mut gained = Vec::new();
        for (instrument, split) in splits {
            let (Ok(new), Ok(old)) = (
                i32::try_from(split.ratio.new),
                i32::try_from(split.ratio.old),
            ) else {
                continue;
            };
            let near = |days: u64, later: bool| {
                if later {
                    split.date.checked_add_days(Days::new(days))
                } else {
                    split.date.checked_sub_days(Days::new(days))
                }
            };
            let (Some(from), Some(to)) =
                (near(SAME_SPLIT_DAYS, false), near(SAME_SPLIT_DAYS, true))
            else {
                continue;
            };
            let known = row::Entity::find()
                .filter(row::Column::InstrumentId.eq(instrument))
                .filter(row::Column::Kind.eq(SPLIT))
                .filter(row::Column::RatioNew.eq(new))
                .filter(row::Column::RatioOld.eq(old))
                .filter(row::Column::EffectiveDate.between(from, to))
                .one(self.db())
                .await?;
            if known.is_some() {
                continue;
            }
            let inserted = row::Entity::insert(row::ActiveModel {
                id: Set(uuid::Uuid::new_v4().to_string()),
                instrument_id: Set(instrument.clone()),
                kind: Set(SPLIT.to_owned()),
                ratio_new: Set(new),
                ratio_old: Set(old),
                effective_date: Set(split.date),
                source: Set(split.source.as_str().to_owned()),
                connection_id: Set(connection.to_string()),
                recorded_at: Set(now),
            })
            .on_conflict(
                OnConflict::columns([
                    row::Column::InstrumentId,
                    row::Column::Kind,
                    row::Column::EffectiveDate,
                ])
                .do_nothing()
                .to_owned(),
            )
            .try_insert()
            .exec(self.db())
            .await?;
            if matches!(inserted, TryInsertResult::Inserted(_)) {
                gained.push(instrument.clone());
            }
        }
        Ok(gained)
    }

    /// The users holding any of `instruments`, through any connection.
    pub async fn holders(
        &self,
        instruments: &[String],
    ) -> Result<Vec<(TenantId, UserId)>, StoreError> {
        if instruments.is_empty() {
            return Ok(Vec::new());
        }
        let connections: Vec<String> = security::Entity::find()
            .select_only()
            .column(security::Column::ConnectionId)
            .distinct()
            .filter(security::Column::InstrumentId.is_in(instruments.iter().cloned()))
            .into_tuple::<String>()
            .all(self.db())
            .await?;
        let mut holders = Vec::new();
        for chunk in connections.chunks(500) {
            let rows: Vec<(String, String)> = connection::Entity::find()
                .select_only()
                .column(connection::Column::TenantId)
                .column(connection::Column::UserId)
                .distinct()
                .filter(connection::Column::Id.is_in(chunk.iter().cloned()))
                .into_tuple()
                .all(self.db())
                .await?;
            for (tenant, user) in rows {
                let corrupt = || StoreError::Corrupt(format!("connection of user {user}"));
                holders.push((
                    tenant.parse().map_err(|_| corrupt())?,
                    UserId::parse(&user).map_err(|_| corrupt())?,
                ));
            }
        }
        holders.sort();
        holders.dedup();
        Ok(holders)
    }

    /// The splits of `instruments`, oldest first, by instrument.
    pub async fn splits(
        &self,
        instruments: &[String],
    ) -> Result<BTreeMap<String, Vec<RecordedSplit>>, StoreError> {
        let mut out: BTreeMap<String, Vec<RecordedSplit>> = BTreeMap::new();
        if instruments.is_empty() {
            return Ok(out);
        }
        for chunk in instruments.chunks(500) {
            let rows = row::Entity::find()
                .filter(row::Column::Kind.eq(SPLIT))
                .filter(row::Column::InstrumentId.is_in(chunk.iter().cloned()))
                .order_by_asc(row::Column::EffectiveDate)
                .all(self.db())
                .await?;
            for r in rows {
                let corrupt = || StoreError::Corrupt(format!("corporate action {}", r.id));
                let ratio = SplitRatio {
                    new: u32::try_from(r.ratio_new).map_err(|_| corrupt())?,
                    old: u32::try_from(r.ratio_old).map_err(|_| corrupt())?,
                };
                if ratio.old == 0 || ratio.new == 0 {
                    return Err(corrupt());
                }
                let source = match r.source.as_str() {
                    "institution" => SplitSource::Institution,
                    "detected" => SplitSource::Detected,
                    _ => return Err(corrupt()),
                };
                out.entry(r.instrument_id.clone())
                    .or_default()
                    .push(RecordedSplit {
                        instrument_id: r.instrument_id,
                        ratio,
                        date: r.effective_date,
                        source,
                    });
            }
        }
        Ok(out)
    }
}
