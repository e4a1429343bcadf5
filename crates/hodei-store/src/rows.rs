//! Engine-neutral helpers for turning rows into core records.

use std::collections::BTreeMap;

use crate::StoreError;

pub(crate) fn json_map(m: &BTreeMap<String, String>) -> String {
    serde_json::to_string(m).unwrap_or_else(|_| "{}".to_owned())
}

pub(crate) fn json_vec(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
}

pub(crate) fn parse_map(doing: &'static str, s: &str) -> Result<BTreeMap<String, String>, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt { doing, detail: e.to_string() })
}

pub(crate) fn parse_vec(doing: &'static str, s: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt { doing, detail: e.to_string() })
}

pub(crate) fn parse_enum<T: std::str::FromStr>(doing: &'static str, s: &str) -> Result<T, StoreError> {
    s.parse().map_err(|_| StoreError::Corrupt { doing, detail: format!("unknown value {s:?}") })
}

pub(crate) fn parse_slug<T>(doing: &'static str, s: &str, f: impl Fn(&str) -> Result<T, hodei_core::SlugError>) -> Result<T, StoreError> {
    f(s).map_err(|e| StoreError::Corrupt { doing, detail: e.to_string() })
}

pub(crate) fn u32_of(doing: &'static str, v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt { doing, detail: format!("{v} out of range") })
}
