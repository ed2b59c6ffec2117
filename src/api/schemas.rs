//! What the domain's types look like in the OpenAPI document. The domain knows
//! nothing of OpenAPI; the contract of its wire forms is described here, beside the
//! handlers that serve them.

use std::borrow::Cow;

use utoipa::openapi::schema::{Schema, Type};
use utoipa::openapi::{ObjectBuilder, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::domain::{
    AccountType, BalanceMeaning, ConnectionStatus, Currency, DeliveryStatus, FindingCode,
    FindingScope, InvestmentType, LinkSessionStatus, Money, SecurityType, TransactionStatus,
    WebhookEvent,
};

/// A closed vocabulary is a string with its wire names as the enum values.
macro_rules! vocabulary_schema {
    ($($name:ident),+ $(,)?) => {$(
        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some($name::ALL.iter().copied()))
                    .into()
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    )+};
}

vocabulary_schema!(
    AccountType,
    BalanceMeaning,
    ConnectionStatus,
    DeliveryStatus,
    FindingCode,
    FindingScope,
    InvestmentType,
    LinkSessionStatus,
    SecurityType,
    TransactionStatus,
    WebhookEvent,
);

impl PartialSchema for Currency {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[A-Z]{3}$"))
            .description(Some("ISO 4217 currency code"))
            .examples([serde_json::json!("USD")])
            .into()
    }
}

impl ToSchema for Currency {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Currency")
    }
}

impl PartialSchema for Money {
    #[expect(
        deprecated,
        reason = "`example`, as the derives of the other schemas still publish it"
    )]
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "An exact amount of one currency. Serialized with the amount as a string so that\nno JSON reader turns it into a float on the way.",
            ))
            .property(
                "amount",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some(
                        "Exact decimal, to the last digit the institution sent.",
                    ))
                    .example(Some(serde_json::json!("1234.56"))),
            )
            .required("amount")
            .property("currency", utoipa::openapi::Ref::from_schema_name("Currency"))
            .required("currency")
            .into()
    }
}

impl ToSchema for Money {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Money")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Currency::name().into_owned(), Currency::schema()));
    }
}
