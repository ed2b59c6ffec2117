//! The European Central Bank's euro foreign exchange reference rates, as it
//! publishes them in XML (`eurofxref-daily.xml`, `eurofxref-hist-90d.xml`,
//! `eurofxref-hist.xml`): one `<Cube time="YYYY-MM-DD">` per TARGET working day,
//! holding one `<Cube currency="USD" rate="1.0540"/>` per currency, each the
//! units of that currency one euro bought at about 16:00 CET.

use chrono::NaiveDate;
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use rust_decimal::Decimal;

use crate::domain::{Currency, Rate};

/// The name rates from the ECB are stored and shown under.
pub const SOURCE: &str = "ecb";

/// The ECB's own address of the last 90 days' rates (a day the ECB did not
/// publish on is filled by the next fetch).
pub const DEFAULT_URL: &str = "https://www.ecb.europa.eu/stats/eurofxref/eurofxref-hist-90d.xml";

/// Reads an ECB rates document. Refuses, saying where, a document that is not
/// one: a rate outside a dated cube, a date or rate that does not parse, a rate
/// not above zero, or no rate at all.
pub fn parse(xml: &str) -> Result<Vec<Rate>, String> {
    let euro: Currency = "EUR".parse().map_err(|_| "EUR".to_owned())?;
    let mut reader = Reader::from_str(xml);
    let mut day: Option<NaiveDate> = None;
    let mut rates = Vec::new();
    loop {
        let event = reader.read_event().map_err(|e| {
            format!(
                "not well-formed XML at byte {}: {e}",
                reader.error_position()
            )
        })?;
        let cube = match &event {
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == "Cube" => e,
            Event::Eof => break,
            _ => continue,
        };
        if let Some(time) = attribute(cube, "time")? {
            let parsed = NaiveDate::parse_from_str(&time, "%Y-%m-%d")
                .map_err(|_| format!("Cube time `{time}` is not a date (YYYY-MM-DD)"))?;
            day = Some(parsed);
            continue;
        }
        let (Some(code), Some(rate)) = (attribute(cube, "currency")?, attribute(cube, "rate")?)
        else {
            continue;
        };
        let date = day.ok_or_else(|| format!("the {code} rate is outside a dated Cube"))?;
        let quote: Currency = code
            .parse()
            .map_err(|_| format!("Cube currency `{code}` is not a currency code"))?;
        let value = Decimal::from_str_exact(rate.trim())
            .ok()
            .filter(|r| *r > Decimal::ZERO)
            .ok_or_else(|| {
                format!("the {code} rate of {date} (`{rate}`) is not a positive decimal")
            })?;
        rates.push(Rate {
            base: euro,
            quote,
            rate: value,
            date,
            source: SOURCE.to_owned(),
        });
    }
    if rates.is_empty() {
        return Err("no rates in the document (is it the ECB's eurofxref XML?)".to_owned());
    }
    Ok(rates)
}

fn attribute(element: &BytesStart<'_>, name: &str) -> Result<Option<String>, String> {
    let attribute = element
        .try_get_attribute(name)
        .map_err(|e| format!("a Cube's attributes do not parse: {e}"))?;
    Ok(attribute.map(|a| a.value.into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAILY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01" xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref">
	<gesmes:subject>Reference rates</gesmes:subject>
	<gesmes:Sender>
		<gesmes:name>European Central Bank</gesmes:name>
	</gesmes:Sender>
	<Cube>
		<Cube time='2022-04-29'>
			<Cube currency='USD' rate='1.0540'/>
			<Cube currency='JPY' rate='137.01'/>
			<Cube currency='GBP' rate='0.83908'/>
		</Cube>
		<Cube time='2022-04-28'>
			<Cube currency='USD' rate='1.0503'/>
		</Cube>
	</Cube>
</gesmes:Envelope>"#;

    #[test]
    fn every_day_and_rate_is_read_exactly() {
        let rates = parse(DAILY).unwrap();
        assert_eq!(rates.len(), 4);
        let gbp = &rates[2];
        assert_eq!(
            (gbp.base.as_str(), gbp.quote.as_str(), gbp.rate.to_string()),
            ("EUR", "GBP", "0.83908".to_owned())
        );
        assert_eq!(gbp.date, NaiveDate::from_ymd_opt(2022, 4, 29).unwrap());
        assert_eq!(rates[0].rate.to_string(), "1.0540", "the scale is kept");
        assert_eq!(rates[3].date, NaiveDate::from_ymd_opt(2022, 4, 28).unwrap());
    }

    #[test]
    fn documents_that_are_not_rates_are_refused_with_the_reason() {
        let refused = |xml: &str| parse(xml).unwrap_err();
        assert!(refused("<html><body>Maintenance</body></html>").contains("no rates"));
        assert!(
            refused("<Cube><Cube currency='USD' rate='1.05'/></Cube>")
                .contains("outside a dated Cube")
        );
        assert!(
            refused("<Cube time='2022-04-29'><Cube currency='USD' rate='1,05'/></Cube>")
                .contains("(`1,05`) is not a positive decimal")
        );
        assert!(
            refused("<Cube time='2022-04-29'><Cube currency='USD' rate='0'/></Cube>")
                .contains("not a positive decimal")
        );
        assert!(refused("<Cube time='29/04/2022'></Cube>").contains("not a date"));
        assert!(
            refused("<Cube time='2022-04-29'><Cube currency='US1' rate='1'/></Cube>")
                .contains("not a currency code")
        );
        let truncated = "<Cube time='2022-04-29'><Cube currency='USD' rate='1'";
        assert!(
            parse(truncated).is_err(),
            "a document cut short stores nothing"
        );
    }
}
