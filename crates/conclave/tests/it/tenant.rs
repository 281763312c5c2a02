//! Tenant settings (`/api/v1/admin/tenant`): their shape, partial updates, validation naming the
//! field, and the model allow-list taking effect on `/models` and on agents.

use anyhow::Result;
use serde_json::{json, Value};

use crate::app::{is_utc_timestamp, s, Backend, Fetch, TestApp};

const TENANT: &str = "/api/v1/admin/tenant";

async fn patch(app: &TestApp, token: &str, body: Value) -> Result<crate::app::Resp> {
    app.patch(TENANT).bearer_auth(token).json(&body).fetch().await
}

async fn tenant_settings_round_trip(backend: Backend) -> Result<()> {
    let (app, _mock) = TestApp::with_mock(backend).await?;
    let admin = app.admin().await?;

    let initial = app.get(TENANT).bearer_auth(&admin.token).fetch().await?.expect(200).body;
    assert_eq!(initial["id"], admin.user["tenant_id"], "{initial}");
    assert!(initial["name"].is_string(), "{initial}");
    assert!(is_utc_timestamp(&initial["updated_at"]), "updated_at: {initial}");
    let st = &initial["settings"];
    assert!(st["allowed_models"].is_null() || st["allowed_models"].is_array(), "{st}");
    assert!(st["provider_regions"].is_null() || st["provider_regions"].is_array(), "{st}");
    for b in ["tenant_monthly_tokens", "tenant_monthly_cost_usd", "user_monthly_tokens", "user_monthly_cost_usd"] {
        let v = &st["budgets"][b];
        assert!(v.is_null() || v.is_number(), "budgets.{b}: {st}");
    }
    assert!(st["ip_allowlist"].is_array(), "{st}");
    for r in ["conversation_days", "audit_days"] {
        let v = &st["retention"][r];
        assert!(v.is_null() || v.is_u64(), "retention.{r}: {st}");
    }
    assert!(st["features"].is_object(), "{st}");

    // Each part on its own; the rest stays.
    let after =
        patch(&app, &admin.token, json!({"settings": {"allowed_models": ["mock-model"]}})).await?.expect(200).body;
    assert_eq!(after["settings"]["allowed_models"], json!(["mock-model"]));
    assert_eq!(after["settings"]["budgets"], st["budgets"]);
    assert_eq!(after["name"], initial["name"]);

    let budgets = json!({"tenant_monthly_tokens": 5000000, "tenant_monthly_cost_usd": 250.5,
                         "user_monthly_tokens": 100000, "user_monthly_cost_usd": 10});
    let after = patch(&app, &admin.token, json!({"settings": {"budgets": budgets}})).await?.expect(200).body;
    let got = &after["settings"]["budgets"];
    assert_eq!(got["tenant_monthly_tokens"], 5000000);
    assert_eq!(got["user_monthly_tokens"], 100000);
    assert_eq!(got["tenant_monthly_cost_usd"].as_f64(), Some(250.5));
    assert_eq!(got["user_monthly_cost_usd"].as_f64(), Some(10.0));
    assert_eq!(after["settings"]["allowed_models"], json!(["mock-model"]), "earlier change kept");

    // The allow-list includes the loopback address the tests come from.
    let after = patch(
        &app,
        &admin.token,
        json!({"settings": {
            "ip_allowlist": ["127.0.0.0/8", "::1/128"],
            "retention": {"conversation_days": 30, "audit_days": 3650},
            "features": {"beta_ui": true, "web_search": false},
            "provider_regions": ["eu"],
        }}),
    )
    .await?
    .expect(200)
    .body;
    let st = &after["settings"];
    assert_eq!(st["ip_allowlist"].as_array().map(Vec::len), Some(2), "{st}");
    assert!(s(&st["ip_allowlist"][0]).starts_with("127.0.0.0/8"), "{st}");
    assert_eq!(st["retention"], json!({"conversation_days": 30, "audit_days": 3650}));
    assert_eq!(st["features"]["beta_ui"], true);
    assert_eq!(st["features"]["web_search"], false);
    assert_eq!(st["provider_regions"], json!(["eu"]));

    let renamed = patch(&app, &admin.token, json!({"name": "Example LLP"})).await?.expect(200).body;
    assert_eq!(renamed["name"], "Example LLP");
    assert_eq!(renamed["settings"], after["settings"], "renaming keeps the settings");

    // Read back as stored.
    let read = app.get(TENANT).bearer_auth(&admin.token).fetch().await?.expect(200).body;
    assert_eq!(read["name"], "Example LLP");
    assert_eq!(read["settings"], after["settings"]);

    // Clearing goes back to "no restriction".
    let cleared = patch(&app, &admin.token, json!({"settings": {"allowed_models": null}})).await?.expect(200).body;
    assert!(cleared["settings"]["allowed_models"].is_null(), "{cleared}");
    Ok(())
}

async fn tenant_settings_are_validated(backend: Backend) -> Result<()> {
    let (app, _mock) = TestApp::with_mock(backend).await?;
    let admin = app.admin().await?;
    let before = app.get(TENANT).bearer_auth(&admin.token).fetch().await?.expect(200).body;

    let cases = [
        (json!({"allowed_models": ["mock-model", "gpt-nonexistent"]}), "settings.allowed_models"),
        (json!({"ip_allowlist": ["127.0.0.0/8", "not-a-cidr"]}), "settings.ip_allowlist"),
        (json!({"ip_allowlist": ["10.0.0.0/33"]}), "settings.ip_allowlist"),
        (json!({"budgets": {"user_monthly_tokens": -1}}), "settings.budgets"),
        (json!({"budgets": {"tenant_monthly_cost_usd": -0.5}}), "settings.budgets"),
        (json!({"retention": {"conversation_days": 0}}), "settings.retention"),
        (json!({"retention": {"audit_days": 36501}}), "settings.retention"),
        (json!({"features": {"Bad-Name": true}}), "settings.features"),
        (json!({"features": {"9lives": true}}), "settings.features"),
    ];
    let mut misses = Vec::new();
    for (settings, field) in cases {
        let resp = patch(&app, &admin.token, json!({"settings": settings})).await?;
        misses.extend(resp.invalid_miss(field));
        // The precise index where one is involved.
        if settings.get("ip_allowlist").is_some_and(|l| l[0] == "127.0.0.0/8")
            && !resp.error_fields().iter().any(|f| f == "settings.ip_allowlist[1]")
        {
            misses.push(format!("the bad CIDR is settings.ip_allowlist[1]: {}", resp.text));
        }
    }
    // Boundaries that are allowed.
    patch(&app, &admin.token, json!({"settings": {"retention": {"conversation_days": 1, "audit_days": 36500}}}))
        .await?
        .expect(200);
    patch(&app, &admin.token, json!({"settings": {"retention": {"conversation_days": before["settings"]["retention"]["conversation_days"], "audit_days": before["settings"]["retention"]["audit_days"]}}}))
        .await?
        .expect(200);

    let after = app.get(TENANT).bearer_auth(&admin.token).fetch().await?.expect(200).body;
    assert_eq!(after["settings"], before["settings"], "refused changes left nothing behind");
    assert!(misses.is_empty(), "validation misses:\n{}", misses.join("\n"));
    Ok(())
}

async fn allowed_models_restrict_models_and_agents(backend: Backend) -> Result<()> {
    let (app, _mock) = TestApp::with_mock(backend).await?;
    let admin = app.admin().await?;
    let bob = app.member("bob").await?;

    let models = app.get("/api/v1/models").bearer_auth(&bob.token).fetch().await?.expect(200);
    let mut listed = models.items();
    listed.sort_by_key(|m| s(&m["id"]));
    assert_eq!(
        listed,
        [json!({"id": "mock-large", "provider": "default"}), json!({"id": "mock-model", "provider": "default"})],
        "CONCLAVE_MODELS, from the configured provider: {}",
        models.text
    );
    let small = app.create_agent(&bob.token, json!({"model": "mock-model"})).await?;
    app.create_agent(&bob.token, json!({"model": "mock-large"})).await?;

    patch(&app, &admin.token, json!({"settings": {"allowed_models": ["mock-model"]}})).await?.expect(200);
    let models = app.get("/api/v1/models").bearer_auth(&bob.token).fetch().await?.expect(200);
    assert_eq!(models.body["items"], json!([{"id": "mock-model", "provider": "default"}]));

    app.post("/api/v1/agents")
        .bearer_auth(&bob.token)
        .json(&json!({"name": "Big", "instructions": "x", "model": "mock-large"}))
        .fetch()
        .await?
        .invalid("model");
    app.patch(&format!("/api/v1/agents/{}", s(&small["id"])))
        .bearer_auth(&bob.token)
        .json(&json!({"model": "mock-large"}))
        .fetch()
        .await?
        .invalid("model");
    app.create_agent(&bob.token, json!({"model": "mock-model"})).await?;

    patch(&app, &admin.token, json!({"settings": {"allowed_models": null}})).await?.expect(200);
    let models = app.get("/api/v1/models").bearer_auth(&bob.token).fetch().await?.expect(200);
    assert_eq!(models.items().len(), 2, "{}", models.text);
    Ok(())
}

backend_tests!(tenant_settings_round_trip, tenant_settings_are_validated, allowed_models_restrict_models_and_agents,);
