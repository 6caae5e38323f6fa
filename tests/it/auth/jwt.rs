//! JWT bearer tokens beside API tokens: each configured kind of key, every
//! claim check, and the same 401 for every refusal, over both transports.

use std::path::PathBuf;

use conversation_service::auth::jwt::JwtConfig;
use conversation_service::pb::{CreateConversationRequest, ListConversationsRequest};
use conversation_service::server::Config;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Actor, TestApp, TestDb, World};
use crate::on_both_backends;

const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!";
const ISSUER: &str = "https://idp.example.test";
const AUDIENCE: &str = "conversation-service";
const REFUSED: &str = "Missing or invalid access token";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims that pass every check, for `user`.
fn good_claims(user: Uuid) -> Value {
    json!({ "sub": user, "exp": now() + 300, "iat": now(), "iss": ISSUER, "aud": AUDIENCE })
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("signs")
}

fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
        claims,
    )
}

fn b64(v: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn as_actor(user: Uuid, token: String) -> Actor {
    Actor { id: user, token }
}

async fn app_with(db: TestDb, jwt: JwtConfig) -> TestApp {
    TestApp::spawn_config(
        db,
        Config {
            jwt,
            ..Config::local()
        },
    )
    .await
}

/// Creates over REST and gRPC, lists and prompts (a conversation that does
/// not exist: the caller is found by the same lookup) over REST with
/// `token`; returns the four outcomes as (status, message) pairs.
async fn try_token(app: &TestApp, w: &World, token: &str) -> [(u16, String); 4] {
    let (status, body) = app
        .post_create(Some(token), &json!({ "repoId": w.repo }).to_string())
        .await;
    let rest = (
        status,
        body["message"].as_str().unwrap_or("created").to_owned(),
    );
    let actor = as_actor(Uuid::nil(), token.to_owned());
    let grpc = match app
        .grpc()
        .await
        .create_conversation(crate::harness::as_actor(
            CreateConversationRequest {
                repo_id: w.repo.to_string(),
            },
            &actor,
        ))
        .await
    {
        Ok(_) => (200, "created".to_owned()),
        Err(s) => (
            crate::harness::http_status_of(s.code()),
            s.message().to_owned(),
        ),
    };
    let list = app
        .http
        .get(format!("{}/conversation", app.base))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("list");
    let status = list.status().as_u16();
    let body: Value = list.json().await.expect("json");
    let list = (
        status,
        body["message"].as_str().unwrap_or("listed").to_owned(),
    );
    let prompt = app
        .http
        .post(format!(
            "{}/conversation/{}/prompt",
            app.base,
            Uuid::now_v7()
        ))
        .header("authorization", format!("Bearer {token}"))
        .json(&json!({ "prompt": "hi", "model": "m" }))
        .send()
        .await
        .expect("prompt");
    let status = prompt.status().as_u16();
    let body: Value = prompt.json().await.expect("json");
    let prompt = (status, body["message"].as_str().unwrap_or("").to_owned());
    [rest, grpc, list, prompt]
}

/// HS256 with issuer and audience pinned: what passes and everything refused.
async fn hs256_tokens(db: TestDb) {
    let app = app_with(
        db,
        JwtConfig {
            secret: Some(SECRET.into()),
            issuer: Some(ISSUER.into()),
            audience: vec![AUDIENCE.into()],
            leeway_seconds: 0,
            ..JwtConfig::default()
        },
    )
    .await;
    let w = World::build(&app).await;
    let reader = w.reader.id;

    // Accepted: `sub`, or the platform's `userId` claim; API tokens still work.
    let ok = [
        (200, "created".to_owned()),
        (200, "created".to_owned()),
        (200, "listed".to_owned()),
        (404, "Conversation not found".to_owned()),
    ];
    assert_eq!(try_token(&app, &w, &hs256(&good_claims(reader))).await, ok);
    let mut by_user_id = good_claims(reader);
    by_user_id["userId"] = json!(reader);
    by_user_id["sub"] = json!("auth0|someone");
    assert_eq!(try_token(&app, &w, &hs256(&by_user_id)).await, ok);
    assert_eq!(try_token(&app, &w, &w.reader.token).await, ok);
    let before = app.count("conversations").await;
    assert_eq!(before, 6);

    // The created rows belong to the JWT's user, with their event.
    let list = app
        .http
        .get(format!("{}/conversation?userId={reader}", app.base))
        .header(
            "authorization",
            format!("Bearer {}", hs256(&good_claims(reader))),
        )
        .send()
        .await
        .expect("list")
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(list["total"], 6);
    assert_eq!(app.conversations_without_event().await, 0);

    // Refused, each the same way.
    let claims = |edit: &dyn Fn(&mut Value)| {
        let mut c = good_claims(reader);
        edit(&mut c);
        c
    };
    let other_secret = EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes!!");
    let mut refused: Vec<(&str, String)> = vec![
        ("expired", hs256(&claims(&|c| c["exp"] = json!(now() - 5)))),
        (
            "no exp",
            hs256(&claims(&|c| {
                c.as_object_mut().expect("object").remove("exp");
            })),
        ),
        (
            "not yet valid",
            hs256(&claims(&|c| c["nbf"] = json!(now() + 120))),
        ),
        (
            "other issuer",
            hs256(&claims(&|c| c["iss"] = json!("https://evil.test"))),
        ),
        (
            "no issuer",
            hs256(&claims(&|c| {
                c.as_object_mut().expect("object").remove("iss");
            })),
        ),
        (
            "other audience",
            hs256(&claims(&|c| c["aud"] = json!("someone-else"))),
        ),
        (
            "no audience",
            hs256(&claims(&|c| {
                c.as_object_mut().expect("object").remove("aud");
            })),
        ),
        (
            "unknown user",
            hs256(&claims(&|c| c["sub"] = json!(Uuid::now_v7()))),
        ),
        (
            "disabled user",
            hs256(&claims(&|c| c["sub"] = json!(w.disabled.id))),
        ),
        (
            "subject not a UUID",
            hs256(&claims(&|c| c["sub"] = json!("alice"))),
        ),
        (
            "no subject",
            hs256(&claims(&|c| {
                c.as_object_mut().expect("object").remove("sub");
            })),
        ),
        (
            "wrong secret",
            sign(Algorithm::HS256, &other_secret, None, &good_claims(reader)),
        ),
        (
            "HS512 not pinned",
            sign(
                Algorithm::HS512,
                &EncodingKey::from_secret(SECRET.as_bytes()),
                None,
                &good_claims(reader),
            ),
        ),
    ];
    // alg "none": a header and payload without a signature.
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({ "alg": "none", "typ": "JWT" })),
        b64(&good_claims(reader))
    );
    refused.push(("alg none", unsigned.clone()));
    refused.push(("alg none, junk signature", format!("{unsigned}c2ln")));
    // A valid token with its payload swapped for another user's.
    let genuine = hs256(&good_claims(reader));
    let parts: Vec<&str> = genuine.split('.').collect();
    refused.push((
        "tampered payload",
        format!(
            "{}.{}.{}",
            parts[0],
            b64(&good_claims(w.owner.id)),
            parts[2]
        ),
    ));
    let refusal = (401, REFUSED.to_owned());
    for (case, token) in refused {
        assert_eq!(
            try_token(&app, &w, &token).await,
            [
                refusal.clone(),
                refusal.clone(),
                refusal.clone(),
                refusal.clone()
            ],
            "{case}"
        );
    }
    assert_eq!(app.count("conversations").await, before, "nothing written");
    app.shutdown().await;
}

/// RS256 with a PEM public key, ES256 with a PEM public key, RS256 from a
/// JWKS chosen by `kid`; and the classic key-confusion attack fails.
async fn public_key_tokens(db: TestDb) {
    let rsa_private = std::fs::read(fixture("rsa_private.pem")).expect("fixture");
    let rsa = EncodingKey::from_rsa_pem(&rsa_private).expect("RSA key");

    // RS256, PEM.
    let app = app_with(
        db,
        JwtConfig {
            public_key: Some(fixture("rsa_public.pem")),
            ..JwtConfig::default()
        },
    )
    .await;
    let w = World::build(&app).await;
    let claims = json!({ "sub": w.writer.id, "exp": now() + 60 });
    let created = app
        .post_create(
            Some(&sign(Algorithm::RS256, &rsa, None, &claims)),
            &json!({ "repoId": w.repo }).to_string(),
        )
        .await;
    assert_eq!(created.0, 200, "{created:?}");
    // HS256 "signed" with the public key as the secret: refused, since only
    // RS256 is pinned (and the key is not an HMAC key).
    let public_pem = std::fs::read(fixture("rsa_public.pem")).expect("fixture");
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&public_pem),
        None,
        &claims,
    );
    let refused = app
        .post_create(Some(&confused), &json!({ "repoId": w.repo }).to_string())
        .await;
    assert_eq!(
        (refused.0, refused.1["message"].clone()),
        (401, json!(REFUSED))
    );
    app.shutdown().await;

    // ES256, PEM (a key made now).
    let ec = rcgen::KeyPair::generate().expect("P-256 key");
    let dir = tempfile::tempdir().expect("dir");
    let ec_public = dir.path().join("ec_public.pem");
    std::fs::write(&ec_public, ec.public_key_pem()).expect("write");
    let ec_key = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).expect("EC key");
    let verifier = conversation_service::auth::jwt::JwtVerifier::new(&JwtConfig {
        public_key: Some(ec_public.clone()),
        ..JwtConfig::default()
    })
    .expect("EC verifier");
    let user = Uuid::now_v7();
    let es = sign(
        Algorithm::ES256,
        &ec_key,
        None,
        &json!({ "sub": user, "exp": now() + 60 }),
    );
    assert_eq!(verifier.verify(&es), Ok(user));
    let rs = sign(
        Algorithm::RS256,
        &rsa,
        None,
        &json!({ "sub": user, "exp": now() + 60 }),
    );
    assert!(
        verifier.verify(&rs).is_err(),
        "RS256 refused by an ES256 verifier"
    );

    // RS256 from a JWKS, by kid.
    let jwks = conversation_service::auth::jwt::JwtVerifier::new(&JwtConfig {
        jwks: Some(fixture("jwks.json")),
        ..JwtConfig::default()
    })
    .expect("JWKS verifier");
    let claims = json!({ "sub": user, "exp": now() + 60 });
    assert_eq!(
        jwks.verify(&sign(Algorithm::RS256, &rsa, Some("test-key-1"), &claims)),
        Ok(user)
    );
    assert!(
        jwks.verify(&sign(Algorithm::RS256, &rsa, Some("other"), &claims))
            .is_err()
    );
    assert!(
        jwks.verify(&sign(Algorithm::RS256, &rsa, None, &claims))
            .is_ok()
    );
    assert!(jwks.verify(&es).is_err(), "an EC token is not in the JWKS");
}

on_both_backends!(hs256_tokens, public_key_tokens);

/// A P-256 key as a JWK.
fn ec_jwk(key: &rcgen::KeyPair, kid: &str) -> Value {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let point = key.public_key_raw();
    assert_eq!(
        (point.len(), point[0]),
        (65, 4),
        "an uncompressed P-256 point"
    );
    json!({ "kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..]), "kid": kid, "use": "sig" })
}

/// A JWKS with an RSA and an EC key: each signs tokens of its own algorithm
/// (both accepted by default), picked by `kid`; neither key checks the
/// other's tokens.
#[test]
fn a_jwks_with_rsa_and_ec_keys() {
    use conversation_service::auth::jwt::JwtVerifier;
    let rsa_private = std::fs::read(fixture("rsa_private.pem")).expect("fixture");
    let rsa = EncodingKey::from_rsa_pem(&rsa_private).expect("RSA key");
    let ec = rcgen::KeyPair::generate().expect("P-256 key");
    let ec_key = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).expect("EC key");
    let published: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("jwks.json")).expect("fixture"))
            .expect("json");
    let mut keys = published["keys"].as_array().expect("keys").clone();
    keys.push(ec_jwk(&ec, "ec-1"));
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("mixed.json");
    std::fs::write(&path, json!({ "keys": keys }).to_string()).expect("write");
    let verifier = JwtVerifier::new(&JwtConfig {
        jwks: Some(path),
        ..JwtConfig::default()
    })
    .expect("verifier");
    let user = Uuid::now_v7();
    let claims = json!({ "sub": user, "exp": now() + 60 });
    assert_eq!(
        verifier.verify(&sign(Algorithm::RS256, &rsa, Some("test-key-1"), &claims)),
        Ok(user)
    );
    assert_eq!(
        verifier.verify(&sign(Algorithm::ES256, &ec_key, Some("ec-1"), &claims)),
        Ok(user)
    );
    // A token naming the other key's kid, or signed by the wrong key.
    assert!(
        verifier
            .verify(&sign(
                Algorithm::ES256,
                &ec_key,
                Some("test-key-1"),
                &claims
            ))
            .is_err()
    );
    assert!(
        verifier
            .verify(&sign(Algorithm::RS256, &rsa, Some("ec-1"), &claims))
            .is_err()
    );
    assert!(
        verifier
            .verify(&sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(b"x"),
                None,
                &claims
            ))
            .is_err()
    );
}

/// A service refuses to start on a JWT setup that cannot be right.
#[test]
fn bad_jwt_setups_are_refused_at_startup() {
    use conversation_service::auth::jwt::JwtVerifier;
    let cases = [
        (
            JwtConfig {
                secret: Some("short".into()),
                ..JwtConfig::default()
            },
            "at least 32 bytes",
        ),
        (
            JwtConfig {
                secret: Some(SECRET.into()),
                algorithms: vec!["RS256".into()],
                ..JwtConfig::default()
            },
            "HS* algorithms go with --jwt-secret only",
        ),
        (
            JwtConfig {
                public_key: Some(fixture("rsa_public.pem")),
                algorithms: vec!["ES256".into()],
                ..JwtConfig::default()
            },
            "does not go with the configured key",
        ),
        (
            JwtConfig {
                public_key: Some(fixture("rsa_public.pem")),
                algorithms: vec!["none".into()],
                ..JwtConfig::default()
            },
            "unknown algorithm",
        ),
        (
            JwtConfig {
                secret: Some(SECRET.into()),
                public_key: Some(fixture("rsa_public.pem")),
                ..JwtConfig::default()
            },
            "exactly one of",
        ),
        (
            JwtConfig {
                public_key: Some(fixture("jwks.json")),
                ..JwtConfig::default()
            },
            "not a PEM RSA, EC or Ed25519 public key",
        ),
    ];
    // JWKS documents that cannot be right.
    let dir = tempfile::tempdir().expect("dir");
    let ec = rcgen::KeyPair::generate().expect("P-256 key");
    let ec_jwk = ec_jwk(&ec, "ec-1");
    let mut encryption_key = ec_jwk.clone();
    encryption_key["use"] = json!("enc");
    let jwks = |name: &str, keys: Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, json!({ "keys": keys }).to_string()).expect("write");
        path
    };
    let jwks_cases = [
        (
            jwks(
                "oct.json",
                json!([{ "kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA", "kid": "s" }]),
            ),
            vec![],
            "is a shared secret",
        ),
        (
            jwks("enc.json", json!([encryption_key])),
            vec![],
            "for encryption",
        ),
        (
            jwks("ec-only.json", json!([ec_jwk.clone()])),
            vec!["RS256".to_owned()],
            "does not go with",
        ),
        (jwks("empty.json", json!([])), vec![], "holds no keys"),
    ];
    for (path, algorithms, expected) in jwks_cases {
        let config = JwtConfig {
            jwks: Some(path),
            algorithms,
            ..JwtConfig::default()
        };
        let error = JwtVerifier::new(&config).expect_err(expected).to_string();
        assert!(
            error.contains(expected),
            "{error:?} should say {expected:?}"
        );
    }
    for (config, expected) in cases {
        let error = JwtVerifier::new(&config).expect_err(expected).to_string();
        assert!(
            error.contains(expected),
            "{error:?} should say {expected:?}"
        );
        assert!(!error.contains(SECRET), "the secret is never printed");
    }
}

/// A JWT is recognised over gRPC too, for reads.
async fn jwt_over_grpc(db: TestDb) {
    let app = app_with(
        db,
        JwtConfig {
            secret: Some(SECRET.into()),
            ..JwtConfig::default()
        },
    )
    .await;
    let w = World::build(&app).await;
    let token = hs256(&json!({ "sub": w.owner.id, "exp": now() + 60 }));
    let owner = as_actor(w.owner.id, token);
    app.create_as(&owner, w.repo).await;
    let listed = app
        .grpc()
        .await
        .list_conversations(crate::harness::as_actor(
            ListConversationsRequest::default(),
            &owner,
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.total, 1);
    assert_eq!(listed.conversations[0].created_by, w.owner.id.to_string());
    app.shutdown().await;
}

on_both_backends!(jwt_over_grpc);
