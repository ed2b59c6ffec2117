//! The sandbox's institutions, one folder each, and the one table of them
//! ([`Institution::spec`]).
//!
//! An institution's folder owns everything that makes it itself: its `mod.rs` holds its
//! [`InstitutionSpec`] (identity, OAuth profile, data and fault rules, the text that
//! describes it) and its `api.rs` the data API it serves. The shared machinery (`oauth`,
//! `grants`, `faults`, `world`, `data`, `admin`, `notify`) asks the spec and never matches
//! on [`Institution`]; adding an institution is a new folder, a variant and a row below.

pub(crate) mod albion;
pub(crate) mod harbor;
pub(crate) mod keystone;
pub(crate) mod larkspur;
pub(crate) mod meridian;
pub(crate) mod northwind;
pub(crate) mod pinecrest;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use sha2::{Digest, Sha256};

use crate::data::{Portfolio, Transaction};
use crate::grants::ScopeSet;
use crate::oauth::{ClientAuth, TokenQuirks};
use crate::{AppState, SandboxConfig};

/// One of the sandbox's institutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Institution {
    Meridian,
    Harbor,
    Keystone,
    Northwind,
    Pinecrest,
    Albion,
    Larkspur,
}

impl Institution {
    /// Every institution, in the order the sandbox lists them.
    pub const ALL: [Self; 7] = [
        Self::Meridian,
        Self::Harbor,
        Self::Keystone,
        Self::Northwind,
        Self::Pinecrest,
        Self::Albion,
        Self::Larkspur,
    ];

    /// Everything about the institution: the one place that maps a variant to its folder.
    pub(crate) fn spec(self) -> &'static InstitutionSpec {
        match self {
            Self::Meridian => &meridian::SPEC,
            Self::Harbor => &harbor::SPEC,
            Self::Keystone => &keystone::SPEC,
            Self::Northwind => &northwind::SPEC,
            Self::Pinecrest => &pinecrest::SPEC,
            Self::Albion => &albion::SPEC,
            Self::Larkspur => &larkspur::SPEC,
        }
    }

    /// The institution id: its path prefix and its connector file's stem.
    pub fn id(self) -> &'static str {
        self.spec().id
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Where its data API's resources hang from, below the sandbox's address (e.g.
    /// `/albion/open-banking/v3.1/aisp/`): its connector's base URL there.
    pub fn api_root(self) -> &'static str {
        self.spec().api_root
    }

    /// Seeds this institution's data from the sandbox's `seed` (see [`DataRules::salted_seed`]).
    pub(crate) fn seed(self, seed: u64) -> u64 {
        if !self.spec().data.salted_seed {
            return seed;
        }
        let digest = Sha256::digest(self.id().as_bytes());
        let mut salt = [0u8; 8];
        salt.copy_from_slice(&digest[..8]);
        seed ^ u64::from_le_bytes(salt)
    }
}

impl fmt::Display for Institution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// An id that names no sandbox institution.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no sandbox institution {name:?}; they are {}", Institution::ALL.map(Institution::id).join(", "), name = .0)]
pub struct UnknownInstitution(pub String);

impl FromStr for Institution {
    type Err = UnknownInstitution;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|institution| institution.id() == id)
            .ok_or_else(|| UnknownInstitution(id.to_owned()))
    }
}

/// Everything that makes one institution itself. Each folder has one, as a `static`.
#[derive(Debug)]
pub(crate) struct InstitutionSpec {
    /// The institution id: its path prefix (`/<id>/…`), its admin paths' and its
    /// configuration's key, and its connector file's stem.
    pub(crate) id: &'static str,
    /// Shown on the consent page and in the data (see [`DataRules::rebranded`]).
    pub(crate) name: &'static str,
    /// Starts the institution's record ids, codes and tokens (`mer_acc_…`, `mer_at_…`).
    pub(crate) prefix: &'static str,
    /// The OAuth client the institution knows unless configured otherwise.
    pub(crate) default_client: DefaultClient,
    pub(crate) oauth: OAuthRules,
    pub(crate) data: DataRules,
    pub(crate) faults: FaultRules,
    /// Whether it sends webhooks when the data moves (see `notify`).
    pub(crate) sends_webhooks: bool,
    /// Where its data API's resources hang from, below the sandbox's address: the
    /// base URL its connector file joins paths to (`/<id>` but for an institution
    /// that serves a standard under the standard's own path).
    pub(crate) api_root: &'static str,
    /// Its data API; fault injection is wrapped around it from outside.
    pub(crate) routes: fn(&Arc<AppState>) -> Router<Arc<AppState>>,
    /// Its section of the text `GET /` answers, ending with a newline.
    pub(crate) describe: fn(&SandboxConfig) -> String,
}

/// An institution's default OAuth client. The secret is public, like a payment
/// provider's test keys.
#[derive(Debug)]
pub(crate) struct DefaultClient {
    pub(crate) client_id: &'static str,
    pub(crate) client_secret: &'static str,
}

/// How an institution's authorization server deviates from the common path.
#[derive(Debug)]
pub(crate) struct OAuthRules {
    pub(crate) client_auth: ClientAuth,
    /// The scopes it offers; a request with none gets all of them.
    pub(crate) scopes: ScopeSet,
    /// Separates scope names in requests and responses (RFC 6749 says a space).
    pub(crate) scope_separator: char,
    /// Whether an authorization request must carry an S256 challenge.
    pub(crate) pkce_required: bool,
    pub(crate) token_shape: TokenShape,
    pub(crate) refresh_tokens: RefreshTokens,
    /// Whether each grant stands on a consent whose id the token responses carry
    /// (`consent_id`, the same on every refresh) and every data request must repeat
    /// in a `Consent-ID` header, as PSD2 banks have it.
    pub(crate) consent_ids: bool,
}

/// The shape of an institution's successful token responses.
#[derive(Debug)]
pub(crate) enum TokenShape {
    /// Whatever [`SandboxConfig::token_quirks`] says, so clients can be tested against
    /// any of them.
    Configured,
    /// Always these: they are part of who the institution is.
    Fixed(TokenQuirks),
}

/// What a refresh does to the refresh token.
#[derive(Debug)]
pub(crate) enum RefreshTokens {
    /// A new one every time; the replaced one is still accepted for `grace` (the
    /// institution's reuse grace period, zero for none) unless
    /// [`SandboxConfig::refresh_grace`] says otherwise.
    Rotate { grace: Duration },
    /// The same one for the grant's life.
    Keep,
}

/// How an institution's data derives from the generator's ([`crate::data`]), which speaks
/// Meridian.
#[derive(Debug)]
pub(crate) struct DataRules {
    /// Whether the configured seed is salted with the id, so that a user has different
    /// accounts at each institution; an unsalted one keeps the data it always had.
    pub(crate) salted_seed: bool,
    /// Whether the generator's Meridian ids and names are renamed to this institution's
    /// prefix and name.
    pub(crate) rebranded: bool,
}

/// What fault injection needs to know of an institution's wire format.
#[derive(Debug)]
pub(crate) struct FaultRules {
    /// Where each record keeps the numbers `malformed_rate` spoils.
    pub(crate) malformed_numbers: &'static [&'static str],
}

/// Renames the generator's Meridian ids and names to `institution`'s, if its data is
/// rebranded.
pub(crate) fn rebrand(mut portfolio: Portfolio, institution: Institution) -> Portfolio {
    let spec = institution.spec();
    if !spec.data.rebranded {
        return portfolio;
    }
    let id = |text: &mut String| rebrand_id(text, institution);
    let name = |text: &mut String| rebrand_name(text, spec.name);
    for account in &mut portfolio.accounts {
        id(&mut account.account_id);
        name(&mut account.official_name);
    }
    for holding in &mut portfolio.holdings {
        id(&mut holding.account_id);
        id(&mut holding.security.security_id);
        name(&mut holding.security.name);
    }
    for transaction in &mut portfolio.transactions {
        rebrand_transaction(transaction, institution);
    }
    portfolio
}

/// One transaction of [`rebrand`], for a reply that sends a few of them.
pub(crate) fn rebrand_transaction(transaction: &mut Transaction, institution: Institution) {
    let spec = institution.spec();
    if !spec.data.rebranded {
        return;
    }
    let id = |text: &mut String| rebrand_id(text, institution);
    id(&mut transaction.transaction_id);
    id(&mut transaction.account_id);
    if let Some(pending) = &mut transaction.pending_transaction_id {
        id(pending);
    }
    if let Some(security) = &mut transaction.security_id {
        id(security);
    }
    rebrand_name(&mut transaction.name, spec.name);
}

/// A name of [`rebrand`]: Meridian becomes `institution_name`.
fn rebrand_name(text: &mut String, institution_name: &str) {
    *text = text
        .replace("Meridian", institution_name)
        .replace("MERIDIAN", &institution_name.to_uppercase());
}

/// An id of [`rebrand`]: Meridian's prefix becomes the institution's.
pub(crate) fn rebrand_id(text: &mut String, institution: Institution) {
    let spec = institution.spec();
    if !spec.data.rebranded {
        return;
    }
    if let Some(rest) = text.strip_prefix(meridian::SPEC.prefix) {
        *text = format!("{}{rest}", spec.prefix);
    }
}
