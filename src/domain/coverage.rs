//! Coverage: what a fetched list of transactions stands for, and so which stored
//! transactions its absences may remove.

use chrono::NaiveDate;

/// What the fetched transactions stand for, and so which stored ones may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coverage {
    /// Every transaction the institution has: a stored one not among them is gone.
    Everything,
    /// Every transaction dated within the range (inclusive): a stored one dated in
    /// it and not among them is gone; older and newer ones stay.
    Dated { from: NaiveDate, to: NaiveDate },
    /// Only what changed since the cursor: the ids listed as removed go, nothing
    /// else does.
    Changes { removed: Vec<String> },
    /// Not all of it could be read: nothing stored goes.
    Partial,
}

impl Coverage {
    /// Whether a stored transaction not among the fetched ones is gone.
    pub fn removes(&self, external_id: &str, date: NaiveDate) -> bool {
        match self {
            Self::Everything => true,
            Self::Dated { from, to } => (*from..=*to).contains(&date),
            Self::Changes { removed } => removed.iter().any(|r| r == external_id),
            Self::Partial => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    #[test]
    fn each_coverage_removes_only_what_it_speaks_for() {
        assert!(Coverage::Everything.removes("t1", day(1)));
        let dated = Coverage::Dated {
            from: day(10),
            to: day(20),
        };
        assert!(dated.removes("t1", day(10)) && dated.removes("t1", day(20)));
        assert!(!dated.removes("t1", day(9)) && !dated.removes("t1", day(21)));
        let changes = Coverage::Changes {
            removed: vec!["t2".into()],
        };
        assert!(changes.removes("t2", day(1)) && !changes.removes("t1", day(1)));
        assert!(!Coverage::Partial.removes("t1", day(1)));
    }
}
