//! A delivery job for unit tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use hookline_core::id::{AppId, EndpointId, MessageId};
use hookline_core::model::{
    Destination, Endpoint, EndpointSecret, Message, MessageStatus, TriggerType,
};
use hookline_core::store::DeliveryJob;

/// The secret of [`job`]'s endpoint.
pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A first, scheduled delivery of `{"a":1}` from `app_1` / `msg_1` to `ep_1`.
pub(crate) fn job() -> DeliveryJob {
    let now = Utc::now();
    let app_id = AppId::from_string("app_1".into());
    let endpoint_id = EndpointId::from_string("ep_1".into());
    let msg_id = MessageId::from_string("msg_1".into());
    DeliveryJob {
        destination: Destination {
            app_id: app_id.clone(),
            msg_id: msg_id.clone(),
            endpoint_id: endpoint_id.clone(),
            status: MessageStatus::Sending,
            next_attempt: Some(now),
            attempts: 0,
            trigger: TriggerType::Scheduled,
            updated_at: now,
        },
        message: Arc::new(Message {
            id: msg_id,
            app_id: app_id.clone(),
            event_id: Some("evt-9".into()),
            event_type: "job.succeeded".into(),
            payload: Some(r#"{"a":1}"#.into()),
            channels: None,
            headers: Default::default(),
            created_at: now,
        }),
        endpoint: Arc::new(Endpoint {
            id: endpoint_id,
            app_id,
            uid: Some("ep-uid".into()),
            url: "https://example.test/hook".into(),
            description: String::new(),
            disabled: false,
            throttle_rate: None,
            event_types: None,
            channels: None,
            metadata: BTreeMap::new(),
            headers: BTreeMap::new(),
            secrets: vec![EndpointSecret {
                key: SECRET.into(),
                expires_at: None,
            }],
            failing_since: None,
            created_at: now,
            updated_at: now,
        }),
        app_uid: Some("app-uid".into()),
        app_throttle_rate: None,
    }
}
