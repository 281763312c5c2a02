//! Two-factor sign-in for local accounts: TOTP enrolment, sign-in with a code or a recovery code,
//! replay refused, turning it off, an administrator's reset, and the tenant setting that makes it
//! compulsory. Codes are computed here from the secret the server hands out, as an app would.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use conclave_auth::totp::TotpSecret;
use serde_json::{json, Value};

use crate::app::{s, Backend, Fetch, Resp, TestApp, PASSWORD};

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

async fn login(app: &TestApp, email: &str, extra: Value) -> Result<Resp> {
    let mut body = json!({"email": email, "password": PASSWORD});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    app.post("/api/v1/auth/login").json(&body).fetch().await
}

/// Enrols `token`'s account; returns the secret, the time its confirming code was made for,
/// and the recovery codes.
async fn enrol(app: &TestApp, token: &str, email: &str) -> Result<(TotpSecret, u64, Vec<String>)> {
    let started = app.post("/api/v1/me/mfa/totp").bearer_auth(token).fetch().await?.expect(201);
    assert_eq!(started.header("cache-control").as_deref(), Some("no-store"));
    let secret = TotpSecret::from_base32(&s(&started["secret"]), "Conclave", email)?;
    let uri = s(&started["otpauth_uri"]);
    assert!(uri.starts_with("otpauth://totp/Conclave:") && uri.contains(&s(&started["secret"])), "{uri}");
    let t0 = now();
    let confirmed = app
        .post("/api/v1/me/mfa/totp/confirm")
        .bearer_auth(token)
        .json(&json!({"code": secret.code_at(t0)}))
        .fetch()
        .await?
        .expect(200);
    let codes: Vec<String> = confirmed["recovery_codes"].as_array().into_iter().flatten().map(s).collect();
    assert_eq!(codes.len(), 10, "{}", confirmed.text);
    Ok((secret, t0, codes))
}

/// The `user_mfa.secret` column, read past the server.
async fn stored_secrets(app: &TestApp, backend: Backend) -> Result<Vec<Vec<u8>>> {
    use sqlx::Connection;
    let sql = "SELECT secret FROM user_mfa";
    Ok(match backend {
        Backend::Sqlite => {
            let dir = app.site_var("CONCLAVE_DATA_DIR").unwrap_or_default();
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{dir}/conclave.db")).await?;
            let rows = sqlx::query_scalar(sql).fetch_all(&mut conn).await?;
            let _ = conn.close().await;
            rows
        }
        Backend::Postgres => {
            let url = app.site_var("CONCLAVE_DATABASE_URL").unwrap_or_default();
            let mut conn = sqlx::PgConnection::connect(&url).await?;
            let rows = sqlx::query_scalar(sql).fetch_all(&mut conn).await?;
            let _ = conn.close().await;
            rows
        }
    })
}

async fn totp_sign_in_recovery_and_replay(backend: Backend) -> Result<()> {
    let app = TestApp::start(backend).await?;
    let admin = app.admin().await?;
    let member = app.member("Mia").await?;

    // A wrong code does not enable anything.
    app.post("/api/v1/me/mfa/totp").bearer_auth(&member.token).fetch().await?.expect(201);
    app.post("/api/v1/me/mfa/totp/confirm")
        .bearer_auth(&member.token)
        .json(&json!({"code": "000000"}))
        .fetch()
        .await?
        .problem(422);
    login(&app, &member.email, json!({})).await?.expect(200);

    let (secret, t0, codes) = enrol(&app, &member.token, &member.email).await?;
    // At rest the secret is sealed under the tenant key (format 1), never in clear.
    let stored = stored_secrets(&app, backend).await?;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].first(), Some(&1u8), "sealed in format 1");
    let b32 = secret.base32();
    assert!(!stored[0].windows(b32.len()).any(|w| w == b32.as_bytes()), "the secret is stored in clear");
    app.post("/api/v1/me/mfa/totp").bearer_auth(&member.token).fetch().await?.problem(409);

    // The password first: a wrong one answers as always, whatever the code.
    let wrong = app
        .post("/api/v1/auth/login")
        .json(&json!({"email": member.email, "password": "not-the-password-at-all"}))
        .fetch()
        .await?
        .problem(401);
    assert!(s(&wrong["type"]).ends_with("invalid-credentials"), "{}", wrong.text);
    // A right password without a code, with a wrong code, or with the code already used to
    // confirm (replay): one answer, `mfa-required`.
    let missing = login(&app, &member.email, json!({})).await?.problem(401);
    assert!(s(&missing["type"]).ends_with("mfa-required"), "{}", missing.text);
    let bad = login(&app, &member.email, json!({"otp": "000000"})).await?.problem(401);
    let replayed = login(&app, &member.email, json!({"otp": secret.code_at(t0)})).await?.problem(401);
    for other in [&bad, &replayed] {
        assert_eq!(other["type"], missing["type"]);
        assert_eq!(other["detail"], missing["detail"]);
    }

    // New recovery codes need a current code: the next step's (within the one step of drift
    // allowed); the old codes stop working, and that code cannot sign in afterwards.
    app.post("/api/v1/me/mfa/recovery-codes")
        .bearer_auth(&member.token)
        .json(&json!({"code": "000000"}))
        .fetch()
        .await?
        .problem(422);
    let next = secret.code_at(t0 + 30);
    let fresh = app
        .post("/api/v1/me/mfa/recovery-codes")
        .bearer_auth(&member.token)
        .json(&json!({"code": next}))
        .fetch()
        .await?
        .expect(200);
    let fresh: Vec<String> = fresh["recovery_codes"].as_array().into_iter().flatten().map(s).collect();
    assert_eq!(fresh.len(), 10);
    assert!(fresh.iter().all(|c| !codes.contains(c)));
    login(&app, &member.email, json!({"recovery_code": codes[0]})).await?.problem(401);
    login(&app, &member.email, json!({"otp": next})).await?.problem(401);

    // A recovery code signs in once, in any letter case and with or without dashes.
    let recovery = fresh[0].to_uppercase().replace('-', "");
    let signed_in = login(&app, &member.email, json!({"recovery_code": recovery})).await?.expect(200);
    let token = s(&signed_in["access_token"]);
    login(&app, &member.email, json!({"recovery_code": fresh[0]})).await?.problem(401);

    // Turning it off needs the password and an unused code.
    let off = |body: Value| app.delete("/api/v1/me/mfa").bearer_auth(&token).json(&body).fetch();
    off(json!({"current_password": "wrong-password-here", "recovery_code": fresh[1]})).await?.problem(422);
    off(json!({"current_password": PASSWORD, "recovery_code": fresh[0]})).await?.problem(422);
    off(json!({"current_password": PASSWORD, "recovery_code": fresh[1]})).await?.expect(204);
    off(json!({"current_password": PASSWORD, "recovery_code": fresh[2]})).await?.problem(409);
    login(&app, &member.email, json!({})).await?.expect(200);

    // Every change is in the audit log.
    let events = app.get("/api/v1/audit/events?limit=200").bearer_auth(&admin.token).fetch().await?.expect(200);
    let actions: Vec<String> = events.items().iter().map(|e| s(&e["action"])).collect();
    for action in [
        "mfa.totp_enrolment_started",
        "mfa.enabled",
        "mfa.recovery_codes_regenerated",
        "mfa.recovery_code_used",
        "mfa.disabled",
    ] {
        assert!(actions.iter().any(|a| a == action), "{action} missing from {actions:?}");
    }
    let failures = events
        .items()
        .iter()
        .filter(|e| e["action"] == "auth.login" && e["outcome"] != "success")
        .map(|e| s(&e["detail"]["reason"]))
        .collect::<Vec<_>>();
    assert!(
        failures.iter().any(|r| r == "mfa_missing") && failures.iter().any(|r| r == "mfa_bad_code"),
        "{failures:?}"
    );
    Ok(())
}

async fn required_mfa_holds_sessions_back_until_enrolment(backend: Backend) -> Result<()> {
    let app = TestApp::start(backend).await?;
    let admin = app.admin().await?;
    let member = app.member("Mia").await?;
    let member_id = s(&member.user["id"]);
    let tenant = app
        .patch("/api/v1/admin/tenant")
        .bearer_auth(&admin.token)
        .json(&json!({"settings": {"require_mfa": true}}))
        .fetch()
        .await?
        .expect(200);
    assert_eq!(tenant["settings"]["require_mfa"], true);

    // Without MFA: who am I, enrol and sign out only.
    app.get("/api/v1/me").bearer_auth(&member.token).fetch().await?.expect(200);
    let held = app.get("/api/v1/agents").bearer_auth(&member.token).fetch().await?.problem(403);
    assert!(s(&held["type"]).ends_with("mfa-enrollment-required"), "{}", held.text);
    app.post("/api/v1/api-keys").bearer_auth(&member.token).json(&json!({"name": "k"})).fetch().await?.problem(403);
    app.get("/api/v1/admin/tenant").bearer_auth(&admin.token).fetch().await?.problem(403);

    // Enrolled: the same session may do everything again; sign-in now needs the code.
    let (secret, t0, _codes) = enrol(&app, &member.token, &member.email).await?;
    app.get("/api/v1/agents").bearer_auth(&member.token).fetch().await?.expect(200);
    login(&app, &member.email, json!({})).await?.problem(401);
    login(&app, &member.email, json!({"otp": secret.code_at(t0 + 30)})).await?.expect(200);

    // The admin enrols too, then resets the member's MFA (a lost phone): the member's sessions
    // end, and the next sign-in is held back until they enrol again.
    let (_admin_secret, _, _) = enrol(&app, &admin.token, &admin.email).await?;
    app.delete(&format!("/api/v1/admin/users/{member_id}/mfa")).bearer_auth(&member.token).fetch().await?.problem(403);
    app.delete(&format!("/api/v1/admin/users/{member_id}/mfa")).bearer_auth(&admin.token).fetch().await?.expect(204);
    app.delete(&format!("/api/v1/admin/users/{member_id}/mfa")).bearer_auth(&admin.token).fetch().await?.problem(404);
    app.get("/api/v1/me").bearer_auth(&member.token).fetch().await?.problem(401);
    let again = login(&app, &member.email, json!({})).await?.expect(200);
    let token = s(&again["access_token"]);
    app.get("/api/v1/agents").bearer_auth(&token).fetch().await?.problem(403);
    app.post("/api/v1/auth/logout").bearer_auth(&token).fetch().await?.expect(204);
    app.get("/api/v1/me").bearer_auth(&token).fetch().await?.problem(401);

    let events = app.get("/api/v1/audit/events?action=mfa.reset").bearer_auth(&admin.token).fetch().await?.expect(200);
    assert_eq!(events.items().len(), 1, "{}", events.text);
    assert_eq!(events.items()[0]["resource_id"], member_id.as_str());
    Ok(())
}

/// Wrong codes are sign-in attempts: they use up the account's sign-in budget like wrong
/// passwords, so six digits cannot be guessed at speed.
async fn wrong_codes_count_toward_the_sign_in_limit(backend: Backend) -> Result<()> {
    let app = TestApp::builder(backend).env("CONCLAVE_LOGIN_ATTEMPTS_PER_MINUTE", "5").start().await?;
    let member = app.admin().await?;
    enrol(&app, &member.token, &member.email).await?;
    let mut refused = 0;
    let mut limited = None;
    for attempt in 0..12 {
        let r = login(&app, &member.email, json!({"otp": "000000"})).await?;
        match r.status {
            401 => refused += 1,
            429 => {
                assert!(r.header("retry-after").is_some(), "{}", r.text);
                limited = Some(attempt);
                break;
            }
            other => panic!("attempt {attempt}: {other} {}", r.text),
        }
    }
    assert!(refused >= 1 && limited.is_some(), "{refused} refusals, then no 429");
    Ok(())
}

backend_tests!(
    totp_sign_in_recovery_and_replay,
    required_mfa_holds_sessions_back_until_enrolment,
    wrong_codes_count_toward_the_sign_in_limit
);
