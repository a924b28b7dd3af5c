//! The receiving side: the Svix Ingest API under `/ingest/api/v1` (sources, their
//! forwarding endpoints, request log and live stream) and `/in/{token}`, where providers'
//! webhooks arrive, with the key sets some types check tokens with ([`keys`]).

pub mod endpoint;
pub mod keys;
pub mod receive;
mod requests;
pub mod source;
pub mod stream;

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

/// Every route under `/ingest/api/v1`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(source::router())
        .merge(endpoint::router())
        .merge(stream::router())
        .merge(requests::router())
}
