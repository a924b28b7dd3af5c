//! Partial updates (PATCH): what each resource lets a caller change, and the one rule that
//! applies them. A field left out keeps its value; a field given replaces it; `null`
//! clears a field that may be empty and is refused for one that may not.
//!
//! The bodies deserialize straight from the API's camelCase JSON, so the HTTP layer only
//! validates them and calls `apply`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};

use crate::ingest::Source;
use crate::model::{Application, Endpoint, EventType};

/// For a nullable PATCH field: absent is `None`, `null` is `Some(None)`, a value is
/// `Some(Some(value))`. Use with `#[serde(default, deserialize_with = "nullable")]`.
pub fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// For a PATCH field that may be absent but not `null`. Use with
/// `#[serde(default, deserialize_with = "non_null")]`.
pub fn non_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    match Option::<T>::deserialize(deserializer)? {
        Some(value) => Ok(Some(value)),
        None => Err(serde::de::Error::custom("may be left out but not null")),
    }
}

/// Replaces `field` with `value` when one was given.
fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

/// `PATCH /api/v1/app/{app_id}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationPatch {
    #[serde(default, deserialize_with = "non_null")]
    #[schema(value_type = String)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub uid: Option<Option<String>>,
    #[serde(default, alias = "rateLimit", deserialize_with = "nullable")]
    #[schema(value_type = Option<u16>)]
    pub throttle_rate: Option<Option<u16>>,
    #[serde(default, deserialize_with = "non_null")]
    #[schema(value_type = BTreeMap<String, String>)]
    pub metadata: Option<BTreeMap<String, String>>,
}

impl ApplicationPatch {
    pub fn apply(self, app: &mut Application, now: DateTime<Utc>) {
        set(&mut app.name, self.name);
        set(&mut app.uid, self.uid);
        set(&mut app.throttle_rate, self.throttle_rate);
        set(&mut app.metadata, self.metadata);
        app.updated_at = now;
    }
}

/// `PATCH /api/v1/app/{app_id}/endpoint/{endpoint_id}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPatch {
    #[serde(default, deserialize_with = "non_null")]
    #[schema(value_type = String)]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub uid: Option<Option<String>>,
    #[serde(default, deserialize_with = "non_null")]
    #[schema(value_type = String)]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    #[schema(value_type = bool)]
    pub disabled: Option<bool>,
    #[serde(default, alias = "rateLimit", deserialize_with = "nullable")]
    #[schema(value_type = Option<u16>)]
    pub throttle_rate: Option<Option<u16>>,
    #[serde(default, alias = "filterTypes", deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>)]
    pub event_types: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>)]
    pub channels: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "non_null")]
    #[schema(value_type = BTreeMap<String, String>)]
    pub metadata: Option<BTreeMap<String, String>>,
}

impl EndpointPatch {
    /// Applies the patch; whether it sets `disabled` (which the store then writes, see
    /// [`crate::store::ResourceStore::update_endpoint`]).
    pub fn apply(self, endpoint: &mut Endpoint, now: DateTime<Utc>) -> bool {
        let sets_disabled = self.disabled.is_some();
        set(&mut endpoint.url, self.url);
        set(&mut endpoint.uid, self.uid);
        set(&mut endpoint.description, self.description);
        set(&mut endpoint.disabled, self.disabled);
        set(&mut endpoint.throttle_rate, self.throttle_rate);
        set(&mut endpoint.event_types, self.event_types);
        set(&mut endpoint.channels, self.channels);
        set(&mut endpoint.metadata, self.metadata);
        endpoint.updated_at = now;
        sets_disabled
    }
}

/// `PATCH /api/v1/event-type/{event_type_name}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypePatch {
    #[serde(default, deserialize_with = "non_null")]
    #[schema(value_type = String)]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "non_null")]
    #[schema(value_type = bool)]
    pub archived: Option<bool>,
    #[serde(default, deserialize_with = "non_null")]
    #[schema(value_type = bool)]
    pub deprecated: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    pub schemas: Option<Option<serde_json::Value>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub feature_flag: Option<Option<String>>,
}

impl EventTypePatch {
    pub fn apply(self, event_type: &mut EventType, now: DateTime<Utc>) {
        set(&mut event_type.description, self.description);
        set(&mut event_type.archived, self.archived);
        set(&mut event_type.deprecated, self.deprecated);
        set(&mut event_type.schemas, self.schemas);
        set(&mut event_type.feature_flag, self.feature_flag);
        event_type.updated_at = now;
    }
}

/// `PATCH /ingest/api/v1/source/{source_id}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourcePatch {
    #[serde(default, deserialize_with = "non_null")]
    #[schema(value_type = String)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub uid: Option<Option<String>>,
    #[serde(default, deserialize_with = "non_null")]
    #[schema(value_type = BTreeMap<String, String>)]
    pub metadata: Option<BTreeMap<String, String>>,
}

impl SourcePatch {
    pub fn apply(self, source: &mut Source, now: DateTime<Utc>) {
        set(&mut source.name, self.name);
        set(&mut source.uid, self.uid);
        set(&mut source.metadata, self.metadata);
        source.updated_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{AppId, EndpointId};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn endpoint() -> Endpoint {
        Endpoint {
            id: EndpointId::new_at(at(1)),
            app_id: AppId::new_at(at(1)),
            uid: Some("uid".into()),
            url: "https://a.example".into(),
            description: "d".into(),
            disabled: true,
            throttle_rate: Some(5),
            event_types: Some(vec!["a".into()]),
            channels: Some(vec!["c".into()]),
            metadata: BTreeMap::from([("k".into(), "v".into())]),
            headers: BTreeMap::new(),
            secrets: vec![],
            failing_since: None,
            created_at: at(1),
            updated_at: at(1),
        }
    }

    #[test]
    fn fields_are_tri_state() {
        let absent: ApplicationPatch = serde_json::from_str("{}").unwrap();
        assert_eq!((absent.uid, absent.name), (None, None));
        let null: ApplicationPatch = serde_json::from_str(r#"{"uid": null}"#).unwrap();
        assert_eq!(null.uid, Some(None));
        let value: ApplicationPatch =
            serde_json::from_str(r#"{"uid": "u", "name": "n", "rateLimit": 3}"#).unwrap();
        assert_eq!(value.uid, Some(Some("u".into())));
        assert_eq!(value.name.as_deref(), Some("n"));
        assert_eq!(value.throttle_rate, Some(Some(3)));
        assert!(serde_json::from_str::<ApplicationPatch>(r#"{"name": null}"#).is_err());
    }

    #[test]
    fn an_empty_patch_changes_only_the_update_time() {
        let original = endpoint();
        let mut patched = original.clone();
        let sets_disabled = EndpointPatch::default().apply(&mut patched, at(9));
        assert!(!sets_disabled);
        let mut expected = original;
        expected.updated_at = at(9);
        assert_eq!(patched, expected);
    }

    #[test]
    fn given_fields_replace_and_null_clears() {
        let patch: EndpointPatch = serde_json::from_str(
            r#"{"uid": null, "filterTypes": ["b", "c"], "channels": null, "disabled": false,
                "description": "new"}"#,
        )
        .unwrap();
        let mut patched = endpoint();
        assert!(patch.apply(&mut patched, at(9)));
        assert_eq!(patched.uid, None);
        assert_eq!(patched.event_types, Some(vec!["b".into(), "c".into()]));
        assert_eq!(patched.channels, None);
        assert!(!patched.disabled);
        assert_eq!(patched.description, "new");
        assert_eq!(patched.url, "https://a.example", "left out, kept");
        assert_eq!(patched.throttle_rate, Some(5), "left out, kept");
    }
}
