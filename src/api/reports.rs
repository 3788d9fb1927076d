//! Reading the ledger over HTTP: `GET /v1/ledger` (paged rows, filtered by time and model),
//! `GET /v1/ledger/summary` (totals and savings by day or model) and `GET /dashboard`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::ledger::{report, Filter, GroupBy, Ledger};

use super::dashboard;
use super::error::ApiError;
use super::AppState;

const MAX_LIMIT: usize = 1000;

fn ledger(st: &AppState) -> Result<std::sync::Arc<Ledger>, ApiError> {
    st.ledger().ok_or_else(|| ApiError::not_found("/v1/ledger (this server keeps no ledger)"))
}

/// Reads the query, refusing parameters it does not know.
fn params<'a>(q: &'a HashMap<String, String>, known: &[&str]) -> Result<impl Fn(&str) -> Option<&'a str> + 'a, ApiError> {
    if let Some(k) = q.keys().find(|k| !known.contains(&k.as_str())) {
        let mut e = ApiError::invalid(k, format!("unknown query parameter `{k}`; known: {}", known.join(", ")));
        e.code = Some("unknown_parameter");
        return Err(e);
    }
    Ok(move |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty()))
}

fn filter<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<Filter, ApiError> {
    let now = chrono::Utc::now().timestamp_millis();
    let time = |name: &str| -> Result<Option<i64>, ApiError> {
        get(name).map(|v| report::parse_since(v, now).map_err(|e| ApiError::invalid(name, e.to_string()))).transpose()
    };
    Ok(Filter { since_ms: time("since")?, until_ms: time("until")?, model: get("model").map(str::to_owned), instance: get("instance").map(str::to_owned) })
}

fn number(v: Option<&str>, name: &str, max: usize, default: usize) -> Result<usize, ApiError> {
    match v {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(ApiError::invalid(name, format!("`{name}` must be a whole number from 0 to {max}, got `{v}`"))),
        },
    }
}

fn group_by(v: Option<&str>) -> Result<GroupBy, ApiError> {
    match v.unwrap_or("day") {
        "day" => Ok(GroupBy::Day),
        "model" => Ok(GroupBy::Model),
        "instance" => Ok(GroupBy::Instance),
        other => Err(ApiError::invalid("group_by", format!("`group_by` must be `day`, `model` or `instance`, got `{other}`"))),
    }
}

/// Runs a ledger read off the async runtime.
async fn read<T: Send + 'static>(l: std::sync::Arc<Ledger>, f: impl FnOnce(&Ledger) -> Result<T, crate::ledger::LedgerError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || f(&l)).await.map_err(ApiError::internal)?.map_err(ApiError::internal)
}

pub async fn rows(State(st): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    let l = ledger(&st)?;
    let get = params(&q, &["since", "until", "model", "instance", "limit", "offset"])?;
    let f = filter(&get)?;
    let limit = number(get("limit"), "limit", MAX_LIMIT, 100)?;
    let offset = number(get("offset"), "offset", usize::MAX >> 1, 0)?;
    let (data, total) = read(l, move |l| l.rows(&f, limit, offset)).await?;
    let has_more = (offset + data.len()) < total as usize;
    Ok(Json(json!({ "object": "list", "data": data, "total": total, "limit": limit, "offset": offset, "has_more": has_more })).into_response())
}

pub async fn summary(State(st): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    let l = ledger(&st)?;
    let get = params(&q, &["since", "until", "model", "instance", "group_by"])?;
    let f = filter(&get)?;
    let by = group_by(get("group_by"))?;
    let s = read(l, move |l| l.summary(&f, by)).await?;
    Ok(Json(s).into_response())
}

pub async fn dashboard(State(st): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    let l = ledger(&st)?;
    let get = params(&q, &["since"])?;
    let f = filter(&get)?;
    let (days, models, instances) = read(l, move |l| Ok((l.summary(&f, GroupBy::Day)?, l.summary(&f, GroupBy::Model)?, l.summary(&f, GroupBy::Instance)?))).await?;
    Ok(Html(dashboard::page(&days, &models, &instances)).into_response())
}
