//! WHIP ingest (RFC 9725) and WHEP playback over HTTP, beside the `/ws` signaling.
//!
//! - `POST /whip` with `Authorization: Bearer <stream key>` and an SDP offer publishes
//!   into the key owner's live (the app starts it); `PATCH`/`DELETE /whip/session/{id}`
//!   trickle candidates and stop.
//! - `POST /whep/{username}` with an SDP offer watches that user's current live;
//!   `PATCH`/`DELETE /whep/session/{id}` likewise.
//!
//! The key is checked by the app on every `POST` (internal API, so a rotation takes
//! effect at once); `PATCH` and `DELETE` must carry the same key. Every answer carries
//! CORS headers for the configured origins so browser-based clients work. Errors are
//! `{"error":{"code","message"}}` with the status the RFC asks for. See
//! `docs/protocol.md`, "WHIP and WHEP".

pub mod app_api;
mod edge;
mod report;
pub mod sessions;

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header;
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::from_fn;
use actix_web::{HttpRequest, HttpResponse, web};
use privatehub_protocol::LiveId;
use privatehub_protocol::internal_api::WhipEndReason;
use secrecy::SecretString;
use str0m::change::SdpAnswer;

pub use report::{end_publishes, report_whip_sessions};

use self::app_api::AppApiError;
use self::edge::{
    Problem, admit, bearer, cors, endpoint_method_not_allowed, preflight, read_text,
    require_content_type, session_method_not_allowed,
};
use self::sessions::{
    HttpSessions, NewSession, SessionId, SessionKind, StopReason, WhipPublisher, same_key,
};
use crate::AppState;
use crate::engine::{PrepareError, notice_channel};
use crate::limits::SocketSlot;
use crate::sfu::{NewPeer, Role};

/// Largest SDP offer accepted (a browser's is 5-10 KB).
pub const MAX_SDP_BYTES: usize = 64 * 1024;
/// Largest trickle `PATCH` body.
const MAX_PATCH_BYTES: usize = 16 * 1024;
/// Remote candidates taken per session; later ones are ignored.
const MAX_TRICKLE_CANDIDATES: usize = 32;

/// Registers `/whip...` and `/whep...`.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            web::scope("/whip")
                .app_data(web::Data::new(Endpoint::Whip))
                .wrap(from_fn(cors))
                .service(
                    web::resource("")
                        .route(web::post().to(whip_post))
                        .route(web::method(Method::OPTIONS).to(preflight))
                        .default_service(web::to(endpoint_method_not_allowed)),
                )
                .service(session_resource()),
        )
        .service(
            web::scope("/whep")
                .app_data(web::Data::new(Endpoint::Whep))
                .wrap(from_fn(cors))
                .service(session_resource())
                .service(
                    web::resource("/{username}")
                        .route(web::post().to(whep_post))
                        .route(web::method(Method::OPTIONS).to(preflight))
                        .default_service(web::to(endpoint_method_not_allowed)),
                ),
        );
}

/// `/session/{id}` of either scope: the scope's [`Endpoint`] tells them apart.
fn session_resource() -> actix_web::Resource {
    web::resource("/session/{id}")
        .route(web::patch().to(patch))
        .route(web::delete().to(delete))
        .route(web::method(Method::OPTIONS).to(preflight))
        .default_service(web::to(session_method_not_allowed))
}

fn app_problem(error: AppApiError) -> Problem {
    match error {
        AppApiError::Refused => Problem::unauthorized("the stream key is not valid"),
        AppApiError::NotFound => {
            Problem::new(StatusCode::NOT_FOUND, "not_live", "this user is not live")
        }
        AppApiError::TakenOver => Problem::new(
            StatusCode::CONFLICT,
            "live_taken_over",
            "the live was taken over in the browser or just ended on the site: stop streaming \
             here, or wait a minute",
        ),
        AppApiError::Unavailable(detail) => {
            tracing::warn!(%detail, "the app's internal API is unavailable");
            Problem::unavailable("the site is unavailable; try again shortly")
        }
    }
}

fn prepare_problem(error: PrepareError) -> Problem {
    match error {
        PrepareError::ServerFull | PrepareError::LiveFull => {
            Problem::unavailable(&error.to_string())
        }
        PrepareError::InvalidSdp { problem, detail } => {
            tracing::debug!(?problem, %detail, "WHIP/WHEP offer refused");
            Problem::new(StatusCode::BAD_REQUEST, "invalid_sdp", problem.message())
        }
        PrepareError::Internal(detail) => {
            tracing::error!(%detail, "peer set-up failed");
            Problem::unavailable("peer set-up failed")
        }
    }
}

/// Builds the peer's `Rtc` for `offer` off the async threads, at most one per core at
/// a time (shared with `/ws` signaling).
pub(crate) async fn build_peer(
    state: &Arc<AppState>,
    role: Role,
    live: LiveId,
    offer: String,
) -> Result<(NewPeer, SdpAnswer, usize), PrepareError> {
    let offered_at = Instant::now();
    let permit = state
        .rtc_builds
        .acquire()
        .await
        .map_err(|_| PrepareError::Internal("shutting down".into()))?;
    let engine = state.engine.clone();
    let prepared =
        tokio::task::spawn_blocking(move || engine.prepare_peer(role, live, &offer, offered_at))
            .await;
    drop(permit);
    prepared.map_err(|_| PrepareError::Internal("peer set-up task failed".into()))?
}

/// Adds the peer and its session; the `201 Created` answer.
fn open_session(
    state: Arc<AppState>,
    kind: SessionKind,
    (new_peer, answer, worker): (NewPeer, SdpAnswer, usize),
    slot: SocketSlot,
) -> Result<HttpResponse, Problem> {
    let (notify, notices) = notice_channel(state.metrics.clone());
    let peer = new_peer.id;
    let live = new_peer.live;
    state
        .engine
        .add_peer(new_peer, worker, notify)
        .map_err(|_| Problem::unavailable("the media worker stopped"))?;
    let id = SessionId::generate();
    let etag = format!("\"{}\"", &SessionId::generate().as_str()[..16]);
    let prefix = match kind {
        SessionKind::Whip(_) => "/whip",
        SessionKind::Whep => "/whep",
    };
    let location = format!("{prefix}/session/{}", id.as_str());
    let ice_server_links = state.settings.turn.as_ref().map_or_else(Vec::new, |turn| {
        // Unique per answer: coturn counts `user-quota` per label.
        let label = format!(
            "{}-live{}-{:08x}",
            &prefix[1..],
            live.0,
            rand::random::<u32>()
        );
        ice_server_link_headers(&turn.ice_servers(&label, unix_seconds_now()))
    });
    HttpSessions::insert(
        state,
        NewSession {
            id,
            kind,
            live,
            peer,
            etag: etag.clone(),
        },
        notices,
        slot,
    );
    let mut response = HttpResponse::Created();
    response
        .content_type("application/sdp")
        .insert_header((header::LOCATION, location))
        .insert_header((header::ETAG, etag))
        .insert_header(("Accept-Patch", "application/trickle-ice-sdpfrag"));
    for link in ice_server_links {
        response.append_header((header::LINK, link));
    }
    Ok(response.body(answer.to_sdp_string()))
}

/// One `Link: <url>; rel="ice-server"` value per URL (RFC 9725 section 4.6), with the
/// credential of its server when it has one.
fn ice_server_link_headers(servers: &[privatehub_protocol::IceServer]) -> Vec<String> {
    let mut links = Vec::new();
    for server in servers {
        for url in &server.urls {
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(username), Some(credential)) = (&server.username, &server.credential) {
                link.push_str(&format!(
                    "; username=\"{username}\"; credential=\"{credential}\"; credential-type=\"password\""
                ));
            }
            links.push(link);
        }
    }
    links
}

fn unix_seconds_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// `POST /whip`: publish with a stream key.
async fn whip_post(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let state = state.into_inner();
    let slot = admit(&request, &state)?;
    require_content_type(&request, "application/sdp")?;
    let key = bearer(&request)
        .ok_or_else(|| Problem::unauthorized("send the stream key as Authorization: Bearer"))?
        .to_owned();
    let offer = read_text(payload, MAX_SDP_BYTES).await?;
    let authorized = state.app_api.authorize(&key).await.map_err(app_problem)?;
    // Built before the live starts, so an unusable offer starts nothing; the live id is
    // filled in once the app has started (or found) the live.
    let (mut new_peer, answer, worker) = build_peer(&state, Role::Publisher, LiveId(0), offer)
        .await
        .map_err(prepare_problem)?;
    let started = match state
        .app_api
        .start(authorized.user_id, authorized.key_generation)
        .await
    {
        Ok(started) => started,
        Err(error) => {
            state.engine.discard_prepared(worker);
            return Err(app_problem(error));
        }
    };
    new_peer.live = started.live_id;
    new_peer.record = authorized.record;
    let publisher = WhipPublisher {
        user_id: authorized.user_id,
        username: authorized.username,
        key_generation: authorized.key_generation,
        key: SecretString::from(key),
    };
    let user_id = publisher.user_id;
    tracing::info!(live = %started.live_id, username = %publisher.username, created = started.created, "WHIP publish");
    let opened = open_session(
        state.clone(),
        SessionKind::Whip(publisher),
        (new_peer, answer, worker),
        slot,
    );
    match opened {
        Ok(response) => {
            state
                .metrics
                .whip_publishes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(response)
        }
        Err(problem) => {
            if started.created {
                let _ = state
                    .app_api
                    .ended(user_id, started.live_id, WhipEndReason::SetupFailed)
                    .await;
            }
            Err(problem)
        }
    }
}

/// `POST /whep/{username}`: watch that user's current live.
async fn whep_post(
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let state = state.into_inner();
    let slot = admit(&request, &state)?;
    require_content_type(&request, "application/sdp")?;
    let offer = read_text(payload, MAX_SDP_BYTES).await?;
    let live = state
        .app_api
        .current_live(&path)
        .await
        .map_err(app_problem)?;
    let prepared = build_peer(&state, Role::Viewer, live.live_id, offer)
        .await
        .map_err(prepare_problem)?;
    let response = open_session(state.clone(), SessionKind::Whep, prepared, slot)?;
    state
        .metrics
        .whep_plays
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(response)
}

/// Which endpoint a session request came through (each scope's app data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Whip,
    Whep,
}

/// Finds the session and, for WHIP, checks the request carries its stream key.
fn session_for(
    request: &HttpRequest,
    state: &AppState,
    raw_id: &str,
    endpoint: Endpoint,
) -> Result<SessionId, Problem> {
    let id = SessionId::parse(raw_id).ok_or_else(Problem::not_found)?;
    let sessions = state.http_sessions.lock();
    let entry = sessions.get(&id).ok_or_else(Problem::not_found)?;
    match (&entry.kind, endpoint) {
        (SessionKind::Whip(publisher), Endpoint::Whip) => {
            let presented = bearer(request).unwrap_or("");
            if !same_key(publisher, presented) {
                return Err(Problem::unauthorized("this session needs its stream key"));
            }
        }
        (SessionKind::Whep, Endpoint::Whep) => {}
        _ => return Err(Problem::not_found()),
    }
    Ok(id)
}

/// `PATCH`: trickled candidates (`application/trickle-ice-sdpfrag`). ICE restarts are
/// not supported (422): the client starts a new session instead.
async fn patch(
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    endpoint: web::Data<Endpoint>,
) -> Result<HttpResponse, Problem> {
    let id = session_for(&request, &state, &path, **endpoint)?;
    require_content_type(&request, "application/trickle-ice-sdpfrag")?;
    let if_match = request
        .headers()
        .get(header::IF_MATCH)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .map(str::to_owned);
    let fragment = read_text(payload, MAX_PATCH_BYTES).await?;
    let candidates = match trickle_candidates(&fragment) {
        Some(candidates) if if_match.as_deref() != Some("*") => candidates,
        _ => {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "ice_restart_unsupported",
                "ICE restarts are not supported: DELETE this session and POST a new offer",
            ));
        }
    };
    let peer = {
        let mut sessions = state.http_sessions.lock();
        let entry = sessions.get_mut(&id).ok_or_else(Problem::not_found)?;
        if if_match.is_some_and(|tag| tag != entry.etag) {
            return Err(Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "etag_mismatch",
                "If-Match does not match this session's ETag",
            ));
        }
        let room = MAX_TRICKLE_CANDIDATES.saturating_sub(entry.candidates);
        let taken = candidates.len().min(room);
        entry.candidates += taken;
        (entry.peer, taken)
    };
    for candidate in candidates.into_iter().take(peer.1) {
        state.engine.remote_candidate(peer.0, candidate);
    }
    Ok(HttpResponse::NoContent().finish())
}

/// The remote candidates of a trickle-ICE SDP fragment (RFC 8840), or `None` when it
/// asks for an ICE restart (new ICE credentials). Lines that are not parseable
/// candidates (`a=end-of-candidates`, `a=mid:`, mDNS names...) are skipped. Public for
/// the fuzz entry points.
pub fn trickle_candidates(fragment: &str) -> Option<Vec<str0m::Candidate>> {
    if fragment.contains("a=ice-ufrag:") || fragment.contains("a=ice-pwd:") {
        return None;
    }
    Some(
        fragment
            .lines()
            .filter_map(|line| line.trim().strip_prefix("a="))
            .filter(|line| line.starts_with("candidate:"))
            .filter_map(|line| str0m::Candidate::from_sdp_string(line).ok())
            .collect(),
    )
}

/// `DELETE`: the session ends (a WHIP live ends with it).
async fn delete(
    request: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    endpoint: web::Data<Endpoint>,
) -> Result<HttpResponse, Problem> {
    let id = session_for(&request, &state, &path, **endpoint)?;
    state.http_sessions.stop(&id, StopReason::Deleted);
    Ok(HttpResponse::Ok().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trickle_fragments_give_candidates_or_ask_for_a_restart() {
        let fragment = "a=ice-options:trickle\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n\
                        a=candidate:1 1 UDP 2130706431 127.0.0.1 50000 typ host\r\n\
                        a=candidate:2 1 UDP 2130706431 abc.local 50001 typ host\r\n\
                        a=end-of-candidates\r\n";
        let candidates = trickle_candidates(fragment).unwrap();
        assert_eq!(candidates.len(), 1, "{candidates:?}");
        assert_eq!(candidates[0].addr().port(), 50000);
        assert!(trickle_candidates("a=ice-ufrag:x\r\na=ice-pwd:y\r\n").is_none());
        assert_eq!(trickle_candidates("").unwrap().len(), 0);
    }

    #[test]
    fn session_ids_are_strict() {
        let id = SessionId::generate();
        assert_eq!(SessionId::parse(id.as_str()), Some(id));
        assert_eq!(SessionId::parse("../etc"), None);
        assert_eq!(SessionId::parse(&"g".repeat(32)), None);
    }
}
