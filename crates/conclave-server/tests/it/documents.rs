//! Libraries and documents end to end through the HTTP layer, on a local object folder: uploads,
//! versions, downloads with ETag and Range, roles, legal hold, limits, type checks, aborted
//! uploads, tampering, and what the data folder reveals.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::harness::{multipart, Harness};

async fn library(h: &Harness, token: &str, name: &str) -> String {
    let r = h.call(Method::POST, "/api/v1/libraries", Some(token), Some(json!({"name": name}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["role"], "manager");
    r.body["id"].as_str().unwrap().to_owned()
}

/// Text of `len` bytes that is not a repetition of a short pattern.
fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 61 == 60 {
                b'\n'
            } else {
                b"abcdefghijklmnopqrstuvwxyz ,."[(x % 29) as usize]
            }
        })
        .collect()
}

struct Download {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Result<Vec<u8>, String>,
}

async fn download(h: &Harness, token: &str, path: &str, headers: &[(&str, &str)]) -> Download {
    let mut req = Request::builder().method(Method::GET).uri(path).header("authorization", format!("Bearer {token}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = h.send(req.body(Body::empty()).unwrap()).await;
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 26).await.map(|b| b.to_vec()).map_err(|e| e.to_string());
    Download { status, headers, body }
}

/// Every file under `dir`, read whole.
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

fn object_files(h: &Harness) -> Vec<std::path::PathBuf> {
    files(&h.dir().join("objects")).into_iter().map(|(p, _)| p).collect()
}

#[tokio::test]
async fn upload_versions_and_downloads_with_etag_and_ranges() {
    let h = Harness::new().await;
    let (owner, _) = h.signup("owner@example.com").await;
    let lib = library(&h, &owner, "Matter 2024-117").await;

    let v1 = text(300_000, 7);
    let r = h.upload(&owner, &lib, "Witness statement.txt", "text/plain", &v1).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let doc = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["name"], "Witness statement.txt");
    assert_eq!(r.body["content_type"], "text/plain");
    assert_eq!(r.body["size"], v1.len() as u64);
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["library_id"], lib.as_str());
    let sha1 = format!("{:x}", Sha256::digest(&v1));
    assert_eq!(r.body["sha256"], sha1.as_str());

    let whole = download(&h, &owner, &format!("/api/v1/documents/{doc}/content"), &[]).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.body.as_deref().unwrap(), &v1[..]);
    assert_eq!(whole.headers["etag"], format!("\"{sha1}\"").as_str());
    assert_eq!(whole.headers["content-type"], "text/plain; charset=utf-8", "text was checked to be UTF-8");
    assert_eq!(whole.headers["accept-ranges"], "bytes");
    assert_eq!(whole.headers["content-length"], v1.len().to_string().as_str());
    assert!(whole.headers["content-disposition"].to_str().unwrap().starts_with("attachment;"));

    let etag = format!("\"{sha1}\"");
    let unchanged =
        download(&h, &owner, &format!("/api/v1/documents/{doc}/content"), &[("if-none-match", etag.as_str())]).await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    assert!(unchanged.body.unwrap().is_empty());

    // Ranges inside one segment, across segments, open-ended and suffix.
    for (header, range) in [
        ("bytes=100-199", 100..200),
        ("bytes=65530-131080", 65530..131081),
        ("bytes=299000-", 299000..300_000),
        ("bytes=-10", 299_990..300_000),
    ] {
        let part = download(&h, &owner, &format!("/api/v1/documents/{doc}/content"), &[("range", header)]).await;
        assert_eq!(part.status, StatusCode::PARTIAL_CONTENT, "{header}");
        assert_eq!(part.body.as_deref().unwrap(), &v1[range.clone()], "{header}");
        assert_eq!(
            part.headers["content-range"],
            format!("bytes {}-{}/{}", range.start, range.end - 1, v1.len()).as_str()
        );
    }
    let outside =
        download(&h, &owner, &format!("/api/v1/documents/{doc}/content"), &[("range", "bytes=300000-")]).await;
    assert_eq!(outside.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(outside.headers["content-range"], "bytes */300000");
    let several =
        download(&h, &owner, &format!("/api/v1/documents/{doc}/content"), &[("range", "bytes=0-1,4-5")]).await;
    assert_eq!(several.status, StatusCode::OK, "several ranges: the whole document");

    // The same name (any case) makes version 2; version 1 stays readable.
    let v2 = text(70_000, 11);
    let r = h.upload(&owner, &lib, "witness STATEMENT.txt", "text/plain", &v2).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["id"], doc.as_str());
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.body["name"], "Witness statement.txt", "the document keeps its first name");
    let current = download(&h, &owner, &format!("/api/v1/documents/{doc}/content"), &[]).await;
    assert_eq!(current.body.unwrap(), v2);
    let old = download(&h, &owner, &format!("/api/v1/documents/{doc}/content?version=1"), &[]).await;
    assert_eq!(old.body.unwrap(), v1);
    let missing = h.call(Method::GET, &format!("/api/v1/documents/{doc}/content?version=3"), Some(&owner), None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let versions = h.call(Method::GET, &format!("/api/v1/documents/{doc}/versions"), Some(&owner), None).await;
    let items = versions.body["items"].as_array().unwrap();
    assert_eq!(items.iter().map(|v| v["version"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(items[1]["sha256"], sha1.as_str());
    let list = h.call(Method::GET, &format!("/api/v1/libraries/{lib}/documents"), Some(&owner), None).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(list.body["items"][0]["version"], 2);
    let meta = h.call(Method::GET, &format!("/api/v1/documents/{doc}"), Some(&owner), None).await;
    assert_eq!(meta.body["size"], v2.len() as u64);

    // Empty documents are documents too.
    let empty = h.upload(&owner, &lib, "empty.txt", "text/plain", b"").await;
    assert_eq!(empty.status, StatusCode::CREATED, "{}", empty.body);
    let id = empty.body["id"].as_str().unwrap();
    assert_eq!(download(&h, &owner, &format!("/api/v1/documents/{id}/content"), &[]).await.body.unwrap(), b"");
}

#[tokio::test]
async fn roles_decide_who_reads_uploads_deletes_and_manages() {
    let h = Harness::new().await;
    let (admin, _) = h.signup("admin@example.com").await;
    let (manager, _) = h.signup("manager@example.com").await;
    let (reader, reader_id) = h.signup("reader@example.com").await;
    let (editor, editor_id) = h.signup("editor@example.com").await;
    let (outsider, _) = h.signup("outsider@example.com").await;
    let lib = library(&h, &manager, "Privileged").await;
    let doc = h.upload(&manager, &lib, "brief.md", "text/markdown", b"# Brief\nconfidential").await;
    let doc = doc.body["id"].as_str().unwrap().to_owned();

    for (user, role) in [(&reader_id, "reader"), (&editor_id, "editor")] {
        let r = h
            .call(
                Method::PUT,
                &format!("/api/v1/libraries/{lib}/members/{user}"),
                Some(&manager),
                Some(json!({"role": role})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let members = h.call(Method::GET, &format!("/api/v1/libraries/{lib}/members"), Some(&reader), None).await;
    let roles: Vec<(&str, &str)> = members.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["email"].as_str().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [("editor@example.com", "editor"), ("manager@example.com", "manager"), ("reader@example.com", "reader")]
    );

    // Reader: reads, cannot upload or delete or manage.
    let read = download(&h, &reader, &format!("/api/v1/documents/{doc}/content"), &[]).await;
    assert_eq!(read.body.unwrap(), b"# Brief\nconfidential");
    assert_eq!(h.upload(&reader, &lib, "x.txt", "text/plain", b"x").await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        h.call(Method::DELETE, &format!("/api/v1/documents/{doc}"), Some(&reader), None).await.status,
        StatusCode::FORBIDDEN
    );
    let promote = h
        .call(
            Method::PUT,
            &format!("/api/v1/libraries/{lib}/members/{reader_id}"),
            Some(&reader),
            Some(json!({"role": "manager"})),
        )
        .await;
    assert_eq!(promote.status, StatusCode::FORBIDDEN);
    // Editor: uploads, cannot delete.
    assert_eq!(h.upload(&editor, &lib, "notes.txt", "text/plain", b"notes").await.status, StatusCode::CREATED);
    assert_eq!(
        h.call(Method::DELETE, &format!("/api/v1/documents/{doc}"), Some(&editor), None).await.status,
        StatusCode::FORBIDDEN
    );
    // Outsider: nothing exists.
    for path in [
        format!("/api/v1/libraries/{lib}"),
        format!("/api/v1/libraries/{lib}/members"),
        format!("/api/v1/libraries/{lib}/documents"),
        format!("/api/v1/documents/{doc}"),
        format!("/api/v1/documents/{doc}/content"),
        format!("/api/v1/documents/{doc}/versions"),
    ] {
        assert_eq!(h.call(Method::GET, &path, Some(&outsider), None).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(h.upload(&outsider, &lib, "x.txt", "text/plain", b"x").await.status, StatusCode::NOT_FOUND);
    let listed = h.call(Method::GET, "/api/v1/libraries", Some(&outsider), None).await;
    assert!(listed.body["items"].as_array().unwrap().is_empty());
    // Admin: sees and manages the library, but reads documents only as a member.
    let seen = h.call(Method::GET, &format!("/api/v1/libraries/{lib}"), Some(&admin), None).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert!(seen.body["role"].is_null());
    let docs = h.call(Method::GET, &format!("/api/v1/libraries/{lib}/documents"), Some(&admin), None).await;
    assert_eq!(docs.status, StatusCode::FORBIDDEN);
    assert_eq!(
        h.call(Method::GET, &format!("/api/v1/documents/{doc}"), Some(&admin), None).await.status,
        StatusCode::NOT_FOUND
    );
    let unknown = h
        .call(
            Method::PUT,
            &format!("/api/v1/libraries/{lib}/members/01890000-0000-7000-8000-000000000000"),
            Some(&admin),
            Some(json!({"role": "reader"})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let bad_role = h
        .call(
            Method::PUT,
            &format!("/api/v1/libraries/{lib}/members/{reader_id}"),
            Some(&admin),
            Some(json!({"role": "owner"})),
        )
        .await;
    assert_eq!(bad_role.status, StatusCode::UNPROCESSABLE_ENTITY);
    let removed =
        h.call(Method::DELETE, &format!("/api/v1/libraries/{lib}/members/{reader_id}"), Some(&admin), None).await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    assert_eq!(
        h.call(Method::GET, &format!("/api/v1/documents/{doc}"), Some(&reader), None).await.status,
        StatusCode::NOT_FOUND
    );

    // Manager deletes; every change is in the audit log, without names or content.
    assert_eq!(
        h.call(Method::DELETE, &format!("/api/v1/documents/{doc}"), Some(&manager), None).await.status,
        StatusCode::NO_CONTENT
    );
    let log = h.call(Method::GET, "/api/v1/audit/events?limit=200", Some(&admin), None).await;
    let actions: Vec<&str> =
        log.body["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for expected in [
        "library.create",
        "document.upload",
        "library.member.put",
        "document.read",
        "library.access",
        "library.member.remove",
        "document.delete",
    ] {
        assert!(actions.contains(&expected), "{expected} missing from {actions:?}");
    }
    let text = log.body.to_string();
    assert!(!text.contains("brief.md") && !text.contains("confidential") && !text.contains("Privileged"));
}

#[tokio::test]
async fn legal_hold_blocks_every_deletion_until_lifted() {
    let h = Harness::new().await;
    let (admin, _) = h.signup("admin@example.com").await;
    let (member, _) = h.signup("member@example.com").await;
    let lib = library(&h, &admin, "Litigation").await;
    let doc = h.upload(&admin, &lib, "exhibit.txt", "text/plain", b"exhibit A").await;
    let doc = doc.body["id"].as_str().unwrap().to_owned();
    let mine = library(&h, &member, "Member's").await;
    let refused = h
        .call(Method::PATCH, &format!("/api/v1/libraries/{mine}"), Some(&member), Some(json!({"legal_hold": true})))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "only administrators set holds");

    let hold = h
        .call(Method::PATCH, &format!("/api/v1/libraries/{lib}"), Some(&admin), Some(json!({"legal_hold": true})))
        .await;
    assert_eq!(hold.status, StatusCode::OK, "{}", hold.body);
    assert_eq!(hold.body["legal_hold"], true);
    let del_doc = h.call(Method::DELETE, &format!("/api/v1/documents/{doc}"), Some(&admin), None).await;
    assert_eq!(del_doc.status, StatusCode::CONFLICT);
    assert!(del_doc.body["detail"].as_str().unwrap().contains("legal hold"));
    let del_lib = h.call(Method::DELETE, &format!("/api/v1/libraries/{lib}"), Some(&admin), None).await;
    assert_eq!(del_lib.status, StatusCode::CONFLICT);
    // Uploads continue under a hold.
    assert_eq!(h.upload(&admin, &lib, "exhibit B.txt", "text/plain", b"exhibit B").await.status, StatusCode::CREATED);
    assert_eq!(object_files(&h).len(), 2);

    let lift = h
        .call(Method::PATCH, &format!("/api/v1/libraries/{lib}"), Some(&admin), Some(json!({"legal_hold": false})))
        .await;
    assert_eq!(lift.body["legal_hold"], false);
    assert_eq!(
        h.call(Method::DELETE, &format!("/api/v1/documents/{doc}"), Some(&admin), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(object_files(&h).len(), 1, "the deleted document's object is removed");
    assert_eq!(
        h.call(Method::DELETE, &format!("/api/v1/libraries/{lib}"), Some(&admin), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert!(object_files(&h).is_empty(), "the library's objects are removed");
    assert_eq!(
        h.call(Method::GET, &format!("/api/v1/libraries/{lib}"), Some(&admin), None).await.status,
        StatusCode::NOT_FOUND
    );
    let log = h.call(Method::GET, "/api/v1/audit/events?limit=200", Some(&admin), None).await;
    let actions: Vec<&str> =
        log.body["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for expected in ["library.legal_hold.set", "library.legal_hold.lift", "library.delete"] {
        assert!(actions.contains(&expected), "{expected} missing");
    }
}

#[tokio::test]
async fn bad_uploads_are_refused_and_leave_nothing_behind() {
    let h = Harness::with(|c| c.uploads.max_bytes = 100_000).await;
    let (owner, _) = h.signup("owner@example.com").await;
    let lib = library(&h, &owner, "Inbox").await;

    let too_big = h.upload(&owner, &lib, "big.txt", "text/plain", &text(100_001, 3)).await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", too_big.body);
    assert!(too_big.body["detail"].as_str().unwrap().contains("100000 bytes"));
    assert_eq!(h.upload(&owner, &lib, "exact.txt", "text/plain", &text(100_000, 3)).await.status, StatusCode::CREATED);

    let elf = [&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0][..], &[0u8; 64][..]].concat();
    let exe = h.upload(&owner, &lib, "contract.pdf", "application/pdf", &elf).await;
    assert_eq!(exe.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", exe.body);
    assert!(exe.body["detail"].as_str().unwrap().contains("application/pdf"));
    let not_pdf = h.upload(&owner, &lib, "contract.pdf", "application/pdf", b"plain words").await;
    assert_eq!(not_pdf.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let disallowed = h.upload(&owner, &lib, "tool.exe", "application/octet-stream", b"MZ\x90\x00").await;
    assert_eq!(disallowed.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let binary_text = h.upload(&owner, &lib, "notes.txt", "text/plain", b"abc\x00def").await;
    assert_eq!(binary_text.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let pdf = h
        .upload(&owner, &lib, "../../etc/contract.pdf", "application/pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj")
        .await;
    assert_eq!(pdf.status, StatusCode::CREATED, "{}", pdf.body);
    assert_eq!(pdf.body["name"], "contract.pdf", "path tricks are dropped");
    let nameless = h.upload(&owner, &lib, "", "text/plain", b"x").await;
    assert_eq!(nameless.status, StatusCode::UNPROCESSABLE_ENTITY);

    let json_body = h
        .call(Method::POST, &format!("/api/v1/libraries/{lib}/documents"), Some(&owner), Some(json!({"file": "x"})))
        .await;
    assert_eq!(json_body.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // A body that breaks off half-way: 400, and neither an object nor a row remains.
    let (boundary, body) = multipart("half.txt", "text/plain", &text(50_000, 5));
    let head = body[..30_000].to_vec();
    let stream =
        futures::stream::iter(vec![Ok::<_, std::io::Error>(head), Err(std::io::Error::other("connection reset"))]);
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/libraries/{lib}/documents"))
        .header("authorization", format!("Bearer {owner}"))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(Body::from_stream(stream))
        .unwrap();
    let response = h.send(req).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let list = h.call(Method::GET, &format!("/api/v1/libraries/{lib}/documents"), Some(&owner), None).await;
    let names: Vec<&str> = list.body["items"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["contract.pdf", "exact.txt"]);
    assert_eq!(object_files(&h).len(), 2, "only the two stored documents have objects");
}

#[tokio::test]
async fn the_data_folder_reveals_no_name_or_content_and_tampering_is_detected() {
    let h = Harness::new().await;
    let (owner, _) = h.signup("owner@example.com").await;
    let lib = library(&h, &owner, "MARKER-LIB-3d9e").await;
    let mut content = b"MARKER-BODY-5a1c ".repeat(10_000);
    content.extend_from_slice(b"end");
    let r = h.upload(&owner, &lib, "MARKER-NAME-77b2.txt", "text/plain", &content).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let doc = r.body["id"].as_str().unwrap().to_owned();
    let sha = r.body["sha256"].as_str().unwrap().to_owned();

    for (path, bytes) in files(h.dir()) {
        for marker in [&b"MARKER-"[..], sha.as_bytes()] {
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker),
                "{} holds {}",
                path.display(),
                String::from_utf8_lossy(marker)
            );
        }
    }

    // One flipped bit in the stored object: the download fails instead of returning altered text.
    let object = object_files(&h).pop().unwrap();
    let mut bytes = std::fs::read(&object).unwrap();
    bytes[100_000] ^= 1;
    std::fs::write(&object, &bytes).unwrap();
    let broken = download(&h, &owner, &format!("/api/v1/documents/{doc}/content"), &[]).await;
    assert!(broken.body.is_err(), "a tampered object must not download completely");
    let range = download(&h, &owner, &format!("/api/v1/documents/{doc}/content"), &[("range", "bytes=0-99")]).await;
    assert_eq!(range.body.unwrap(), &content[..100], "untouched segments still read");
    let far =
        download(&h, &owner, &format!("/api/v1/documents/{doc}/content"), &[("range", "bytes=99000-99999")]).await;
    assert!(far.body.is_err(), "the tampered segment does not");
}

#[tokio::test]
async fn agents_attach_only_libraries_their_owner_reads() {
    let h = Harness::new().await;
    let (owner, _) = h.signup("owner@example.com").await;
    let (other, _) = h.signup("other@example.com").await;
    let lib = library(&h, &owner, "Precedents").await;
    let ok = h
        .call(
            Method::POST,
            "/api/v1/agents",
            Some(&owner),
            Some(json!({"name": "Researcher", "model": "conclave-demo", "library_ids": [lib]})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
    assert_eq!(ok.body["library_ids"], json!([lib]));
    let refused = h
        .call(
            Method::POST,
            "/api/v1/agents",
            Some(&other),
            Some(json!({"name": "Snoop", "model": "conclave-demo", "library_ids": [lib]})),
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.body["errors"][0]["field"], "library_ids[0]");
}

#[tokio::test]
async fn library_fields_are_checked() {
    let h = Harness::new().await;
    let (owner, _) = h.signup("owner@example.com").await;
    for body in
        [json!({}), json!({"name": ""}), json!({"name": "x".repeat(101)}), json!({"name": "ok", "legal_hold": true})]
    {
        let r: Value = h.call(Method::POST, "/api/v1/libraries", Some(&owner), Some(body.clone())).await.body;
        assert_eq!(r["status"], 422, "{body} -> {r}");
    }
    let lib = library(&h, &owner, "Old name").await;
    let renamed = h
        .call(
            Method::PATCH,
            &format!("/api/v1/libraries/{lib}"),
            Some(&owner),
            Some(json!({"name": "New name", "description": "Desc"})),
        )
        .await;
    assert_eq!(renamed.body["name"], "New name");
    assert_eq!(renamed.body["description"], "Desc");
    let cleared = h
        .call(Method::PATCH, &format!("/api/v1/libraries/{lib}"), Some(&owner), Some(json!({"description": null})))
        .await;
    assert!(cleared.body["description"].is_null());
    assert_eq!(cleared.body["name"], "New name");
}

#[tokio::test]
async fn rotation_rewraps_every_key_and_retiring_the_old_version_kills_backed_up_keys() {
    let h = Harness::new().await;
    let (admin, _) = h.signup("admin@example.com").await;
    let lib = library(&h, &admin, "Rotated").await;
    let doc = h.upload(&admin, &lib, "a.txt", "text/plain", b"before rotation").await;
    let doc = doc.body["id"].as_str().unwrap().to_owned();
    let agent = h
        .call(Method::POST, "/api/v1/agents", Some(&admin), Some(json!({"name": "A", "model": "conclave-demo"})))
        .await;
    let conv =
        h.call(Method::POST, "/api/v1/conversations", Some(&admin), Some(json!({"agent_id": agent.body["id"]}))).await;
    let conv = conv.body["id"].as_str().unwrap().to_owned();
    let title = h
        .call(
            Method::PATCH,
            &format!("/api/v1/conversations/{conv}"),
            Some(&admin),
            Some(json!({"title": "Sealed title"})),
        )
        .await;
    assert_eq!(title.status, StatusCode::OK, "{}", title.body);

    let status = h.call(Method::GET, "/api/v1/admin/keys", Some(&admin), None).await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.body);
    assert_eq!(status.body["provider"], "local");
    assert_eq!(status.body["current_version"], 1);
    assert_eq!(
        status.body["versions"],
        json!([{"version": 1, "tenant_keys": 1, "library_keys": 1, "conversation_keys": 1}])
    );

    // What a backup taken now holds: the library key wrapped under version 1.
    let me = h.call(Method::GET, "/api/v1/me", Some(&admin), None).await;
    let tenant = conclave_core::ids::TenantId(me.body["tenant_id"].as_str().unwrap().parse().unwrap());
    let library_id = conclave_core::ids::LibraryId(lib.parse().unwrap());
    let backed_up = h.core.store().library_key(tenant, library_id).await.unwrap().unwrap();

    let rotate = h.call(Method::POST, "/api/v1/admin/keys/rotate", Some(&admin), None).await;
    assert_eq!(rotate.status, StatusCode::ACCEPTED, "{}", rotate.body);
    assert_eq!(rotate.body["version"], 2);
    // The rewrap runs in the background; the status shows its progress.
    let mut done = false;
    for _ in 0..200 {
        let s = h.call(Method::GET, "/api/v1/admin/keys", Some(&admin), None).await;
        if s.body["versions"] == json!([{"version": 2, "tenant_keys": 1, "library_keys": 1, "conversation_keys": 1}]) {
            done = true;
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(done, "every key rewrapped under version 2");
    // An upload after rotation, and everything still opens.
    assert_eq!(h.upload(&admin, &lib, "b.txt", "text/plain", b"after rotation").await.status, StatusCode::CREATED);
    assert_eq!(
        download(&h, &admin, &format!("/api/v1/documents/{doc}/content"), &[]).await.body.unwrap(),
        b"before rotation"
    );
    let c = h.call(Method::GET, &format!("/api/v1/conversations/{conv}"), Some(&admin), None).await;
    assert_eq!(c.body["title"], "Sealed title");

    // Version 2 is in use: refused. Version 1 is not: retired.
    assert!(matches!(h.core.retire_tenant_key(tenant, 2).await, Err(conclave_core::Error::Conflict(_))));
    h.core.retire_tenant_key(tenant, 1).await.unwrap();
    assert_eq!(
        download(&h, &admin, &format!("/api/v1/documents/{doc}/content"), &[]).await.body.unwrap(),
        b"before rotation"
    );
    // The backed-up wrapped key no longer opens: the backup's documents are gone for good.
    let wrapped = conclave_crypto::WrappedKey::parse(&backed_up).unwrap();
    assert_eq!(wrapped.kek().version, 1);
    let keys = h.core.tenant_keys_status(tenant).await.unwrap();
    assert_eq!(keys.current_version, 2);
    let provider = h.core.master_keys().unwrap();
    let binding = conclave_crypto::Binding::lek(tenant.0, library_id.0);
    let reopened = provider.unwrap(tenant.0, &wrapped, &binding).await;
    assert!(matches!(reopened, Err(conclave_crypto::CryptoError::VersionRetired { .. })), "{reopened:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_while_uploads_run_loses_nothing() {
    let h = Harness::new().await;
    let (admin, _) = h.signup("admin@example.com").await;
    let lib = library(&h, &admin, "Busy").await;
    let bodies: Vec<Vec<u8>> = (0..6).map(|i| text(150_000 + i * 1000, 100 + i as u64)).collect();
    let uploads = bodies.iter().enumerate().map(|(i, body)| {
        let (h, admin, lib) = (&h, &admin, &lib);
        async move { h.upload(admin, lib, &format!("doc-{i}.txt"), "text/plain", body).await }
    });
    let rotation = async {
        tokio::task::yield_now().await;
        h.call(Method::POST, "/api/v1/admin/keys/rotate", Some(&admin), None).await
    };
    let (stored, rotated) = tokio::join!(futures::future::join_all(uploads), rotation);
    assert_eq!(rotated.status, StatusCode::ACCEPTED, "{}", rotated.body);
    let mut done = false;
    for _ in 0..200 {
        let s = h.call(Method::GET, "/api/v1/admin/keys", Some(&admin), None).await;
        let versions = s.body["versions"].as_array().cloned().unwrap_or_default();
        if versions.len() == 1 && versions[0]["version"] == 2 {
            done = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(done, "every key rewrapped under version 2");
    for (reply, body) in stored.iter().zip(&bodies) {
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        let id = reply.body["id"].as_str().unwrap();
        let back = download(&h, &admin, &format!("/api/v1/documents/{id}/content"), &[]).await;
        assert_eq!(back.body.as_deref().unwrap(), &body[..], "a document uploaded during the rotation reads back");
    }
}

/// Sets a file's modification time `ago` in the past, as if it had been written then.
fn age(path: &std::path::Path, ago: std::time::Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() - ago).unwrap();
}

fn write_object(path: &std::path::Path, ago: Option<std::time::Duration>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"CNCL\x01 ciphertext under a key nobody stored").unwrap();
    if let Some(ago) = ago {
        age(path, ago);
    }
}

#[tokio::test]
async fn the_sweep_removes_old_unreferenced_objects_only() {
    use conclave_core::service::orphans::ORPHAN_MIN_AGE;
    use std::time::Duration;

    let h = Harness::new().await;
    let (owner, _) = h.signup("owner@example.com").await;
    let lib = library(&h, &owner, "Matters").await;
    let content = text(70_000, 9);
    let r = h.upload(&owner, &lib, "kept.txt", "text/plain", &content).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let doc = r.body["id"].as_str().unwrap().to_owned();

    // The stored document's object, made old: referenced, so kept however old it is.
    let stored = object_files(&h).pop().unwrap();
    let two_hours = Duration::from_secs(2 * 3600);
    age(&stored, two_hours);
    let documents = stored.parent().unwrap().parent().unwrap();
    let name = || format!("v1-{}", conclave_core::ids::DocumentId::new());
    // A crash after the object of a second version was complete, before its row: old, swept.
    let next_version = stored.parent().unwrap().join(format!("v2-{}", conclave_core::ids::DocumentId::new()));
    write_object(&next_version, Some(two_hours));
    // A new document whose row never came: old, swept.
    let never_stored = documents.join(conclave_core::ids::DocumentId::new().to_string()).join(name());
    write_object(&never_stored, Some(two_hours));
    // An upload whose row is still to come: young, kept.
    let in_flight = documents.join(conclave_core::ids::DocumentId::new().to_string()).join(name());
    write_object(&in_flight, None);
    // Not a document object at all: never touched.
    let foreign = h.dir().join("objects").join("tenants").join("notes.txt");
    write_object(&foreign, Some(two_hours));

    let report = h.core.sweep_orphan_objects(ORPHAN_MIN_AGE, 1000).await.unwrap();
    assert_eq!((report.examined, report.removed, report.young, report.left), (4, 2, 1, 0), "{report:?}");
    assert!(!next_version.exists() && !never_stored.exists(), "the old orphans are removed");
    assert!(stored.exists() && in_flight.exists() && foreign.exists(), "everything else stays");
    let d = download(&h, &owner, &format!("/api/v1/documents/{doc}/content"), &[]).await;
    assert_eq!(d.body.unwrap(), content, "the document still reads");

    // Each removal is in the tenant's audit log, by the system.
    let events = h.call(Method::GET, "/api/v1/audit/events?action=document.orphan_removed", Some(&owner), None).await;
    assert_eq!(events.status, StatusCode::OK, "{}", events.body);
    let items = events.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{}", events.body);
    assert!(items.iter().all(|e| e["actor_kind"] == "system" && e["actor_id"].is_null()), "{}", events.body);
    assert!(items.iter().any(|e| e["detail"]["object"].as_str().is_some_and(|o| next_version.ends_with(o))));

    // At most `max_removals` per sweep: the rest wait for the next one.
    for _ in 0..3 {
        write_object(&documents.join(conclave_core::ids::DocumentId::new().to_string()).join(name()), Some(two_hours));
    }
    let report = h.core.sweep_orphan_objects(ORPHAN_MIN_AGE, 2).await.unwrap();
    assert_eq!((report.removed, report.left), (2, 1), "{report:?}");
    let report = h.core.sweep_orphan_objects(ORPHAN_MIN_AGE, 2).await.unwrap();
    assert_eq!((report.removed, report.left), (1, 0), "{report:?}");
    assert_eq!(object_files(&h).len(), 3, "the stored document, the young object and the foreign file");
}

/// A crash mid-upload leaves the object's staging file (`<object>#<n>`) in a local folder, which
/// object_store's listing hides: the sweep finds it by walking the folder.
#[tokio::test]
async fn the_sweep_removes_what_an_interrupted_upload_left() {
    use conclave_core::service::orphans::ORPHAN_MIN_AGE;
    use std::time::Duration;

    let h = Harness::new().await;
    let (owner, _) = h.signup("owner@example.com").await;
    let lib = library(&h, &owner, "Matters").await;
    let r = h.upload(&owner, &lib, "kept.txt", "text/plain", &text(70_000, 3)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let stored = object_files(&h).pop().unwrap();
    let folder = stored.parent().unwrap();
    let two_hours = Duration::from_secs(2 * 3600);
    let object = || format!("v2-{}", conclave_core::ids::DocumentId::new());

    let crashed = folder.join(format!("{}#1", object()));
    write_object(&crashed, Some(two_hours));
    let other_document = folder.parent().unwrap().join(conclave_core::ids::DocumentId::new().to_string());
    let crashed_elsewhere = other_document.join(format!("{}#17", object()));
    write_object(&crashed_elsewhere, Some(two_hours));
    // Being written (recently): kept.
    let writing = folder.join(format!("{}#1", object()));
    write_object(&writing, None);
    // Not a staging name of a document object: never touched.
    let odd_suffix = folder.join(format!("{}#x", object()));
    write_object(&odd_suffix, Some(two_hours));
    let foreign = h.dir().join("objects").join("tenants").join("notes.txt#1");
    write_object(&foreign, Some(two_hours));

    let report = h.core.sweep_orphan_objects(ORPHAN_MIN_AGE, 1000).await.unwrap();
    assert_eq!((report.removed, report.staging_removed, report.left), (2, 2, 0), "{report:?}");
    assert!(!crashed.exists() && !crashed_elsewhere.exists(), "the interrupted uploads' files are removed");
    assert!(stored.exists() && writing.exists() && odd_suffix.exists() && foreign.exists(), "nothing else");

    let events = h.call(Method::GET, "/api/v1/audit/events?action=document.orphan_removed", Some(&owner), None).await;
    let items = events.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{}", events.body);
    assert!(items.iter().all(|e| e["detail"]["interrupted_upload"] == true && e["actor_kind"] == "system"));

    // The removal bound covers them too.
    for _ in 0..2 {
        write_object(&folder.join(format!("{}#1", object())), Some(two_hours));
    }
    let report = h.core.sweep_orphan_objects(ORPHAN_MIN_AGE, 1).await.unwrap();
    assert_eq!((report.staging_removed, report.left), (1, 1), "{report:?}");
}

#[tokio::test]
async fn a_truncated_object_never_downloads_completely() {
    let h = Harness::new().await;
    let (owner, _) = h.signup("owner@example.com").await;
    let lib = library(&h, &owner, "Matters").await;
    let content = text(300_000, 4);
    let r = h.upload(&owner, &lib, "long.txt", "text/plain", &content).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let doc = r.body["id"].as_str().unwrap().to_owned();
    let object = object_files(&h).pop().unwrap();
    let bytes = std::fs::read(&object).unwrap();
    // Cut inside the last segment, then exactly at a segment boundary (the last segment gone).
    for cut in [bytes.len() - 10, 16 + 4 * (65536 + 16)] {
        std::fs::write(&object, &bytes[..cut]).unwrap();
        let whole = download(&h, &owner, &format!("/api/v1/documents/{doc}/content"), &[]).await;
        assert!(whole.body.is_err(), "cut at {cut}: a truncated object must not download completely");
        let tail = download(&h, &owner, &format!("/api/v1/documents/{doc}/content"), &[("range", "bytes=-100")]).await;
        // Refused before the answer starts (the store has no such bytes), or cut while streaming.
        assert!(
            tail.status.is_server_error() || tail.body.is_err(),
            "cut at {cut}: the end of a truncated object must not read ({})",
            tail.status
        );
        let head = download(&h, &owner, &format!("/api/v1/documents/{doc}/content"), &[("range", "bytes=0-99")]).await;
        assert_eq!(head.body.unwrap(), &content[..100], "cut at {cut}: the untouched start still reads");
    }
}

/// Sends `body` as a multipart upload with `boundary`, in frames of `frame` bytes.
async fn raw_upload(
    h: &Harness,
    token: &str,
    lib: &str,
    boundary: &str,
    body: Vec<u8>,
    frame: usize,
) -> (StatusCode, Value) {
    let frames: Vec<Result<Vec<u8>, std::io::Error>> = body.chunks(frame).map(|c| Ok(c.to_vec())).collect();
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/libraries/{lib}/documents"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(Body::from_stream(futures::stream::iter(frames)))
        .unwrap();
    let response = h.send(req).await;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn multipart_bodies_are_read_exactly_in_frames_of_any_size() {
    let h = Harness::new().await;
    let (owner, _) = h.signup("owner@example.com").await;
    let lib = library(&h, &owner, "Inbox").await;

    // Content full of near-delimiters, sent in frames that cut the real one anywhere.
    let boundary = "b-7d1f";
    let content = [&text(3000, 9)[..], b"\r\n--b-7d1\r\n-\r\n--", &text(5000, 10)[..], b"\r\n--b-7d1"].concat();
    let mut body = format!(
        "preamble\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"near.txt\"\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    for frame in [1, 7, 100, 4096, body.len()] {
        let (status, view) = raw_upload(&h, &owner, &lib, boundary, body.clone(), frame).await;
        assert_eq!(status, StatusCode::CREATED, "frames of {frame}: {view}");
        assert_eq!(view["size"], content.len() as u64);
        assert_eq!(view["sha256"], format!("{:x}", Sha256::digest(&content)), "frames of {frame}");
    }

    // A part with another name, a broken boundary line, a form without parts, a body cut short.
    let named = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"other\"; filename=\"a.txt\"\r\n\r\nx\r\n--{boundary}--"
    );
    let (status, _) = raw_upload(&h, &owner, &lib, boundary, named.into_bytes(), 5).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let broken = format!("--{boundary}junk\r\n\r\nx\r\n--{boundary}--");
    let (status, problem) = raw_upload(&h, &owner, &lib, boundary, broken.into_bytes(), 5).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["detail"].as_str().unwrap().contains("multipart"), "{problem}");
    let empty = format!("--{boundary}--\r\n");
    assert_eq!(raw_upload(&h, &owner, &lib, boundary, empty.into_bytes(), 5).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let cut =
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.txt\"\r\n\r\nno end");
    assert_eq!(raw_upload(&h, &owner, &lib, boundary, cut.into_bytes(), 3).await.0, StatusCode::BAD_REQUEST);

    let list = h.call(Method::GET, &format!("/api/v1/libraries/{lib}/documents"), Some(&owner), None).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1, "one document (five versions), nothing else");
    assert_eq!(object_files(&h).len(), 5, "one object a version, no staging file left");
}
