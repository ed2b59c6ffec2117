//! A recorded exchange-rate publication, served the way its publisher serves it,
//! so reporting currencies can be shown and tested without the internet: the
//! European Central Bank's euro foreign exchange reference rates of 29 April 2022
//! (ECB data, free to reuse with the source named), in the ECB's XML, at
//! `/fx/eurofxref-daily.xml`. It is one day as published: the date every
//! conversion states is that day's.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;

/// The recorded document, byte for byte as the ECB's daily file is laid out.
pub const ECB_DAILY: &str = include_str!("ecb-eurofxref-2022-04-29.xml");

/// The path the recorded rates are served at.
pub const ECB_DAILY_PATH: &str = "/fx/eurofxref-daily.xml";

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new().route(ECB_DAILY_PATH, get(ecb_daily))
}

async fn ecb_daily() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/xml")], ECB_DAILY)
}
