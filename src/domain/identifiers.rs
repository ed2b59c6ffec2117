//! Security identifiers, and which of those an institution sent may say that two
//! securities are one instrument: each is read in its normal form (upper case,
//! trimmed) and kept only if its check digit holds (ISIN by ISO 6166, CUSIP by ANSI
//! X9.6, SEDOL by LSEG's weights, FIGI by its own modulus-10 rule). What fails is
//! still the institution's data, reported as an [`IdentifierIssue`], never used to
//! merge. An ISIN carries a national number: a US or Canadian ISIN's is the CUSIP,
//! a British or Irish one's (`GB00`/`IE00`) the SEDOL; what an institution left out
//! is read from it, so one that sends only the ISIN and one that sends only the
//! CUSIP still meet.

use serde::{Deserialize, Serialize};

use super::Security;

/// The identifiers that may match securities across institutions, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Identifier {
    Figi,
    Isin,
    Cusip,
    Sedol,
}

impl Identifier {
    pub const STRONGEST_FIRST: [Self; 4] = [Self::Figi, Self::Isin, Self::Cusip, Self::Sedol];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Figi => "figi",
            Self::Isin => "isin",
            Self::Cusip => "cusip",
            Self::Sedol => "sedol",
        }
    }
}

impl std::fmt::Display for Identifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An identifier an institution sent that is not used to match: why, and what it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentifierIssue {
    pub identifier: Identifier,
    pub value: String,
    pub problem: String,
}

/// A security's identifiers that may be used to match it, each valid and normal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identifiers {
    pub figi: Option<String>,
    pub isin: Option<String>,
    pub cusip: Option<String>,
    pub sedol: Option<String>,
}

impl Identifiers {
    /// The valid identifiers of `security`, and what was wrong with the others.
    pub fn of(security: &Security) -> (Self, Vec<IdentifierIssue>) {
        let mut valid = Self::default();
        let mut issues = Vec::new();
        for identifier in Identifier::STRONGEST_FIRST {
            let sent = match identifier {
                Identifier::Figi => &security.figi,
                Identifier::Isin => &security.isin,
                Identifier::Cusip => &security.cusip,
                Identifier::Sedol => &security.sedol,
            };
            let Some(sent) = sent.as_deref().filter(|s| !s.trim().is_empty()) else {
                continue;
            };
            let normal = sent.trim().to_ascii_uppercase();
            match check(identifier, &normal) {
                Ok(()) => *valid.slot(identifier) = Some(normal),
                Err(problem) => issues.push(IdentifierIssue {
                    identifier,
                    value: sent.to_owned(),
                    problem,
                }),
            }
        }
        if let Some(isin) = valid.isin.clone() {
            let national = |from: usize| isin[from..11].to_owned();
            let sent = |id: Identifier| issues.iter().any(|i| i.identifier == id);
            match &isin[..2] {
                "US" | "CA" if valid.cusip.is_none() && !sent(Identifier::Cusip) => {
                    valid.cusip = Some(national(2)).filter(|c| check(Identifier::Cusip, c).is_ok());
                }
                "GB" | "IE"
                    if &isin[2..4] == "00" && valid.sedol.is_none() && !sent(Identifier::Sedol) =>
                {
                    valid.sedol = Some(national(4)).filter(|s| check(Identifier::Sedol, s).is_ok());
                }
                _ => {}
            }
        }
        (valid, issues)
    }

    pub fn get(&self, identifier: Identifier) -> Option<&str> {
        match identifier {
            Identifier::Figi => self.figi.as_deref(),
            Identifier::Isin => self.isin.as_deref(),
            Identifier::Cusip => self.cusip.as_deref(),
            Identifier::Sedol => self.sedol.as_deref(),
        }
    }

    fn slot(&mut self, identifier: Identifier) -> &mut Option<String> {
        match identifier {
            Identifier::Figi => &mut self.figi,
            Identifier::Isin => &mut self.isin,
            Identifier::Cusip => &mut self.cusip,
            Identifier::Sedol => &mut self.sedol,
        }
    }

    /// Each identifier present, strongest first.
    pub fn present(&self) -> impl Iterator<Item = (Identifier, &str)> {
        Identifier::STRONGEST_FIRST
            .into_iter()
            .filter_map(|id| self.get(id).map(|value| (id, value)))
    }

    pub fn is_empty(&self) -> bool {
        self.present().next().is_none()
    }
}

/// Whether `value` (already upper case and trimmed) is a valid `identifier`.
fn check(identifier: Identifier, value: &str) -> Result<(), String> {
    match identifier {
        Identifier::Isin => isin::parse(value).map(drop).map_err(|e| e.to_string()),
        Identifier::Cusip => cusip::CUSIP::parse(value)
            .map(drop)
            .map_err(|e| e.to_string()),
        Identifier::Sedol => sedol::validate(value).map(drop).map_err(|e| e.to_string()),
        Identifier::Figi => check_figi(value),
    }
}

/// A FIGI: twelve characters, consonants and digits, `G` third, not starting with
/// a prefix that is an ISIN country code in use, and a modulus-10 "double add
/// double" check digit over the values of the first eleven (a digit its value,
/// a letter 10 for A to 35 for Z; every second value doubled).
fn check_figi(value: &str) -> Result<(), String> {
    const RESERVED: [&str; 7] = ["BS", "BM", "GG", "GB", "GH", "KY", "VG"];
    let bytes = value.as_bytes();
    let shaped = bytes.len() == 12
        && bytes[2] == b'G'
        && bytes
            .iter()
            .all(|b| b.is_ascii_digit() || (b.is_ascii_uppercase() && !b"AEIOU".contains(b)))
        && !RESERVED.contains(&&value[..2]);
    if !shaped {
        return Err("not a FIGI: twelve consonants and digits, G third".into());
    }
    let sum: u32 = bytes[..11]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let v = if b.is_ascii_digit() {
                u32::from(b - b'0')
            } else {
                u32::from(b - b'A') + 10
            };
            let v = if i % 2 == 1 { v * 2 } else { v };
            v / 10 + v % 10
        })
        .sum();
    let expected = (10 - sum % 10) % 10;
    let was = u32::from(bytes[11].wrapping_sub(b'0'));
    if was == expected {
        Ok(())
    } else {
        Err(format!("incorrect check digit: expected {expected}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Currency, SecurityType};

    fn security(
        figi: Option<&str>,
        isin: Option<&str>,
        cusip: Option<&str>,
        sedol: Option<&str>,
    ) -> Security {
        Security {
            external_id: "s".into(),
            ticker: None,
            cusip: cusip.map(str::to_owned),
            isin: isin.map(str::to_owned),
            sedol: sedol.map(str::to_owned),
            figi: figi.map(str::to_owned),
            name: "n".into(),
            security_type: SecurityType::Equity,
            currency: "USD".parse::<Currency>().unwrap(),
            price: None,
            price_as_of: None,
        }
    }

    #[test]
    fn real_identifiers_pass_in_any_case_and_padding() {
        // Apple: FIGI, ISIN, CUSIP, SEDOL as published.
        let (valid, issues) = Identifiers::of(&security(
            Some("BBG000B9XRY4"),
            Some(" us0378331005 "),
            Some("037833100"),
            Some("2046251"),
        ));
        assert_eq!(issues, []);
        assert_eq!(valid.isin.as_deref(), Some("US0378331005"));
        assert_eq!(
            valid.present().map(|(id, _)| id).collect::<Vec<_>>(),
            Identifier::STRONGEST_FIRST
        );
        for figi in ["BBG000BLNNH6", "BBG000BPH459", "BBG000BVPV84"] {
            assert_eq!(check_figi(figi), Ok(()), "{figi}");
        }
    }

    #[test]
    fn the_national_number_inside_an_isin_fills_in_what_was_left_out() {
        let (valid, _) = Identifiers::of(&security(None, Some("US0378331005"), None, None));
        assert_eq!(valid.cusip.as_deref(), Some("037833100"));
        // BAE Systems: GB0002634946 carries SEDOL 0263494.
        let (valid, _) = Identifiers::of(&security(None, Some("GB0002634946"), None, None));
        assert_eq!(valid.sedol.as_deref(), Some("0263494"));
        // What was sent wins; a German ISIN carries neither.
        let (valid, _) = Identifiers::of(&security(
            None,
            Some("US0378331005"),
            Some("594918104"),
            None,
        ));
        assert_eq!(valid.cusip.as_deref(), Some("594918104"));
        let (valid, _) = Identifiers::of(&security(None, Some("DE0007164600"), None, None));
        assert_eq!((valid.cusip, valid.sedol), (None, None));
    }

    #[test]
    fn a_wrong_check_digit_is_kept_as_an_issue_not_used_to_match() {
        let (valid, issues) = Identifiers::of(&security(
            Some("BBG000B9XRY5"),
            Some("US0378331006"),
            Some("037833101"),
            Some("2046252"),
        ));
        assert!(valid.is_empty());
        assert_eq!(
            issues.iter().map(|i| i.identifier).collect::<Vec<_>>(),
            Identifier::STRONGEST_FIRST
        );
        assert_eq!(issues[1].value, "US0378331006");
        assert!(issues.iter().all(|i| !i.problem.is_empty()));
        let (valid, issues) = Identifiers::of(&security(None, Some("   "), Some("12"), None));
        assert!(valid.is_empty());
        assert_eq!(issues.len(), 1, "blank is absent; a short CUSIP is wrong");
    }
}
