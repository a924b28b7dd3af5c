//! Cloud Pub/Sub push envelopes: what a `google-pubsub` source unwraps.
//!
//! A push subscription with wrapped delivery (the default) posts
//! `{"message":{"data":"<base64>","attributes":{…},"messageId":"…","publishTime":"…"},
//! "subscription":"projects/P/subscriptions/S","deliveryAttempt":N}`. The message's
//! decoded `data` is what the publisher sent, so it is what a source forwards; the
//! `messageId` is the same on every redelivery, so it is the dedupe key. Ids and times
//! come in both camelCase and snake_case (`message_id`, `publish_time`); camelCase wins
//! when both are present.
//!
//! [`PushEnvelope::parse`] is also how a consumer of the request log (the job tracker)
//! reads the attributes of a logged push.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use hookline_core::Code;
use serde_json::Value;

use crate::pipeline::Refusal;

/// The longest `messageId` taken (Pub/Sub's are decimal numbers of about 16 digits).
const MAX_ID_LEN: usize = 256;

/// The base64 that protobuf's JSON mapping reads for `bytes`: the standard or the URL-safe
/// alphabet, padded or not. Pub/Sub writes standard, padded base64.
const STANDARD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One pushed message, unwrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEnvelope {
    /// `message.messageId` (or `message.message_id`): the same on every redelivery.
    pub message_id: String,
    /// `message.data`, decoded; empty when the message has none (attributes only).
    pub data: Vec<u8>,
    /// `message.attributes`.
    pub attributes: BTreeMap<String, String>,
    /// `message.publishTime` (or `publish_time`), RFC 3339, as sent.
    pub publish_time: Option<String>,
    /// `message.orderingKey` (or `ordering_key`).
    pub ordering_key: Option<String>,
    /// `subscription`: `projects/P/subscriptions/S`.
    pub subscription: Option<String>,
    /// `deliveryAttempt`, present when the subscription has a dead-letter policy.
    pub delivery_attempt: Option<u64>,
}

fn malformed(reason: impl Into<String>) -> Refusal {
    Refusal {
        code: Code::MalformedEnvelope,
        reason: reason.into(),
    }
}

impl PushEnvelope {
    /// Parses a push request's body.
    pub fn parse(body: &[u8]) -> Result<PushEnvelope, Refusal> {
        let value: Value = serde_json::from_slice(body).map_err(|error| {
            malformed(format!(
                "the body is not a Pub/Sub push envelope: it is not JSON ({error})"
            ))
        })?;
        PushEnvelope::from_value(&value)
    }

    /// Reads an envelope from a body already parsed as JSON.
    pub fn from_value(body: &Value) -> Result<PushEnvelope, Refusal> {
        let Some(message) = body.get("message").and_then(Value::as_object) else {
            return Err(malformed(
                "the body has no `message` object: a Pub/Sub push envelope is \
                 {\"message\": {\"data\", \"messageId\", …}, \"subscription\"} \
                 (is the subscription set to unwrapped delivery? this type takes wrapped \
                 delivery)",
            ));
        };
        let member = |camel: &str, snake: &str| -> Result<Option<&str>, Refusal> {
            match message.get(camel).or_else(|| message.get(snake)) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(text)) => Ok(Some(text)),
                Some(_) => Err(malformed(format!("message.{camel} is not a string"))),
            }
        };
        let message_id = member("messageId", "message_id")?
            .filter(|id| !id.is_empty())
            .ok_or_else(|| malformed("the message has no messageId (nor message_id)"))?;
        if message_id.len() > MAX_ID_LEN || message_id.chars().any(char::is_control) {
            return Err(malformed(format!(
                "message.messageId is longer than {MAX_ID_LEN} bytes or holds control \
                 characters"
            )));
        }
        let data = match message.get("data") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(encoded)) => STANDARD
                .decode(encoded)
                .or_else(|_| URL_SAFE.decode(encoded))
                .map_err(|error| {
                    malformed(format!("message.data is not valid base64 ({error})"))
                })?,
            Some(_) => return Err(malformed("message.data is not a string")),
        };
        let attributes = match message.get("attributes") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(name, value)| match value {
                    Value::String(text) => Ok((name.clone(), text.clone())),
                    _ => Err(malformed(format!(
                        "message.attributes.{name} is not a string"
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(malformed("message.attributes is not an object")),
        };
        Ok(PushEnvelope {
            message_id: message_id.to_owned(),
            data,
            attributes,
            publish_time: member("publishTime", "publish_time")?.map(str::to_owned),
            ordering_key: member("orderingKey", "ordering_key")?.map(str::to_owned),
            subscription: body
                .get("subscription")
                .and_then(Value::as_str)
                .map(str::to_owned),
            delivery_attempt: body.get("deliveryAttempt").and_then(Value::as_u64),
        })
    }
}

/// Encodes `data` as Pub/Sub writes it in an envelope (standard, padded base64).
pub fn encode_data(data: &[u8]) -> String {
    general_purpose::STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A push as the Pub/Sub documentation shows it, with both spellings of the ids.
    const DOCUMENTED: &str = r#"{
        "message": {
            "attributes": {"key": "value", "type": "batch.succeeded"},
            "data": "SGVsbG8gQ2xvdWQgUHViL1N1YiEgSGVyZSBpcyBteSBtZXNzYWdlIQ==",
            "messageId": "2070443601311540",
            "message_id": "2070443601311540",
            "publishTime": "2021-02-26T19:13:55.749Z",
            "publish_time": "2021-02-26T19:13:55.749Z",
            "orderingKey": "job-7"
        },
        "subscription": "projects/myproject/subscriptions/mysubscription",
        "deliveryAttempt": 3
    }"#;

    #[test]
    fn a_documented_push_unwraps_into_its_message() {
        let envelope = PushEnvelope::parse(DOCUMENTED.as_bytes()).unwrap();
        assert_eq!(
            envelope,
            PushEnvelope {
                message_id: "2070443601311540".into(),
                data: b"Hello Cloud Pub/Sub! Here is my message!".to_vec(),
                attributes: BTreeMap::from([
                    ("key".into(), "value".into()),
                    ("type".into(), "batch.succeeded".into()),
                ]),
                publish_time: Some("2021-02-26T19:13:55.749Z".into()),
                ordering_key: Some("job-7".into()),
                subscription: Some("projects/myproject/subscriptions/mysubscription".into()),
                delivery_attempt: Some(3),
            }
        );
    }

    #[test]
    fn snake_case_ids_unpadded_and_url_safe_data_and_attribute_only_messages_are_read() {
        let envelope = PushEnvelope::from_value(&json!({
            "message": {"message_id": "42", "data": "-_8", "publish_time": "t"}
        }))
        .unwrap();
        assert_eq!(envelope.message_id, "42");
        assert_eq!(envelope.data, [0xfb, 0xff]);
        assert_eq!(envelope.publish_time.as_deref(), Some("t"));
        assert_eq!(
            (envelope.subscription, envelope.delivery_attempt),
            (None, None)
        );

        let envelope = PushEnvelope::from_value(&json!({
            "message": {"messageId": "43", "attributes": {"eventType": "OBJECT_FINALIZE"}}
        }))
        .unwrap();
        assert!(envelope.data.is_empty(), "no data: an empty body");
        assert_eq!(encode_data(b"Hello"), "SGVsbG8=");
        assert_eq!(
            PushEnvelope::from_value(&json!({"message": {"messageId": "44", "data": "SGVsbG8"}}))
                .unwrap()
                .data,
            b"Hello"
        );
    }

    #[test]
    fn malformed_envelopes_are_refused_with_the_reason() {
        let cases: [(&[u8], &str); 11] = [
            (b"not json", "it is not JSON"),
            (b"[1]", "no `message` object"),
            (br#"{"data": "SGk="}"#, "no `message` object"),
            (br#"{"message": "SGk="}"#, "no `message` object"),
            (
                br#"{"message": {"data": "SGk="}}"#,
                "no messageId (nor message_id)",
            ),
            (br#"{"message": {"messageId": ""}}"#, "no messageId"),
            (
                br#"{"message": {"messageId": 7}}"#,
                "message.messageId is not a string",
            ),
            (
                br#"{"message": {"messageId": "1", "data": "!!!"}}"#,
                "message.data is not valid base64",
            ),
            (
                br#"{"message": {"messageId": "1", "data": 12}}"#,
                "message.data is not a string",
            ),
            (
                br#"{"message": {"messageId": "1", "attributes": {"n": 1}}}"#,
                "message.attributes.n is not a string",
            ),
            (
                br#"{"message": {"messageId": "1\u0000"}}"#,
                "control characters",
            ),
        ];
        for (body, reason) in cases {
            let refusal = PushEnvelope::parse(body).unwrap_err();
            assert_eq!(refusal.code, Code::MalformedEnvelope);
            assert!(
                refusal.reason.contains(reason),
                "{}: {:?} lacks {reason:?}",
                String::from_utf8_lossy(body),
                refusal.reason
            );
        }
    }
}
