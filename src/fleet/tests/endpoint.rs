//! What `Fleet::connect` refuses.

use secrecy::SecretString;

use super::*;
use crate::fleet::FleetError;

#[tokio::test]
async fn a_malformed_endpoint_is_refused_without_repeating_its_password() {
    for endpoint in [
        RedisEndpoint::Server(SecretString::from(
            "redis://user:hunter2@127.0.0.1:notaport",
        )),
        RedisEndpoint::Server(SecretString::from("http://user:hunter2@127.0.0.1:6379")),
        RedisEndpoint::Cluster(vec![SecretString::from("hunter2")]),
        RedisEndpoint::Cluster(Vec::new()),
    ] {
        let described = format!("{endpoint:?}");
        match Fleet::connect(settings(endpoint)).await {
            Err(FleetError::InvalidEndpoint(reason)) => {
                assert!(!reason.contains("hunter2"), "{reason}");
            }
            Err(error) => panic!("{described}: {error}"),
            Ok(_) => panic!("{described} was accepted"),
        }
        assert!(!described.contains("hunter2"), "{described}");
    }
}

#[tokio::test]
async fn a_key_prefix_with_braces_is_refused() {
    let mut settings = settings(RedisEndpoint::Server(SecretString::from(
        "redis://127.0.0.1:1",
    )));
    settings.key_prefix = "a{b}".to_owned();
    assert!(matches!(
        Fleet::connect(settings).await,
        Err(FleetError::InvalidKeyPrefix)
    ));
}
