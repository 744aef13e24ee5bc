//! # HTTP read path
//!
//! docs/persister-protocol.md: `GET /` is a small root document naming the websocket endpoint and
//! the URL templates (msgpack by default, JSON for `Accept: application/json`, `Vary: Accept`).
//! `GET`/`HEAD /o/{ghid}` returns raw Golix bytes. The ghid is the hash of the content, so each
//! object is immutable: `ETag: "<ghid>"`, `Cache-Control: public, max-age=31536000, immutable`, and
//! `If-None-Match` answers 304. A dynamic ghid answers `307` to its current frame, with
//! `Cache-Control: no-cache`. Unknown: 404; removed: 410; not a ghid: 400. Error bodies are `{code,
//! message}`.
//!
//! Memory: an object body is streamed in 64 KiB chunks (the HTTP layer copies one chunk at a
//! time, not the object), and the bodies of all responses in flight together hold at most
//! `outbound_bytes_total`: past it a `GET` answers `503` (`unavailable`, `Retry-After: 1`)
//! rather than queue another copy for a peer that may never read it. A body stays in flight
//! until written, or until the socket's send timeout drops a peer that does not read.
//!
//! Owns: the HTTP handlers. Calls: [`crate::persist::Archive`] (reads only; on the verify pool
//! with the cluster store, whose reads are network round trips), [`wire`] names.

use std::convert::Infallible;

use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::OwnedSemaphorePermit;

use super::Shared;
use crate::golix::Ghid;
use crate::persist::wire::{self, codes};
use crate::persist::{Archive, Status};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Bytes handed to the HTTP layer at a time.
const CHUNK: usize = 64 * 1024;

/// An object body as a stream of chunks, holding its share of the body budget until it is
/// written (or the connection is dropped).
fn chunked(
    bytes: Bytes,
    permit: OwnedSemaphorePermit,
) -> SizedStream<impl futures_util::Stream<Item = Result<Bytes, Infallible>>> {
    use futures_util::StreamExt;
    let size = bytes.len() as u64;
    let chunks: Vec<Result<Bytes, Infallible>> = (0..bytes.len())
        .step_by(CHUNK)
        .map(|at| Ok(bytes.slice(at..(at + CHUNK).min(bytes.len()))))
        .collect();
    // The permit lives as long as the stream: until the last chunk is taken (or dropped).
    let stream = futures_util::stream::iter(chunks).map(move |c| {
        let _held = &permit;
        c
    });
    SizedStream::new(size, stream)
}

const MSGPACK: &str = "application/msgpack";

#[derive(Serialize)]
struct Links {
    object: &'static str,
    ws: &'static str,
}

#[derive(Serialize)]
struct Root {
    protocol: &'static str,
    links: Links,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: String,
}

fn wants_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// Serializes `body` as JSON or msgpack, as the request asks.
fn negotiated<T: Serialize>(req: &HttpRequest, status: StatusCode, body: &T) -> HttpResponse {
    let mut resp = HttpResponse::build(status);
    resp.insert_header((header::VARY, "Accept"));
    if wants_json(req) {
        resp.content_type("application/json")
            .body(serde_json::to_vec(body).unwrap_or_default())
    } else {
        resp.content_type(MSGPACK)
            .body(rmp_serde::to_vec_named(body).unwrap_or_default())
    }
}

fn error(req: &HttpRequest, status: StatusCode, code: &str, message: String) -> HttpResponse {
    negotiated(req, status, &ErrorBody { code, message })
}

/// `GET /`.
pub(super) async fn root(req: HttpRequest) -> HttpResponse {
    let doc = Root {
        protocol: wire::PROTOCOL_NAME,
        links: Links {
            object: "/o/{ghid}",
            ws: "/ws",
        },
    };
    let mut resp = negotiated(&req, StatusCode::OK, &doc);
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

/// Whether `If-None-Match` lists `etag` (or `*`).
fn not_modified(req: &HttpRequest, etag: &str) -> bool {
    req.headers().get_all(header::IF_NONE_MATCH).any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag))
        })
    })
}

/// What `/o/{ghid}` resolves to.
enum Found {
    /// A dynamic ghid: its current frame.
    Frame(Ghid),
    Bytes(bytes::Bytes),
    Gone,
    Unknown,
}

fn lookup(archive: &Archive, ghid: &Ghid) -> Result<Found, crate::persist::PersistError> {
    if let Some(frame) = archive.current_frame(ghid)? {
        return Ok(Found::Frame(frame));
    }
    if let Some(b) = archive.get(ghid)? {
        return Ok(Found::Bytes(b));
    }
    Ok(match archive.status(ghid)? {
        Status::Collected => Found::Gone,
        _ => Found::Unknown,
    })
}

/// `GET`/`HEAD /o/{ghid}`.
pub(super) async fn object(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<Shared>,
) -> HttpResponse {
    let text = path.into_inner();
    let ghid: Ghid = match text.parse() {
        Ok(g) => g,
        Err(e) => {
            return error(
                &req,
                StatusCode::BAD_REQUEST,
                codes::BAD_ARGS,
                format!("not a ghid: {e}"),
            )
        }
    };
    let storage = |e: crate::persist::PersistError| {
        error(
            &req,
            StatusCode::INTERNAL_SERVER_ERROR,
            e.code(),
            e.to_string(),
        )
    };
    let found = if state.cluster.is_none() {
        lookup(&state.archive, &ghid)
    } else {
        // Cluster store: network round trips, off the event loop.
        let archive = state.archive.clone();
        state
            .pool
            .run(move || lookup(&archive, &ghid))
            .await
            .unwrap_or_else(|_| {
                Err(crate::persist::PersistError::Unavailable(
                    "shutting down".into(),
                ))
            })
    };
    let bytes = match found {
        Ok(Found::Frame(frame)) => {
            return HttpResponse::TemporaryRedirect()
                .insert_header((header::LOCATION, format!("/o/{}", frame.as_str())))
                .insert_header((header::CACHE_CONTROL, "no-cache"))
                .finish();
        }
        Ok(Found::Bytes(b)) => b,
        Ok(Found::Gone) => {
            return error(
                &req,
                StatusCode::GONE,
                codes::NOT_FOUND,
                format!("{text} was removed"),
            )
        }
        Ok(Found::Unknown) => {
            return error(
                &req,
                StatusCode::NOT_FOUND,
                codes::NOT_FOUND,
                format!("{text} not found"),
            )
        }
        Err(e) => return storage(e),
    };
    let etag = format!("\"{text}\"");
    if not_modified(&req, &etag) {
        return HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .insert_header((header::CACHE_CONTROL, IMMUTABLE))
            .finish();
    }
    let mut resp = HttpResponse::Ok();
    resp.insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, IMMUTABLE))
        .content_type("application/octet-stream");
    if req.method() == actix_web::http::Method::HEAD {
        // actix-http sends the headers (with this body's Content-Length) and no body.
        return resp.body(bytes);
    }
    match state.http_bodies.try_take(bytes.len()) {
        Some(permit) => resp.body(chunked(bytes, permit)),
        None => {
            let mut busy = error(
                &req,
                StatusCode::SERVICE_UNAVAILABLE,
                codes::UNAVAILABLE,
                "too many large responses in flight; retry shortly".into(),
            );
            busy.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            busy
        }
    }
}
