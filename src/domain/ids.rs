//! Identifiers that cross module boundaries, as newtypes so they cannot be mixed up.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// One tenant: an advisory app with its own API key and its own users.
    TenantId
);
uuid_id!(
    /// One user's link to one institution.
    ConnectionId
);

uuid_id!(
    /// One app's request to link one of its users, played out in the hosted link page.
    LinkSessionId
);

uuid_id!(
    /// One request to erase a tenant's user.
    ErasureId
);

uuid_id!(
    /// One webhook endpoint a tenant registered.
    WebhookEndpointId
);
uuid_id!(
    /// One event's delivery to one endpoint, with all its attempts.
    WebhookDeliveryId
);

/// A tenant's own identifier for one of its users. Tenants choose these, so they are
/// checked: 1 to 128 characters of letters, digits, `-`, `_`, `.`, `@`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("user id must be 1 to 128 characters of letters, digits, '-', '_', '.', '@'")]
pub struct UserIdError;

/// The rule for ids tenants choose (users, households).
fn tenant_chosen(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= 128
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, UserIdError> {
        if tenant_chosen(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(UserIdError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserId {
    type Error = UserIdError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<UserId> for String {
    fn from(value: UserId) -> Self {
        value.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tenant's own identifier for a household (a group of its users read as
/// one), under the same rule as [`UserId`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HouseholdId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("household id must be 1 to 128 characters of letters, digits, '-', '_', '.', '@'")]
pub struct HouseholdIdError;

impl HouseholdId {
    pub fn parse(raw: &str) -> Result<Self, HouseholdIdError> {
        if tenant_chosen(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(HouseholdIdError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HouseholdId {
    type Error = HouseholdIdError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<HouseholdId> for String {
    fn from(value: HouseholdId) -> Self {
        value.0
    }
}

impl fmt::Display for HouseholdId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_reject_what_could_confuse_a_url_or_a_log() {
        assert!(UserId::parse("demo-alice").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a/b").is_err());
        assert!(UserId::parse("a b").is_err());
        assert!(UserId::parse(&"x".repeat(129)).is_err());
    }
}
