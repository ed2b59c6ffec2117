//! Corporate actions as stored: splits recorded against the instruments of the
//! securities master, once per instrument and day whichever connection saw them
//! first (an institution's split transaction and a detected jump of the same day
//! are one split).

use std::collections::BTreeMap;

use chrono::{NaiveDate, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};

use super::entities::corporate_action as row;
use super::{Store, StoreError};
use crate::domain::{ConnectionId, Split, SplitRatio, SplitSource};

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
    /// `connection`; one already recorded for the instrument and day is kept.
    pub async fn record_splits(
        &self,
        connection: ConnectionId,
        splits: &[(String, Split)],
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        for (instrument, split) in splits {
            let (Ok(new), Ok(old)) = (
                i32::try_from(split.ratio.new),
                i32::try_from(split.ratio.old),
            ) else {
                continue;
            };
            row::Entity::insert(row::ActiveModel {
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
        }
        Ok(())
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
