//! A change feed in the style of Plaid's `/transactions/sync`, for the institutions that
//! serve one (Meridian over `GET`, Larkspur over `POST`): what changed in a user's
//! transactions since a cursor.
//!
//! A cursor records where the client stands: everything at a `base` epoch (nothing, without
//! a cursor) plus the first `offset` changes on the way to a `target` epoch. The changes are
//! the added, then the modified, then the removed transactions, paged `count` at a time
//! across the three lists. The last page's cursor is at rest at its target epoch; presented
//! again, it yields the changes since. A cursor in the middle of the changes is only good
//! while its target is still the current epoch: once the world moves on, the client gets
//! [`FeedError::Mutation`] and restarts from the cursor it began with. A cursor is bound to
//! the institution's seed and the user: an edited or another user's cursor is refused.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::data::{Delta, EpochState, Transaction};
use crate::{AppState, Institution, institutions};

/// Why a page of changes cannot be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FeedError {
    /// Not a cursor this institution issued to this user.
    InvalidCursor,
    /// The data changed while the client paged: start again from the first cursor.
    Mutation,
}

/// One page of changes, and where the client stands after it.
#[derive(Debug)]
pub(crate) struct FeedPage {
    pub(crate) added: Vec<Transaction>,
    pub(crate) modified: Vec<Transaction>,
    pub(crate) removed: Vec<String>,
    pub(crate) next_cursor: String,
    pub(crate) has_more: bool,
}

/// The next `count` changes of `user_id`'s transactions at `institution` after
/// `cursor` (none or empty: from nothing).
pub(crate) fn page(
    app: &AppState,
    institution: Institution,
    user_id: &str,
    cursor: Option<&str>,
    count: usize,
) -> Result<FeedPage, FeedError> {
    let seed = institution.seed(app.config.seed);
    let current = app.world.epoch();
    let position = match cursor.filter(|cursor| !cursor.is_empty()) {
        None => Position {
            base: None,
            target: current,
            offset: 0,
        },
        Some(cursor) => {
            let position = Position::decode(cursor, seed, user_id)?;
            if position.target > current {
                // Issued by a sandbox further along, not this one.
                return Err(FeedError::InvalidCursor);
            }
            if position.offset == 0 {
                // At rest: sync towards the current epoch.
                Position {
                    target: current,
                    ..position
                }
            } else if position.target != current {
                return Err(FeedError::Mutation);
            } else {
                position
            }
        }
    };
    // Compared as the world holds them, and only what is sent is rebranded: an
    // institution keeps a change log rather than copying a user's history per page.
    let target = app.world.state(seed, user_id, position.target);
    let base = position
        .base
        .filter(|epoch| *epoch != position.target)
        .map(|epoch| app.world.state(seed, user_id, epoch));
    let changes = match (position.base, &base) {
        // At rest at the current epoch: nothing can have changed since.
        (Some(epoch), None) if epoch == position.target => Changes::none(),
        _ => Changes::between(base.as_deref(), &target),
    };
    let total = changes.len();
    if position.offset > 0 && position.offset >= total {
        return Err(FeedError::InvalidCursor);
    }
    let end = position.offset.saturating_add(count).min(total);
    let has_more = end < total;
    let next = if has_more {
        Position {
            offset: end,
            ..position
        }
    } else {
        Position::at_rest(position.target)
    };
    let (added, modified, removed) = changes.window(position.offset, end);
    let sent = |list: &[&Transaction]| -> Vec<Transaction> {
        list.iter()
            .map(|t| {
                let mut t = (*t).clone();
                institutions::rebrand_transaction(&mut t, institution);
                t
            })
            .collect()
    };
    let removed = removed
        .iter()
        .map(|id| {
            let mut id = (*id).to_owned();
            institutions::rebrand_id(&mut id, institution);
            id
        })
        .collect();
    Ok(FeedPage {
        added: sent(added),
        modified: sent(modified),
        removed,
        next_cursor: next.encode(seed, user_id),
        has_more,
    })
}

/// Where a client stands; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    /// The epoch whose transactions the client holds; `None` before its first sync.
    pub(crate) base: Option<u32>,
    pub(crate) target: u32,
    pub(crate) offset: usize,
}

impl Position {
    pub(crate) fn at_rest(epoch: u32) -> Self {
        Self {
            base: Some(epoch),
            target: epoch,
            offset: 0,
        }
    }

    /// `sync:<base or ->:<target>:<offset>:<check>`, base64url. The check binds the cursor
    /// to the sandbox's seed and the user, so an edited or another user's cursor is refused.
    pub(crate) fn encode(self, seed: u64, user_id: &str) -> String {
        let body = self.body();
        let check = check(seed, user_id, &body);
        URL_SAFE_NO_PAD.encode(format!("{body}:{check}"))
    }

    pub(crate) fn decode(cursor: &str, seed: u64, user_id: &str) -> Result<Self, FeedError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| FeedError::InvalidCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| FeedError::InvalidCursor)?;
        let (body, given) = text.rsplit_once(':').ok_or(FeedError::InvalidCursor)?;
        if given != check(seed, user_id, body) {
            return Err(FeedError::InvalidCursor);
        }
        let mut parts = body.split(':');
        let (Some("sync"), Some(base), Some(target), Some(offset), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(FeedError::InvalidCursor);
        };
        let base = match base {
            "-" => None,
            epoch => Some(epoch.parse().map_err(|_| FeedError::InvalidCursor)?),
        };
        let position = Self {
            base,
            target: target.parse().map_err(|_| FeedError::InvalidCursor)?,
            offset: offset.parse().map_err(|_| FeedError::InvalidCursor)?,
        };
        // Issued cursors are at rest at their target, or part way towards it.
        let consistent = match position.base {
            Some(base) if position.offset == 0 => base == position.target,
            Some(base) => base < position.target,
            None => position.offset > 0,
        };
        if !consistent {
            return Err(FeedError::InvalidCursor);
        }
        Ok(position)
    }

    fn body(self) -> String {
        let base = self
            .base
            .map_or_else(|| "-".to_owned(), |epoch| epoch.to_string());
        format!("sync:{base}:{}:{}", self.target, self.offset)
    }
}

fn check(seed: u64, user_id: &str, body: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [&seed.to_le_bytes()[..], user_id.as_bytes(), body.as_bytes()] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The transactions that differ between two epochs, each list in a fixed order: added and
/// modified as the target epoch lists them, removed as the base epoch did.
struct Changes<'a> {
    added: Vec<&'a Transaction>,
    modified: Vec<&'a Transaction>,
    removed: Vec<&'a str>,
}

impl<'a> Changes<'a> {
    /// With no base, every transaction of the target is added.
    fn none() -> Self {
        Self {
            added: Vec::new(),
            modified: Vec::new(),
            removed: Vec::new(),
        }
    }

    /// What changed from `base` (nothing, without one) to `target`: from the
    /// institution's change log when `target` is the epoch right after `base`, else
    /// by comparing them.
    fn between(base: Option<&'a EpochState>, target: &'a EpochState) -> Self {
        let after = &target.portfolio().transactions;
        let Some(base) = base else {
            return Self {
                added: after.iter().collect(),
                ..Self::none()
            };
        };
        let before = &base.portfolio().transactions;
        let compared;
        let delta = match target.since_previous() {
            Some(delta) if base.epoch() + 1 == target.epoch() => delta,
            _ => {
                compared = Delta::between(base.portfolio(), target.portfolio());
                &compared
            }
        };
        Self {
            added: delta.added.iter().map(|&at| &after[at]).collect(),
            modified: delta.modified.iter().map(|&at| &after[at]).collect(),
            removed: delta
                .removed
                .iter()
                .map(|&at| before[at].transaction_id.as_str())
                .collect(),
        }
    }

    fn len(&self) -> usize {
        self.added.len() + self.modified.len() + self.removed.len()
    }

    /// Changes `start..end` of the three lists laid end to end.
    fn window(
        &self,
        start: usize,
        end: usize,
    ) -> (&[&'a Transaction], &[&'a Transaction], &[&'a str]) {
        let added = slice(&self.added, 0, start, end);
        let modified = slice(&self.modified, self.added.len(), start, end);
        let removed = slice(
            &self.removed,
            self.added.len() + self.modified.len(),
            start,
            end,
        );
        (added, modified, removed)
    }
}

/// The part of `list`, laid out from `offset`, that falls in `start..end`.
fn slice<T>(list: &[T], offset: usize, start: usize, end: usize) -> &[T] {
    let clamp = |at: usize| at.clamp(offset, offset + list.len()) - offset;
    &list[clamp(start)..clamp(end)]
}
