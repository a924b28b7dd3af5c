//! What the tests of `google-pubsub` share: the fixture keys of `hookline-signature`, the
//! tokens Google would sign with them, and push envelopes.

use hookline_signature::oidc::{Jwks, SigningKey};
use serde_json::{Value, json};

use crate::pubsub::encode_data;

pub const AUDIENCE: &str = "https://hooks.example.com/in/tok_pubsub";
pub const EMAIL: &str = "pubsub-push@project-1.iam.gserviceaccount.com";
pub const KID: &str = "google-key-1";

/// The key Google signs with (`KID` in [`jwks`]).
pub fn key() -> SigningKey {
    SigningKey::from_pkcs8(include_bytes!(
        "../../hookline-signature/testdata/oidc-rsa-1.pk8"
    ))
    .expect("fixture key")
}

/// A key that is not Google's.
pub fn other_key() -> SigningKey {
    SigningKey::from_pkcs8(include_bytes!(
        "../../hookline-signature/testdata/oidc-rsa-2.pk8"
    ))
    .expect("fixture key")
}

/// Google's key set: [`key`] as [`KID`].
pub fn jwks() -> Jwks {
    let document = json!({ "keys": [key().jwk(KID)] });
    Jwks::parse(document.to_string().as_bytes()).expect("fixture JWKS")
}

/// The claims of a push token issued at `iat`, valid for an hour.
pub fn claims(iat: i64) -> Value {
    json!({
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "azp": "1234567890",
        "sub": "1234567890",
        "email": EMAIL,
        "email_verified": true,
        "iat": iat,
        "exp": iat.saturating_add(3600),
    })
}

/// The `authorization` header of a push, signed by [`key`] with these claims.
pub fn authorization(claims: &Value) -> (String, String) {
    (
        "authorization".to_owned(),
        format!("Bearer {}", key().sign(KID, claims)),
    )
}

/// A wrapped push of `data` as message `id`.
pub fn envelope(id: &str, data: &[u8], attributes: Value) -> Vec<u8> {
    json!({
        "message": {
            "data": encode_data(data),
            "attributes": attributes,
            "messageId": id,
            "message_id": id,
            "publishTime": "2026-01-01T00:00:00.000Z",
            "publish_time": "2026-01-01T00:00:00.000Z",
        },
        "subscription": "projects/project-1/subscriptions/hookline",
    })
    .to_string()
    .into_bytes()
}

/// The config of a `google-pubsub` source for [`AUDIENCE`] and [`EMAIL`].
pub fn config() -> Value {
    json!({ "audience": AUDIENCE, "serviceAccountEmail": EMAIL })
}
