//! Signing and verifying a 1 KiB body, next to a bare HMAC-SHA256 of the same signed content
//! in the same run. The target is a verify that costs at most 1.3x the bare HMAC.
//!
//! `cargo bench -p hookline-signature --bench signature`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use hookline_signature::{Keyset, Message, Scheme, VerifyOptions};
use sha2::Sha256;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const TIMESTAMP: i64 = 1_700_000_000;

fn bench(c: &mut Criterion) {
    let body = vec![b'x'; 1024];
    let key_bytes = base64_key();
    let keys = Keyset::new(Scheme::Standard, [SECRET]).unwrap();
    let message = Message {
        id: ID,
        timestamp: TIMESTAMP,
        body: &body,
    };
    let headers = keys.sign(&message).unwrap();
    let options = VerifyOptions::default().now(TIMESTAMP);
    let content = [ID.as_bytes(), b".1700000000.", &body].concat();

    let mut group = c.benchmark_group("1KiB");
    group.bench_function("bare_hmac_sha256", |b| {
        b.iter(|| {
            let mut mac = Hmac::<Sha256>::new_from_slice(black_box(&key_bytes)).unwrap();
            mac.update(black_box(&content));
            black_box(mac.finalize().into_bytes())
        })
    });
    group.bench_function("sign_standard", |b| {
        b.iter(|| black_box(keys.sign(black_box(&message)).unwrap()))
    });
    group.bench_function("verify_standard", |b| {
        b.iter(|| {
            black_box(
                keys.verify(black_box(&headers), black_box(&body), options)
                    .unwrap(),
            )
        })
    });
    group.finish();
}

fn base64_key() -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap()
}

criterion_group!(benches, bench);
criterion_main!(benches);
