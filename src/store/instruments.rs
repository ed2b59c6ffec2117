//! The securities master: matching a connection's security to its one instrument
//! across connections and tenants, inside the transaction that writes the
//! security. Strong identifiers decide, strongest first (FIGI, ISIN, CUSIP, SEDOL),
//! and only valid ones (`domain::Identifiers`); a security with none is matched by
//! ticker and currency, flagged weak, unless an identifier it sent failed its check;
//! one without a ticker either matches nothing.
//! An instrument gains identifiers it lacked from later institutions; where an
//! institution's valid identifier disagrees with the instrument it matched, the
//! disagreement is recorded in `instrument_conflicts`, never resolved silently.
//! Rows stored before the master existed are matched by [`Store::match_unmatched`].

use std::collections::{BTreeSet, HashMap};

use chrono::Utc;
use sea_orm::sea_query::{Condition, Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, SqlErr, TransactionSession, TransactionTrait,
};

use super::entities::{instrument, instrument_conflict, security};
use super::{Store, StoreError};
use crate::domain::{ConnectionId, Identifier, IdentifierIssue, Identifiers, Security};

/// How a security was matched to its instrument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub instrument_id: Option<String>,
    /// `figi`, `isin`, `cusip`, `sedol`, `ticker` (weak) or `none`.
    pub matched_by: String,
    /// JSON list of the identifiers that failed their check, if any did.
    pub identifier_issues: Option<String>,
}

impl Matched {
    /// The match a stored row already has, if what it was matched on (identifiers,
    /// ticker, currency) is what `sec` says now: a price move needs no new match.
    pub(super) fn kept(row: &security::Model, sec: &Security) -> Option<Self> {
        let same = row.figi == sec.figi
            && row.isin == sec.isin
            && row.cusip == sec.cusip
            && row.sedol == sec.sedol
            && row.ticker == sec.ticker
            && row.currency == sec.currency.to_string();
        Some(Self {
            instrument_id: row.instrument_id.clone(),
            matched_by: row.matched_by.clone().filter(|_| same)?,
            identifier_issues: row.identifier_issues.clone(),
        })
    }
}

/// An instrument of the securities master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instrument {
    pub id: String,
    pub name: String,
    pub security_type: String,
    pub currency: String,
    pub ticker: Option<String>,
    pub figi: Option<String>,
    pub isin: Option<String>,
    pub cusip: Option<String>,
    pub sedol: Option<String>,
    /// Known by ticker and currency only.
    pub weak: bool,
}

impl From<instrument::Model> for Instrument {
    fn from(m: instrument::Model) -> Self {
        Self {
            weak: m.weak_key.is_some(),
            id: m.id,
            name: m.name,
            security_type: m.security_type,
            currency: m.currency,
            ticker: m.ticker,
            figi: m.figi,
            isin: m.isin,
            cusip: m.cusip,
            sedol: m.sedol,
        }
    }
}

/// How one of a connection's securities stands in the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityMatch {
    pub instrument: Option<Instrument>,
    /// `figi`, `isin`, `cusip`, `sedol`, `ticker` (weak) or `none`; none until matched.
    pub matched_by: Option<String>,
    pub issues: Vec<IdentifierIssue>,
}

/// An institution's identifier that disagrees with the instrument its security
/// matched, for an operator to look into.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct InstrumentConflict {
    /// The connection's security (finsync's row id).
    pub security_id: String,
    pub connection_id: String,
    /// `figi`, `isin`, `cusip` or `sedol`.
    pub identifier: String,
    pub instrument_id: String,
    pub instrument_name: String,
    /// What the instrument holds for it (none: it holds none, and another
    /// instrument holds the institution's value).
    pub instrument_value: Option<String>,
    /// What the institution sent.
    pub institution_value: String,
    /// The other instrument holding the institution's value, if one does.
    pub held_by: Option<String>,
    pub detected_at: chrono::DateTime<Utc>,
}

/// Securities matched per transaction when catching up on old rows.
const CATCH_UP_BATCH: u64 = 200;

/// The advisory lock that lets one process at a time catch up on old rows.
const CATCH_UP_LOCK: i64 = 0x6673_696e_7374_7275;

impl Store {
    /// Matches every security stored before the securities master existed, in
    /// batches; returns how many. Safe to run in several processes at once, and
    /// beside syncs: each batch is read and matched under a lock the other
    /// processes wait for, with its rows locked against syncs (PostgreSQL's
    /// advisory and row locks; SQLite has one writer anyway).
    pub async fn match_unmatched(&self) -> Result<u64, StoreError> {
        let mut matched = 0;
        loop {
            // Nearly every start finds nothing left to match. A plain read says so
            // without waiting for the write lock, which on SQLite another process
            // (a running server, beside a `finsync` command) may hold.
            let unmatched = security::Entity::find()
                .filter(security::Column::MatchedBy.is_null())
                .one(self.db())
                .await?;
            if unmatched.is_none() {
                return Ok(matched);
            }
            let txn = self.begin_write().await?;
            if self.is_postgres() {
                txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({CATCH_UP_LOCK})"))
                    .await?;
            }
            // Locked: a sync writing one of these rows meanwhile is waited for, and
            // its row, matched by then, drops out of the query.
            let mut query = security::Entity::find()
                .filter(security::Column::MatchedBy.is_null())
                .order_by_asc(security::Column::Id)
                .limit(CATCH_UP_BATCH);
            if self.is_postgres() {
                query = query.lock_exclusive();
            }
            let rows = query.all(&txn).await?;
            if rows.is_empty() {
                txn.commit().await?;
                return Ok(matched);
            }
            let securities = rows
                .iter()
                .map(super::records::security_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            let to_match: Vec<ToMatch> = rows
                .iter()
                .zip(&securities)
                .map(|(row, security)| ToMatch {
                    connection: &row.connection_id,
                    security_id: &row.id,
                    security,
                    stored: Some(row),
                })
                .collect();
            let found = match_securities(&txn, &to_match).await?;
            for (row, found) in rows.iter().zip(found) {
                let updated = security::Entity::update_many()
                    .col_expr(security::Column::InstrumentId, found.instrument_id.into())
                    .col_expr(security::Column::MatchedBy, found.matched_by.into())
                    .col_expr(
                        security::Column::IdentifierIssues,
                        found.identifier_issues.into(),
                    )
                    .filter(security::Column::Id.eq(&row.id))
                    .filter(security::Column::MatchedBy.is_null())
                    .exec(&txn)
                    .await?;
                matched += updated.rows_affected;
            }
            txn.commit().await?;
        }
    }

    /// An instrument of the master, by id.
    pub async fn instrument(&self, id: &str) -> Result<Option<Instrument>, StoreError> {
        Ok(instrument::Entity::find_by_id(id)
            .one(self.db())
            .await?
            .map(Instrument::from))
    }

    /// How each of the connection's securities stands in the master, by the
    /// security's id at the institution.
    pub async fn security_matches(
        &self,
        connection: ConnectionId,
    ) -> Result<HashMap<String, SecurityMatch>, StoreError> {
        let rows = security::Entity::find()
            .filter(security::Column::ConnectionId.eq(connection.to_string()))
            .all(self.db())
            .await?;
        matches_of(self.db(), &rows).await
    }

    /// Every recorded disagreement, from after `after` (security id, identifier),
    /// at most `limit`, with its instrument's name.
    pub async fn instrument_conflict_page(
        &self,
        after: Option<&(String, String)>,
        limit: u64,
    ) -> Result<Vec<InstrumentConflict>, StoreError> {
        let mut query = instrument_conflict::Entity::find()
            .order_by_asc(instrument_conflict::Column::SecurityId)
            .order_by_asc(instrument_conflict::Column::Identifier)
            .limit(limit);
        if let Some((security, identifier)) = after {
            query = query.filter(
                Condition::any()
                    .add(instrument_conflict::Column::SecurityId.gt(security))
                    .add(
                        Condition::all()
                            .add(instrument_conflict::Column::SecurityId.eq(security))
                            .add(instrument_conflict::Column::Identifier.gt(identifier)),
                    ),
            );
        }
        let rows = query.all(self.db()).await?;
        let ids: BTreeSet<String> = rows.iter().map(|r| r.instrument_id.clone()).collect();
        let names: HashMap<String, String> = instrument::Entity::find()
            .filter(instrument::Column::Id.is_in(ids))
            .all(self.db())
            .await?
            .into_iter()
            .map(|i| (i.id, i.name))
            .collect();
        Ok(rows
            .into_iter()
            .map(|r| InstrumentConflict {
                instrument_name: names.get(&r.instrument_id).cloned().unwrap_or_default(),
                security_id: r.security_id,
                connection_id: r.connection_id,
                identifier: r.identifier,
                instrument_id: r.instrument_id,
                instrument_value: r.instrument_value,
                institution_value: r.institution_value,
                held_by: r.held_by,
                detected_at: r.detected_at,
            })
            .collect())
    }
}

/// A security to match: stored (or about to be) as `security_id` for
/// `connection`.
pub(super) struct ToMatch<'a> {
    pub connection: &'a str,
    pub security_id: &'a str,
    pub security: &'a Security,
    /// The row stored for it before, if any: its match stands when what it was
    /// matched on has not changed.
    pub stored: Option<&'a security::Model>,
}

/// Securities whose instruments one query reads: at most four identifiers each,
/// 2,000 parameters, well below PostgreSQL's limit (65,535) and SQLite's (32,766
/// since 3.32, which the bundled SQLite is).
const MATCH_BATCH: usize = 500;

/// Matches each of `securities` to its instrument (creating it when it is new)
/// and records its conflicts afresh, unless its stored match stands; the matches
/// come back in order. One query per 500 securities reads every instrument
/// holding any of their identifiers, and the securities are then matched one
/// after another against what was read: an instrument one of them creates or
/// extends is what the next one finds. That read may be older than what other
/// syncs committed since (PostgreSQL reads committed data per statement), so a
/// security whose instrument lacks one of its identifiers, which would extend
/// the instrument or record a disagreement, is matched again on a fresh read
/// of its own identifiers' holders, and again whenever an identifier it would
/// give was taken by another instrument, or given to this one, meanwhile.
pub(super) async fn match_securities<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    securities: &[ToMatch<'_>],
) -> Result<Vec<Matched>, StoreError> {
    let kept: Vec<Option<Matched>> = securities
        .iter()
        .map(|s| s.stored.and_then(|row| Matched::kept(row, s.security)))
        .collect();
    let rematched: Vec<&str> = securities
        .iter()
        .zip(&kept)
        .filter(|(s, kept)| s.stored.is_some() && kept.is_none())
        .map(|(s, _)| s.security_id)
        .collect();
    for ids in rematched.chunks(MATCH_BATCH) {
        instrument_conflict::Entity::delete_many()
            .filter(instrument_conflict::Column::SecurityId.is_in(ids.iter().copied()))
            .exec(db)
            .await?;
    }
    let checked: Vec<(Identifiers, Vec<IdentifierIssue>)> = securities
        .iter()
        .map(|s| Identifiers::of(s.security))
        .collect();
    let unmatched: Vec<&Identifiers> = checked
        .iter()
        .zip(&kept)
        .filter(|(_, kept)| kept.is_none())
        .map(|((valid, _), _)| valid)
        .collect();
    let mut known = Known::default();
    for batch in unmatched.chunks(MATCH_BATCH) {
        known.add(holders(db, batch.iter().copied()).await?);
    }
    let mut matches = Vec::with_capacity(securities.len());
    for ((to, (valid, issues)), kept) in securities.iter().zip(&checked).zip(kept) {
        if let Some(kept) = kept {
            matches.push(kept);
            continue;
        }
        let identifier_issues = (!issues.is_empty())
            .then(|| serde_json::to_string(issues))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("identifier issues: {e}")))?;
        let (instrument_id, matched_by) = if valid.is_empty() {
            // A security whose identifiers fail their checks is suspect as a whole:
            // not even its ticker merges it.
            match weak_key(to.security).filter(|_| issues.is_empty()) {
                Some(key) => (Some(by_ticker(db, to.security, &key).await?), "ticker"),
                None => (None, "none"),
            }
        } else {
            let mut found = by_identifiers(db, to.security, valid, &mut known).await?;
            // Each identifier taken or given meanwhile shows on the fresh read,
            // so this ends.
            for _ in 0..=valid.present().count() {
                if !holds_all(&found.0, valid) {
                    known.add(holders(db, [valid]).await?);
                    found = known.strongest(valid).ok_or_else(|| {
                        StoreError::Corrupt("a matched instrument cannot be found again".into())
                    })?;
                }
                if reconcile(db, to, &found.0, valid, &mut known).await? {
                    break;
                }
            }
            let (instrument, by) = found;
            (Some(instrument.id), by.as_str())
        };
        matches.push(Matched {
            instrument_id,
            matched_by: matched_by.to_owned(),
            identifier_issues,
        });
    }
    Ok(matches)
}

/// The instruments read so far while matching, by id and by each identifier they
/// hold (an identifier's value belongs to one instrument at most: they are
/// unique). Instruments gain identifiers and never lose them, so what was read
/// stays true; it may only be incomplete.
#[derive(Default)]
struct Known {
    by_id: HashMap<String, instrument::Model>,
    by_value: HashMap<Identifier, HashMap<String, String>>,
}

impl Known {
    /// Takes in instruments read (again): a fresher copy replaces the one kept.
    fn add(&mut self, read: Vec<instrument::Model>) {
        for instrument in read {
            for identifier in Identifier::STRONGEST_FIRST {
                if let Some(value) = held(&instrument, identifier) {
                    self.by_value
                        .entry(identifier)
                        .or_default()
                        .insert(value.to_owned(), instrument.id.clone());
                }
            }
            self.by_id.insert(instrument.id.clone(), instrument);
        }
    }

    /// The instrument holding `value` as its `identifier`.
    fn holder(&self, identifier: Identifier, value: &str) -> Option<&instrument::Model> {
        let id = self.by_value.get(&identifier)?.get(value)?;
        self.by_id.get(id)
    }

    /// The instrument matching the strongest identifier of `valid`, and which.
    fn strongest(&self, valid: &Identifiers) -> Option<(instrument::Model, Identifier)> {
        valid.present().find_map(|(identifier, value)| {
            self.holder(identifier, value)
                .map(|i| (i.clone(), identifier))
        })
    }
}

/// Whether `instrument` holds every identifier of `valid`, as `valid` has it.
fn holds_all(instrument: &instrument::Model, valid: &Identifiers) -> bool {
    valid
        .present()
        .all(|(identifier, value)| held(instrument, identifier) == Some(value))
}

/// `TICKER|CURRENCY`, for a security known by its ticker only.
fn weak_key(sec: &Security) -> Option<String> {
    Some(format!("{}|{}", normal_ticker(sec)?, sec.currency))
}

/// The ticker as instruments keep it: trimmed, upper case; none if blank.
pub(super) fn normal_ticker(sec: &Security) -> Option<String> {
    let ticker = sec
        .ticker
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())?;
    Some(ticker.to_uppercase())
}

/// The instrument holding the strongest of `valid`, created if none holds any.
async fn by_identifiers<C: ConnectionTrait>(
    db: &C,
    sec: &Security,
    valid: &Identifiers,
    known: &mut Known,
) -> Result<(instrument::Model, Identifier), StoreError> {
    if let Some(found) = known.strongest(valid) {
        return Ok(found);
    }
    create(db, sec, valid, None).await?;
    known.add(holders(db, [valid]).await?);
    known
        .strongest(valid)
        .ok_or_else(|| StoreError::Corrupt("an instrument just created cannot be found".into()))
}

/// Every instrument holding any identifier of any of `valid`.
async fn holders<'v, C: ConnectionTrait>(
    db: &C,
    valid: impl IntoIterator<Item = &'v Identifiers>,
) -> Result<Vec<instrument::Model>, StoreError> {
    let valid: Vec<&Identifiers> = valid.into_iter().collect();
    let mut any = Condition::any();
    for identifier in Identifier::STRONGEST_FIRST {
        let values: Vec<&str> = valid.iter().filter_map(|v| v.get(identifier)).collect();
        if !values.is_empty() {
            any = any.add(column(identifier).is_in(values));
        }
    }
    if any.is_empty() {
        return Ok(Vec::new());
    }
    Ok(instrument::Entity::find()
        .filter(any)
        .order_by_asc(instrument::Column::CreatedAt)
        .all(db)
        .await?)
}

/// Gives `instrument` the identifiers of `valid` it lacks (and no other instrument
/// holds), and records each one that disagrees. Returns `false`, having written
/// nothing, when an identifier it would give was taken by another instrument
/// meanwhile, or given to this one by another sync: the caller reads again and
/// decides afresh.
async fn reconcile<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    to: &ToMatch<'_>,
    instrument: &instrument::Model,
    valid: &Identifiers,
    known: &mut Known,
) -> Result<bool, StoreError> {
    let mut gained: Vec<(Identifier, &str)> = Vec::new();
    let mut conflicts = Vec::new();
    for (identifier, value) in valid.present() {
        let ours = held(instrument, identifier);
        if ours == Some(value) {
            continue;
        }
        let held_by = known
            .holder(identifier, value)
            .filter(|other| other.id != instrument.id)
            .map(|other| other.id.clone());
        if ours.is_none() && held_by.is_none() {
            gained.push((identifier, value));
            continue;
        }
        conflicts.push(instrument_conflict::ActiveModel {
            security_id: Set(to.security_id.to_owned()),
            identifier: Set(identifier.as_str().to_owned()),
            connection_id: Set(to.connection.to_owned()),
            instrument_id: Set(instrument.id.clone()),
            instrument_value: Set(ours.map(str::to_owned)),
            institution_value: Set(value.to_owned()),
            held_by: Set(held_by),
            detected_at: Set(Utc::now()),
        });
    }
    if !gained.is_empty() {
        let now = Utc::now();
        // Each identifier is set only where the instrument still lacks it, so a
        // value another sync gave it after our read is never overwritten. The
        // copy kept is ours plus what we set: possibly incomplete, never wrong.
        let mut update = instrument::Entity::update_many()
            .col_expr(instrument::Column::UpdatedAt, Expr::value(now))
            .filter(instrument::Column::Id.eq(&instrument.id));
        let mut updated = instrument.clone();
        updated.updated_at = now;
        for (identifier, value) in &gained {
            update = update
                .col_expr(column(*identifier), Expr::value(*value))
                .filter(column(*identifier).is_null());
            *held_mut(&mut updated, *identifier) = Some((*value).to_owned());
        }
        // In a savepoint: a failed statement outside one would stop the sync.
        let savepoint = db.begin().await?;
        let taken = match update.exec(&savepoint).await {
            Ok(done) if done.rows_affected == 1 => false,
            Ok(_) => true,
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => true,
            Err(e) => return Err(e.into()),
        };
        if taken {
            savepoint.rollback().await?;
            tracing::info!(instrument = %instrument.id, "An identifier was given or taken by another sync meanwhile; matching again.");
            return Ok(false);
        }
        savepoint.commit().await?;
        known.add(vec![updated]);
    }
    for conflict in conflicts {
        conflict.insert(db).await?;
    }
    Ok(true)
}

/// The instrument known by `key` (ticker and currency): the oldest with strong
/// identifiers and that ticker and currency, else one created for the ticker
/// alone, else a new one.
async fn by_ticker<C: ConnectionTrait>(
    db: &C,
    sec: &Security,
    key: &str,
) -> Result<String, StoreError> {
    let find = || async {
        let strong = instrument::Entity::find()
            .filter(instrument::Column::Ticker.eq(normal_ticker(sec)))
            .filter(instrument::Column::Currency.eq(sec.currency.to_string()))
            .filter(instrument::Column::WeakKey.is_null())
            .order_by_asc(instrument::Column::CreatedAt)
            .one(db)
            .await?;
        if strong.is_some() {
            return Ok::<_, StoreError>(strong);
        }
        Ok(instrument::Entity::find()
            .filter(instrument::Column::WeakKey.eq(key))
            .one(db)
            .await?)
    };
    if let Some(found) = find().await? {
        return Ok(found.id);
    }
    create(db, sec, &Identifiers::default(), Some(key)).await?;
    find()
        .await?
        .map(|i| i.id)
        .ok_or_else(|| StoreError::Corrupt("an instrument just created cannot be found".into()))
}

/// A new instrument for `sec`, known by `valid` (or, for one known by ticker
/// alone, by `weak_key`), unless another process created it meanwhile: then any
/// unique key already taken means "use theirs", and the caller asks again.
async fn create<C: ConnectionTrait>(
    db: &C,
    sec: &Security,
    valid: &Identifiers,
    weak_key: Option<&str>,
) -> Result<(), StoreError> {
    let now = Utc::now();
    instrument::Entity::insert(instrument::ActiveModel {
        id: Set(uuid::Uuid::new_v4().to_string()),
        figi: Set(valid.figi.clone()),
        isin: Set(valid.isin.clone()),
        cusip: Set(valid.cusip.clone()),
        sedol: Set(valid.sedol.clone()),
        weak_key: Set(weak_key.map(str::to_owned)),
        ticker: Set(normal_ticker(sec)),
        name: Set(sec.name.clone()),
        security_type: Set(sec.security_type.to_string()),
        currency: Set(sec.currency.to_string()),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .on_conflict(OnConflict::new().do_nothing().to_owned())
    .try_insert()
    .exec(db)
    .await?;
    Ok(())
}

fn column(identifier: Identifier) -> instrument::Column {
    match identifier {
        Identifier::Figi => instrument::Column::Figi,
        Identifier::Isin => instrument::Column::Isin,
        Identifier::Cusip => instrument::Column::Cusip,
        Identifier::Sedol => instrument::Column::Sedol,
    }
}

fn held_mut(instrument: &mut instrument::Model, identifier: Identifier) -> &mut Option<String> {
    match identifier {
        Identifier::Figi => &mut instrument.figi,
        Identifier::Isin => &mut instrument.isin,
        Identifier::Cusip => &mut instrument.cusip,
        Identifier::Sedol => &mut instrument.sedol,
    }
}

fn held(instrument: &instrument::Model, identifier: Identifier) -> Option<&str> {
    match identifier {
        Identifier::Figi => instrument.figi.as_deref(),
        Identifier::Isin => instrument.isin.as_deref(),
        Identifier::Cusip => instrument.cusip.as_deref(),
        Identifier::Sedol => instrument.sedol.as_deref(),
    }
}

/// How each of `rows` stands in the master, by the security's id at the
/// institution: their instruments read in one query.
pub(in crate::store) async fn matches_of<C: ConnectionTrait>(
    db: &C,
    rows: &[security::Model],
) -> Result<HashMap<String, SecurityMatch>, StoreError> {
    let ids: BTreeSet<&String> = rows
        .iter()
        .filter_map(|r| r.instrument_id.as_ref())
        .collect();
    let instruments: HashMap<String, Instrument> = if ids.is_empty() {
        HashMap::new()
    } else {
        instrument::Entity::find()
            .filter(instrument::Column::Id.is_in(ids))
            .all(db)
            .await?
            .into_iter()
            .map(|m| (m.id.clone(), Instrument::from(m)))
            .collect()
    };
    rows.iter()
        .map(|row| {
            let issues = match &row.identifier_issues {
                Some(json) => serde_json::from_str(json).map_err(|e| {
                    StoreError::Corrupt(format!("identifier issues of a security: {e}"))
                })?,
                None => Vec::new(),
            };
            let instrument = row
                .instrument_id
                .as_ref()
                .and_then(|id| instruments.get(id).cloned());
            Ok((
                row.external_id.clone(),
                SecurityMatch {
                    instrument,
                    matched_by: row.matched_by.clone(),
                    issues,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::domain::{Currency, SecurityType};

    /// A sync that read an instrument before another sync gave it an ISIN must not
    /// overwrite that ISIN with its own: it is sent back to match on a fresh read
    /// (which records the disagreement).
    #[tokio::test]
    async fn an_identifier_given_meanwhile_is_not_overwritten() {
        // One connection: an in-memory database lives as long as its connection.
        let store = Store::connect(&SecretString::from("sqlite::memory:"), 1)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let db = store.db();

        let now = Utc::now();
        let read_before = instrument::Model {
            id: "i1".into(),
            figi: Some("BBG000B9XRY4".into()),
            isin: None,
            cusip: None,
            sedol: None,
            weak_key: None,
            ticker: Some("AAPL".into()),
            name: "Apple".into(),
            security_type: "equity".into(),
            currency: "USD".into(),
            created_at: now,
            updated_at: now,
        };
        instrument::ActiveModel::from(read_before.clone())
            .insert(db)
            .await
            .unwrap();
        // Another sync gives the instrument an ISIN after this one read it.
        let given = "US5949181045";
        instrument::Entity::update_many()
            .col_expr(instrument::Column::Isin, Expr::value(given))
            .filter(instrument::Column::Id.eq("i1"))
            .exec(db)
            .await
            .unwrap();

        let security = Security {
            external_id: "s1".into(),
            ticker: Some("AAPL".into()),
            cusip: None,
            isin: Some("US0378331005".into()),
            sedol: None,
            figi: Some("BBG000B9XRY4".into()),
            name: "Apple Inc.".into(),
            security_type: SecurityType::Equity,
            currency: "USD".parse::<Currency>().unwrap(),
            price: None,
            price_as_of: None,
        };
        let (valid, _) = Identifiers::of(&security);
        let to = ToMatch {
            connection: "c1",
            security_id: "sec1",
            security: &security,
            stored: None,
        };
        let mut known = Known::default();
        known.add(vec![read_before.clone()]);
        let decided = reconcile(db, &to, &read_before, &valid, &mut known)
            .await
            .unwrap();

        assert!(!decided, "the stale read is sent back to be matched again");
        let stored = instrument::Entity::find_by_id("i1")
            .one(db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.isin.as_deref(), Some(given));
    }
}
