//! Documents: streamed multipart upload, metadata, versions, and streamed download with `ETag`
//! and a single byte `Range`.

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use conclave_core::ids::{DocumentId, LibraryId};
use conclave_core::service::documents::{ByteRange, ContentRange, DocumentVersionView, DocumentView};
use conclave_core::Error;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiPath, ApiQuery, Authenticated, PageParams};
use crate::multipart::{self, MultipartError};
use crate::routes::PageView;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    // Uploads are bounded by CONCLAVE_MAX_UPLOAD_BYTES as they stream, not by the JSON limit.
    let uploads = OpenApiRouter::new().routes(routes!(list, upload)).layer(DefaultBodyLimit::disable());
    OpenApiRouter::new().merge(uploads).routes(routes!(get, delete)).routes(routes!(versions)).routes(routes!(content))
}

/// The multipart form of an upload: one part named `file`, with a file name.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The document; its name (the part's filename) and type (by extension, or the part's
    /// `Content-Type`) must be accepted, and the content must match the type.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct VersionsView {
    pub items: Vec<DocumentVersionView>,
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct VersionParam {
    /// A version number (`GET /api/v1/documents/{id}/versions`); the current one by default.
    version: Option<u64>,
}

/// The library's documents with their current version, newest first (members).
#[utoipa::path(get, path = "/api/v1/libraries/{id}/documents", tag = "documents", security(("bearer" = [])),
    params(("id" = LibraryId, Path), PageParams), responses(
    (status = 200, body = PageView<DocumentView>),
    (status = 403, body = Problem),
    (status = 404, body = Problem),
))]
async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<LibraryId>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<PageView<DocumentView>>> {
    Ok(Json(state.core.list_documents(&caller, id, page.page()?).await?.into()))
}

/// Uploads a document (editors and managers), streamed and encrypted as it arrives. A document
/// with the same name in the library gets a new version.
#[utoipa::path(post, path = "/api/v1/libraries/{id}/documents", tag = "documents", security(("bearer" = [])),
    params(("id" = LibraryId, Path)), request_body(content = UploadForm, content_type = "multipart/form-data"), responses(
    (status = 201, body = DocumentView),
    (status = 400, body = Problem),
    (status = 403, body = Problem),
    (status = 404, body = Problem),
    (status = 409, body = Problem),
    (status = 413, body = Problem),
    (status = 415, body = Problem),
    (status = 422, body = Problem),
))]
async fn upload(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<LibraryId>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<DocumentView>)> {
    state.core.check_upload_allowed(&caller, id).await?;
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or(MultipartError::NotMultipart)
        .and_then(multipart::boundary)
        .map_err(|_| {
            ApiError::UnsupportedMediaType(
                "Send the document as multipart/form-data with one part named 'file'.".into(),
            )
        })?;
    let part = multipart::first_part(body.into_data_stream(), &boundary).await.map_err(|e| match e {
        MultipartError::NoPart => Error::field("file", "The form has no part: send one part named 'file'.").into(),
        e => ApiError::BadRequest(format!("The multipart body could not be read: {e}."), vec![]),
    })?;
    if part.name.as_deref() != Some("file") {
        return Err(Error::field("file", "Send the document in a part named 'file' (and nothing else).").into());
    }
    let name = part.file_name.unwrap_or_default();
    let view = state.core.upload_document(&caller, id, &name, part.content_type.as_deref(), part.body).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// A document's metadata, at its current version (members of its library).
#[utoipa::path(get, path = "/api/v1/documents/{id}", tag = "documents", security(("bearer" = [])),
    params(("id" = DocumentId, Path)), responses((status = 200, body = DocumentView), (status = 404, body = Problem)))]
async fn get(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<DocumentId>,
) -> ApiResult<Json<DocumentView>> {
    Ok(Json(state.core.get_document(&caller, id).await?))
}

/// Deletes a document, all its versions and their keys (library managers); refused under legal
/// hold.
#[utoipa::path(delete, path = "/api/v1/documents/{id}", tag = "documents", security(("bearer" = [])),
    params(("id" = DocumentId, Path)), responses(
    (status = 204),
    (status = 403, body = Problem),
    (status = 404, body = Problem),
    (status = 409, body = Problem, description = "the library is on legal hold"),
))]
async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<DocumentId>,
) -> ApiResult<StatusCode> {
    state.core.delete_document(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every version of a document, newest first.
#[utoipa::path(get, path = "/api/v1/documents/{id}/versions", tag = "documents", security(("bearer" = [])),
    params(("id" = DocumentId, Path)), responses((status = 200, body = VersionsView), (status = 404, body = Problem)))]
async fn versions(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<DocumentId>,
) -> ApiResult<Json<VersionsView>> {
    Ok(Json(VersionsView { items: state.core.list_document_versions(&caller, id).await? }))
}

/// The content, decrypted as it streams: whole (200) or one byte range (206, `Range: bytes=a-b`);
/// `ETag` is the SHA-256 of the version's content, and `If-None-Match` answers 304.
#[utoipa::path(get, path = "/api/v1/documents/{id}/content", tag = "documents", security(("bearer" = [])),
    params(("id" = DocumentId, Path), VersionParam,
        ("Range" = Option<String>, Header, description = "one range: bytes=a-b, bytes=a- or bytes=-n"),
        ("If-None-Match" = Option<String>, Header, description = "an ETag from an earlier answer")),
    responses(
    (status = 200, description = "the content, in the document's own media type", content_type = "*/*", body = Vec<u8>),
    (status = 206, description = "the asked range, in the document's own media type", content_type = "*/*", body = Vec<u8>),
    (status = 304, description = "unchanged since the given ETag"),
    (status = 404, body = Problem),
    (status = 416, body = Problem),
))]
async fn content(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<DocumentId>,
    ApiQuery(query): ApiQuery<VersionParam>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(parse_range);
    let content = state.core.document_content(&caller, id, query.version, range).await?;
    let doc = &content.document;
    let etag = format!("\"{}\"", doc.sha256);
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        match &content.range {
            ContentRange::Unsatisfiable => {
                let mut r = Problem::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range-not-satisfiable",
                    format!("The range lies outside the document's {} bytes.", doc.size),
                )
                .render();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", doc.size)) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return Ok(r);
            }
            ContentRange::Full => {
                let mut r = Body::from_stream(content.body).into_response();
                r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(doc.size));
                r
            }
            ContentRange::Partial(range) => {
                let mut r = (StatusCode::PARTIAL_CONTENT, Body::from_stream(content.body)).into_response();
                let h = r.headers_mut();
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(range.end - range.start));
                if let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{}", range.start, range.end - 1, doc.size)) {
                    h.insert(header::CONTENT_RANGE, v);
                }
                r
            }
        }
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    if !matches {
        // Text was checked to be UTF-8 at upload: say so, so no browser guesses another charset.
        let content_type = if doc.content_type.starts_with("text/") && !doc.content_type.contains("charset") {
            format!("{}; charset=utf-8", doc.content_type)
        } else {
            doc.content_type.clone()
        };
        if let Ok(v) = HeaderValue::from_str(&content_type) {
            h.insert(header::CONTENT_TYPE, v);
        }
        if let Ok(v) = HeaderValue::from_str(&content_disposition(&doc.name)) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    Ok(response)
}

/// One range of `bytes=…`; anything else (several ranges, other units, nonsense) is ignored and
/// the whole content is sent, as RFC 9110 allows.
fn parse_range(value: &str) -> Option<ByteRange> {
    let spec = value.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = (start.trim(), end.trim());
    if start.is_empty() {
        return end.parse().ok().map(ByteRange::Suffix);
    }
    let start: u64 = start.parse().ok()?;
    let end: Option<u64> = if end.is_empty() { None } else { Some(end.parse().ok()?) };
    if end.is_some_and(|e| e < start) {
        return None;
    }
    Some(ByteRange::From { start, end })
}

/// `attachment` with an ASCII fallback and the exact name in RFC 8187 encoding.
fn content_disposition(name: &str) -> String {
    let fallback: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let encoded: String = name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_one_range_only() {
        assert_eq!(parse_range("bytes=0-99"), Some(ByteRange::From { start: 0, end: Some(99) }));
        assert_eq!(parse_range("bytes=100-"), Some(ByteRange::From { start: 100, end: None }));
        assert_eq!(parse_range("bytes=-500"), Some(ByteRange::Suffix(500)));
        assert_eq!(parse_range("bytes=0-1,5-6"), None);
        assert_eq!(parse_range("items=0-1"), None);
        assert_eq!(parse_range("bytes=9-1"), None);
        assert_eq!(parse_range("bytes=x-1"), None);
    }

    #[test]
    fn disposition_is_safe_for_any_name() {
        assert_eq!(
            content_disposition("Brief \"final\" é.pdf"),
            "attachment; filename=\"Brief _final_ _.pdf\"; filename*=UTF-8''Brief%20%22final%22%20%C3%A9.pdf"
        );
    }
}
