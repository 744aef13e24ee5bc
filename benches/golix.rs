//! Criterion micro-benchmarks of the Golix operations every holder runs, next to the raw
//! aws-lc-rs RSA-4096 PSS-SHA512 sign and verify they are bound by, measured in the same run
//! so the overhead of our layer is a ratio (BENCHMARKS.md). Fixture identities only: never
//! generate RSA-4096 keys here.
//!
//! `cargo bench --bench golix`

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::{
    KeyPair as _, ParsedPublicKey, RSA_PSS_2048_8192_SHA512, RSA_PSS_SHA512,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hypergolix::golix::{cipher, Object, Secret, DEFAULT_LEGROOM};

fn golix(c: &mut Criterion) {
    let a = common::fixture(1);
    let b = common::fixture(2);
    let secret = Secret::random();
    let plaintext = vec![0x5a_u8; 1024];

    let mut g = c.benchmark_group("golix");

    // Sign-bound (one RSA private-key operation each).
    g.bench_function("make_container_1KiB", |bench| {
        bench.iter(|| a.make_container(black_box(&plaintext), &secret).unwrap())
    });
    let c0 = a.make_container(&plaintext, &secret).unwrap();
    let c1 = a.make_container(b"next", &secret).unwrap();
    let f0 = a.make_bind_dynamic(c0.ghid).unwrap();
    g.bench_function("make_next_frame", |bench| {
        bench.iter(|| {
            a.make_next_frame(black_box(&f0), c1.ghid, DEFAULT_LEGROOM)
                .unwrap()
        })
    });
    let hs = a
        .make_handshake(b.second_party(), f0.dynamic, &secret)
        .unwrap();
    let lookup = |gh: &hypergolix::golix::Ghid| (*gh == a.ghid()).then(|| a.second_party().clone());
    g.bench_function("open_garq", |bench| {
        bench.iter(|| b.open_request(black_box(&hs), lookup).unwrap())
    });

    // Verify-bound (one RSA public-key operation each, plus the address hash).
    let geoc = Object::Geoc(c0.clone());
    g.bench_function("verify_geoc_1KiB", |bench| {
        bench.iter(|| black_box(&geoc).verify(Some(a.second_party())).unwrap())
    });
    let f1 = Object::Gobd(a.make_next_frame(&f0, c1.ghid, DEFAULT_LEGROOM).unwrap());
    g.bench_function("verify_gobd", |bench| {
        bench.iter(|| black_box(&f1).verify(Some(a.second_party())).unwrap())
    });

    // Symmetric.
    let mut mib = vec![0u8; 1 << 20];
    g.throughput(Throughput::Bytes(mib.len() as u64));
    g.bench_function("aes_ctr_1MiB", |bench| {
        bench.iter(|| cipher::apply_keystream(&secret, black_box(&mut mib)))
    });
    g.finish();

    // The raw aws-lc-rs rates the RSA-bound operations above are compared with.
    let mut r = c.benchmark_group("raw_rsa4096");
    let key = KeyPair::from_pkcs8(&a.export().signature_pkcs8).unwrap();
    let rng = SystemRandom::new();
    let msg = [0x42_u8; 64];
    let mut sig = vec![0u8; key.public_modulus_len()];
    r.bench_function("pss_sha512_sign", |bench| {
        bench.iter(|| {
            key.sign(&RSA_PSS_SHA512, &rng, black_box(&msg), &mut sig)
                .unwrap()
        })
    });
    key.sign(&RSA_PSS_SHA512, &rng, &msg, &mut sig).unwrap();
    let public =
        ParsedPublicKey::new(&RSA_PSS_2048_8192_SHA512, key.public_key().as_ref()).unwrap();
    r.bench_function("pss_sha512_verify", |bench| {
        bench.iter(|| public.verify_sig(black_box(&msg), &sig).unwrap())
    });
    r.finish();
}

criterion_group!(benches, golix);
criterion_main!(benches);
