//! Reporting currencies and households: positions converted at the provider's
//! latest rates (the sandbox serves a recorded ECB publication), exactly, with
//! the rate and date of every conversion named and a missing rate shown, never
//! counted as zero; and a tenant's households read as one.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::NaiveDate;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};

use crate::support::TestApp;

/// The ECB's euro reference rates of 29 April 2022, as the sandbox's recording
/// holds them: units per euro.
const ECB_USD: &str = "1.0540";
const ECB_GBP: &str = "0.83908";

fn dec(value: &Value) -> Decimal {
    Decimal::from_str(
        value
            .as_str()
            .unwrap_or_else(|| panic!("a decimal string: {value}")),
    )
    .unwrap()
}

/// A list of `{amount, currency}` as amounts by currency.
fn by_currency(list: &Value) -> BTreeMap<String, Decimal> {
    list.as_array()
        .unwrap_or_else(|| panic!("a list of amounts: {list}"))
        .iter()
        .map(|m| {
            (
                m["currency"].as_str().unwrap().to_owned(),
                dec(&m["amount"]),
            )
        })
        .collect()
}

fn lit(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

/// Units of `to` per unit of `from`, by hand from the ECB's figures.
fn by_hand(from: &str, to: &str) -> Decimal {
    let per_euro = |c: &str| match c {
        "EUR" => Decimal::ONE,
        "USD" => lit(ECB_USD),
        "GBP" => lit(ECB_GBP),
        other => panic!("no rate in the recording for {other}"),
    };
    per_euro(to) / per_euro(from)
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    bearer: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = finsync::http::client()
        .request(method, format!("{}{path}", app.address))
        .bearer_auth(bearer);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn positions_convert_to_eur_and_gbp_exactly_naming_each_rate() {
    let app = TestApp::builder().tenant("advisor").sqlite().build().await;
    let tenant = app.tenant();
    app.link_and_sync_at(tenant.id, "demo-alice", "meridian")
        .await;
    let refreshed = app.app.ctx.fx.refresh(&app.app.ctx.store).await.unwrap();
    assert_eq!(refreshed.currencies, 31, "the recording's 31 currencies");

    for to in ["EUR", "GBP"] {
        let body = app
            .get_json(
                &format!("/v1/users/demo-alice/positions?currency={to}"),
                tenant.bearer(),
            )
            .await;
        let reporting = &body["reporting"];
        assert_eq!(reporting["currency"], to);
        assert_eq!(reporting["complete"], true, "{reporting}");
        let portfolio = app
            .get_json("/v1/users/demo-alice/portfolio", tenant.bearer())
            .await;
        assert_eq!(body["net_worth"], portfolio["totals"]);
        let worth: Decimal = portfolio["totals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (dec(&m["amount"]) * by_hand(m["currency"].as_str().unwrap(), to))
                    .round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven)
            })
            .sum();
        assert_eq!(dec(&reporting["net_worth"]["amount"]), worth, "{reporting}");
        assert_eq!(reporting["missing_rates"], json!([]));
        let mut held_in = std::collections::BTreeSet::new();
        let mut total = Decimal::ZERO;
        for position in body["positions"].as_array().unwrap() {
            let mut sum = Decimal::ZERO;
            for h in position["holdings"].as_array().unwrap() {
                let value = &h["value"];
                let from = value["currency"].as_str().unwrap();
                held_in.insert(from.to_owned());
                // By hand: amount × (per-euro of `to` / per-euro of `from`), then
                // rounded once to 2 places, half to even.
                let expected = (dec(&value["amount"]) * by_hand(from, to))
                    .round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven);
                assert_eq!(dec(&h["reporting_value"]["amount"]), expected, "{h}");
                assert_eq!(h["reporting_value"]["currency"], to);
                sum += expected;
            }
            let converted = &position["reporting"];
            assert_eq!(dec(&converted["value"]["amount"]), sum, "{position}");
            // The position names every rate it used, with its date and source.
            for rate in converted["rates"].as_array().unwrap() {
                assert_eq!(rate["to"], to);
                assert_eq!(rate["date"], "2022-04-29");
                assert_eq!(rate["source"], "ecb");
                assert_eq!(
                    dec(&rate["rate"]),
                    by_hand(rate["from"].as_str().unwrap(), to)
                );
            }
            total += sum;
        }
        // The figures add up: the total is the sum of the parts.
        assert_eq!(dec(&reporting["total_value"]["amount"]), total);
        let by_account: Decimal = reporting["by_account"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| dec(&s["value"]["amount"]))
            .sum();
        assert_eq!(by_account, total);
        // Demo Alice holds in more than one currency, so something was converted.
        assert!(held_in.len() > 1, "{held_in:?}");
        let used: Vec<&str> = reporting["rates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["from"].as_str().unwrap())
            .collect();
        let mut foreign: Vec<&str> = held_in
            .iter()
            .map(String::as_str)
            .filter(|c| *c != to)
            .collect();
        foreign.sort_unstable();
        assert_eq!(used, foreign);
    }

    // A hand-computed figure: 1000.00 USD at the recording's rates.
    let table = app
        .app
        .ctx
        .fx
        .latest(&app.app.ctx.store)
        .await
        .unwrap()
        .unwrap();
    let usd = finsync::domain::Money::new(lit("1000.00"), "USD".parse().unwrap());
    let eur = table.convert(usd, "EUR".parse().unwrap()).unwrap().0;
    let gbp = table.convert(usd, "GBP".parse().unwrap()).unwrap().0;
    assert_eq!((eur.amount, gbp.amount), (lit("948.77"), lit("796.09")));
}

#[tokio::test]
async fn a_missing_rate_is_shown_never_counted_as_zero() {
    let app = TestApp::builder().tenant("advisor").sqlite().build().await;
    let tenant = app.tenant();
    app.link_and_sync_at(tenant.id, "demo-alice", "meridian")
        .await;

    // Before any rate is stored, only what is held in USD converts to USD.
    let body = app
        .get_json(
            "/v1/users/demo-alice/positions?currency=USD",
            tenant.bearer(),
        )
        .await;
    let reporting = &body["reporting"];
    assert_eq!(reporting["complete"], false);
    assert_eq!(
        reporting["total_value"],
        Value::Null,
        "no total that looks whole"
    );
    let missing: Vec<&str> = reporting["missing_rates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        !missing.is_empty() && !missing.contains(&"USD"),
        "{missing:?}"
    );
    for position in body["positions"].as_array().unwrap() {
        for h in position["holdings"].as_array().unwrap() {
            let from = h["value"]["currency"].as_str().unwrap();
            if from == "USD" {
                assert_eq!(h["reporting_value"], h["value"]);
            } else {
                assert_eq!(h["reporting_value"], Value::Null, "{h}");
                assert_eq!(position["reporting"]["value"], Value::Null);
                assert!(missing.contains(&from));
            }
        }
    }

    // With rates, a currency the provider does not publish is still a gap.
    app.app.ctx.fx.refresh(&app.app.ctx.store).await.unwrap();
    let body = app
        .get_json(
            "/v1/users/demo-alice/positions?currency=ARS",
            tenant.bearer(),
        )
        .await;
    assert_eq!(body["reporting"]["complete"], false);
    assert_eq!(body["reporting"]["total_value"], Value::Null);

    // Codes that are not ISO 4217 are refused by name.
    for bad in ["ZZZ", "EURO", "12"] {
        let (status, error) = send(
            &app,
            reqwest::Method::GET,
            &format!("/v1/users/demo-alice/positions?currency={bad}"),
            tenant.bearer(),
            None,
        )
        .await;
        assert_eq!(status, 400, "{bad}: {error}");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(bad),
            "{error}"
        );
    }
}

#[tokio::test]
async fn a_household_reads_as_one_in_one_currency() {
    let app = TestApp::builder()
        .tenant("advisor")
        .postgres()
        .build()
        .await;
    let tenant = app.tenant();
    app.link_and_sync_at(tenant.id, "demo-alice", "meridian")
        .await;
    app.link_and_sync_at(tenant.id, "demo-bob", "keystone")
        .await;
    app.app.ctx.fx.refresh(&app.app.ctx.store).await.unwrap();

    let (status, created) = put(
        &app,
        tenant.bearer(),
        "smiths",
        json!({"name": "The Smiths", "members": ["demo-bob", "demo-alice", "demo-carol"]}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["members"],
        json!(["demo-alice", "demo-bob", "demo-carol"])
    );

    let body = app
        .get_json(
            "/v1/households/smiths/positions?currency=EUR",
            tenant.bearer(),
        )
        .await;
    assert_eq!(body["name"], "The Smiths");
    assert_eq!(body["members_without_data"], json!(["demo-carol"]));
    // Every holding of both members is in exactly one position, naming its member.
    let mut counted: BTreeMap<String, usize> = BTreeMap::new();
    for position in body["positions"].as_array().unwrap() {
        let parts = position["holdings"].as_array().unwrap();
        let sum: Decimal = parts.iter().map(|h| dec(&h["quantity"])).sum();
        assert_eq!(dec(&position["quantity"]), sum, "{position}");
        for h in parts {
            *counted
                .entry(h["user_id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    for user in ["demo-alice", "demo-bob"] {
        let own = app
            .get_json(&format!("/v1/users/{user}/holdings"), tenant.bearer())
            .await;
        assert_eq!(
            counted.get(user).copied().unwrap_or_default(),
            own["holdings"].as_array().unwrap().len(),
            "{user}"
        );
    }
    assert_eq!(body["reporting"]["complete"], true);
    assert_eq!(body["reporting"]["currency"], "EUR");

    // The household's net worth adds the members' portfolio totals per currency,
    // and in EUR each amount is converted (rounded once) and added.
    let mut worth: BTreeMap<String, Decimal> = BTreeMap::new();
    for user in ["demo-alice", "demo-bob"] {
        let own = app
            .get_json(&format!("/v1/users/{user}/portfolio"), tenant.bearer())
            .await;
        assert_eq!(own["totals_complete"], true, "{user}");
        for (currency, amount) in by_currency(&own["totals"]) {
            *worth.entry(currency).or_default() += amount;
        }
    }
    assert!(worth.len() >= 2, "both dollars and euros: {worth:?}");
    let listed = by_currency(&body["net_worth"]);
    assert_eq!(listed, worth);
    assert_eq!(body["net_worth_complete"], true);
    let in_eur: Decimal = worth
        .iter()
        .map(|(from, amount)| {
            (amount * by_hand(from, "EUR"))
                .round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven)
        })
        .sum();
    assert_eq!(dec(&body["reporting"]["net_worth"]["amount"]), in_eur);
    assert_eq!(body["reporting"]["net_worth"]["currency"], "EUR");

    // A user is in one household at most: the second is refused, nothing changes.
    let (status, refused) = put(
        &app,
        tenant.bearer(),
        "joneses",
        json!({"name": "Joneses", "members": ["demo-bob"]}),
    )
    .await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("smiths")
    );
    let (status, _) = send(
        &app,
        reqwest::Method::GET,
        "/v1/households/joneses",
        tenant.bearer(),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Renaming and dropping a member replaces both.
    let (status, updated) = put(
        &app,
        tenant.bearer(),
        "smiths",
        json!({"name": "Smith family", "members": ["demo-alice"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(updated["members"], json!(["demo-alice"]));
    let list = app.get_json("/v1/households", tenant.bearer()).await;
    assert_eq!(list["households"][0]["name"], "Smith family");

    // Bad input is refused with the reason; another tenant finds nothing.
    for (id, body, why) in [
        (
            "bad id!",
            json!({"name": "x", "members": []}),
            "household id",
        ),
        ("ok", json!({"name": " ", "members": []}), "name"),
        (
            "ok",
            json!({"name": "x", "members": ["no spaces"]}),
            "members",
        ),
    ] {
        let (status, error) = put(&app, tenant.bearer(), &urlencoding(id), body).await;
        assert_eq!(status, 400, "{error}");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(why),
            "{error}"
        );
    }
    let (_, other) = app.app.ctx.store.create_tenant("other").await.unwrap();
    let other = secrecy::ExposeSecret::expose_secret(&other.0).to_owned();
    let (status, _) = send(
        &app,
        reqwest::Method::GET,
        "/v1/households/smiths/positions",
        &other,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let theirs = app.get_json("/v1/households", &other).await;
    assert_eq!(theirs["households"], json!([]));

    // The list pages by id, with the members of each household on its page.
    for id in ["h3", "h1", "h2"] {
        let (status, _) = put(
            &app,
            tenant.bearer(),
            id,
            json!({"name": id, "members": []}),
        )
        .await;
        assert_eq!(status, 201);
    }
    let mut ids = Vec::new();
    let mut path = "/v1/households?limit=2".to_owned();
    loop {
        let page = app.get_json(&path, tenant.bearer()).await;
        let households = page["households"].as_array().unwrap();
        assert!(households.len() <= 2, "{page}");
        for h in households {
            ids.push(h["id"].as_str().unwrap().to_owned());
            if h["id"] == "smiths" {
                assert_eq!(h["members"], json!(["demo-alice"]));
            }
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/households?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(ids, ["h1", "h2", "h3", "smiths"]);
    for bad in ["limit=0", "limit=501", "cursor=nonsense"] {
        let (status, _) = send(
            &app,
            reqwest::Method::GET,
            &format!("/v1/households?{bad}"),
            tenant.bearer(),
            None,
        )
        .await;
        assert_eq!(status, 400, "{bad}");
    }

    let (status, _) = send(
        &app,
        reqwest::Method::DELETE,
        "/v1/households/smiths",
        tenant.bearer(),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = send(
        &app,
        reqwest::Method::GET,
        "/v1/households/smiths",
        tenant.bearer(),
        None,
    )
    .await;
    assert_eq!(status, 404);
}

async fn put(app: &TestApp, bearer: &str, id: &str, body: Value) -> (u16, Value) {
    let path = format!("/v1/households/{id}");
    send(app, reqwest::Method::PUT, &path, bearer, Some(body)).await
}

fn urlencoding(id: &str) -> String {
    id.replace(' ', "%20").replace('!', "%21")
}

#[tokio::test]
async fn totals_add_the_positions_a_balance_leaves_out_once() {
    let app = TestApp::builder().tenant("advisor").sqlite().build().await;
    let tenant = app.tenant();
    app.link_and_sync_at(tenant.id, "demo-alice", "meridian")
        .await;
    let body = app
        .get_json("/v1/users/demo-alice/portfolio", tenant.bearer())
        .await;
    // Meridian's balances cover what is valued in the account's currency.
    let mut expected: BTreeMap<String, Decimal> = BTreeMap::new();
    for account in body["accounts"].as_array().unwrap() {
        assert_eq!(account["balances"]["meaning"], "account_currency_total");
        let own = account["currency"].as_str().unwrap().to_owned();
        let mut worth: BTreeMap<String, Decimal> =
            BTreeMap::from([(own.clone(), dec(&account["balances"]["current"]["amount"]))]);
        for h in body["holdings"].as_array().unwrap() {
            if h["account_id"] != account["id"] || h["value"]["currency"] == own.as_str() {
                continue;
            }
            *worth
                .entry(h["value"]["currency"].as_str().unwrap().to_owned())
                .or_default() += dec(&h["value"]["amount"]);
        }
        let shown: BTreeMap<String, Decimal> = account["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["currency"].as_str().unwrap().to_owned(),
                    dec(&m["amount"]),
                )
            })
            .collect();
        assert_eq!(shown, worth, "{account}");
        for (currency, amount) in worth {
            *expected.entry(currency).or_default() += amount;
        }
    }
    let totals = by_currency(&body["totals"]);
    assert_eq!(totals, expected);
    assert!(
        totals.contains_key("EUR"),
        "the euro positions are in the totals: {totals:?}"
    );
    assert_eq!(body["totals_complete"], true);
}

/// The position of `isin` in a positions answer.
fn position<'a>(body: &'a Value, isin: &str) -> &'a Value {
    body["positions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["instrument"]["isin"] == isin)
        .unwrap_or_else(|| panic!("a position in {isin}: {body}"))
}

#[tokio::test]
async fn a_split_is_recorded_against_the_master_and_cost_per_unit_follows_it() {
    let app = TestApp::builder().tenant("advisor").sqlite().build().await;
    let tenant = app.tenant();
    let meridian = app
        .link_and_sync_at(tenant.id, "demo-alice", "meridian")
        .await;
    let before = app
        .get_json("/v1/users/demo-alice/positions", tenant.bearer())
        .await;
    for epoch in 1..=3 {
        assert_eq!(app.sandbox().advance(), epoch);
        app.resync(meridian, &format!("epoch-{epoch}")).await;
    }
    let after = app
        .get_json("/v1/users/demo-alice/positions", tenant.bearer())
        .await;
    let split: Vec<&Value> = after["positions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["instrument"]["splits"] != json!([]))
        .collect();
    assert_eq!(split.len(), 1, "one equity split at epoch 3: {after}");
    let split = split[0];
    let recorded = &split["instrument"]["splits"][0];
    assert_eq!(recorded["ratio"], "2-for-1");
    assert_eq!(
        (recorded["new"].as_u64(), recorded["old"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(recorded["source"], "institution");
    // The day of the institution's split transaction.
    let transactions = app
        .get_json(
            "/v1/users/demo-alice/transactions?type=split",
            tenant.bearer(),
        )
        .await;
    assert_eq!(recorded["date"], transactions["transactions"][0]["date"]);

    // Twice the shares at the same cost: the cost per unit halves.
    let isin = split["instrument"]["isin"].as_str().unwrap();
    let old = position(&before, isin);
    let old_cost = dec(&old["cost_basis"][0]["amount"]);
    let new_cost = dec(&split["cost_basis"][0]["amount"]);
    assert_eq!(
        dec(&split["quantity"]),
        dec(&old["quantity"]) * Decimal::TWO
    );
    let per_unit = |cost: Decimal, quantity: Decimal| {
        (cost / quantity).round_dp_with_strategy(6, RoundingStrategy::MidpointNearestEven)
    };
    assert_eq!(
        dec(&split["cost_basis_per_unit"]["amount"]),
        per_unit(new_cost, dec(&split["quantity"]))
    );
    assert_eq!(
        dec(&old["cost_basis_per_unit"]["amount"]),
        per_unit(old_cost, dec(&old["quantity"]))
    );
    assert_eq!(new_cost, old_cost, "the split moved no money");
    let halved = per_unit(old_cost, dec(&old["quantity"]) * Decimal::TWO);
    assert_eq!(dec(&split["cost_basis_per_unit"]["amount"]), halved);

    // Recorded against the master's instrument, which every connection holding
    // the ISIN shares (see the securities tests), not against this connection.
    let instrument = split["instrument"]["id"].as_str().unwrap().to_owned();
    let stored = app
        .app
        .ctx
        .store
        .splits(std::slice::from_ref(&instrument))
        .await
        .unwrap();
    assert_eq!(stored[&instrument].len(), 1);
    // The same split seen again within a week (a jump detected days later) is
    // the same split; another ratio is another.
    let store = &app.app.ctx.store;
    let seen = |days: u64, new: u32| finsync::domain::Split {
        security_external_id: "any".into(),
        ratio: finsync::domain::SplitRatio { new, old: 1 },
        date: NaiveDate::parse_from_str(recorded["date"].as_str().unwrap(), "%Y-%m-%d")
            .unwrap()
            .checked_add_days(chrono::Days::new(days))
            .unwrap(),
        source: finsync::domain::SplitSource::Detected,
    };
    let again = store
        .record_splits(meridian, &[(instrument.clone(), seen(3, 2))])
        .await
        .unwrap();
    assert!(
        again.is_empty(),
        "a 2-for-1 three days later is the same split"
    );
    let other = store
        .record_splits(meridian, &[(instrument.clone(), seen(3, 3))])
        .await
        .unwrap();
    assert_eq!(other, vec![instrument.clone()]);
    let later = store
        .record_splits(meridian, &[(instrument.clone(), seen(30, 2))])
        .await
        .unwrap();
    assert_eq!(later, vec![instrument.clone()]);
    assert_eq!(
        store
            .splits(std::slice::from_ref(&instrument))
            .await
            .unwrap()[&instrument]
            .len(),
        3
    );
}
