//! `rediss://`: the fleet over TLS, verifying Redis's certificate.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use super::*;

/// A throwaway authority and a certificate it signs for 127.0.0.1: (authority, chain, key).
fn certificates() -> (String, String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "fleet test authority");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let authority =
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("authority");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &authority).expect("signed");
    (authority.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_limits_are_shared_and_a_redis_signed_by_an_unknown_authority_is_not_trusted() {
    let (authority, cert, key) = certificates();
    let redis = RedisServer::start_tls(&cert, &key);
    let trusting = || {
        let mut settings = settings(on(&redis));
        settings.tls_root_certificate = Some(authority.clone().into_bytes());
        settings
    };
    let fleets = replicas(trusting, 2).await;
    let allowed = allowed_in_turn(&fleets, &token_key(), 10, 12).await;
    assert_eq!(allowed.iter().sum::<u32>(), 10, "{allowed:?}");

    let stranger = Fleet::connect(settings(on(&redis))).await.expect("connect");
    assert!(
        stranger.status().degraded,
        "a certificate from an authority outside the system's roots was accepted"
    );
}
