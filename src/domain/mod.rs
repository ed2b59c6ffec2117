//! The canonical model: what finsync means by an account, a security, a holding and a
//! transaction, whatever institution they came from. Nothing here knows about HTTP,
//! SQL or any institution; every other module depends on it and it depends on none.

mod coverage;
mod fx;
mod identifiers;
mod ids;
mod model;
mod money;
mod quality;

pub use coverage::Coverage;
pub use fx::{Conversion, ConversionError, ROUNDING, Rate, RateTable};
pub use identifiers::{Identifier, IdentifierIssue, Identifiers};
pub use ids::{
    ConnectionId, ErasureId, HouseholdId, HouseholdIdError, LinkSessionId, TenantId, UserId,
    UserIdError, WebhookDeliveryId, WebhookEndpointId,
};
pub use model::{
    Account, AccountType, BalanceMeaning, Balances, ConnectionStatus, DeliveryStatus, Holding,
    Institution, InvestmentType, LinkSessionStatus, Security, SecurityType, Snapshot, Transaction,
    TransactionStatus, WebhookEvent,
};
pub use money::{Currency, CurrencyError, Money};
pub use quality::{
    Finding, FindingCode, FindingScope, Prior, Reconciliation, Split, SplitRatio, SplitSource,
    SyncRead, reconcile,
};
