//! Server-rendered pages (askama templates in `templates/`). Forms and buttons on
//! them call the JSON API from `static/*.js`; there are no inline scripts, so the
//! CSP can say `script-src 'self'`.

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, LOCATION};
use actix_web::{HttpResponse, web};
use askama::Template;
use privatehub_protocol::recordings::{RecordingId, RecordingState};

use super::json::rfc3339;
use crate::auth::MaybeUser;
use crate::db::recordings::{self, Recording};
use crate::db::{self, lives, users};
use crate::domain::Username;
use crate::error::InternalError;
use crate::state::AppState;

/// A live as the pages show it.
pub struct LiveCard {
    pub id: i64,
    pub username: String,
    pub title: String,
    pub started_at: String,
    pub viewers: u32,
    /// First letter of the username, for the card's avatar.
    pub initial: String,
}

impl LiveCard {
    fn new(live: &lives::Live, viewers: u32) -> LiveCard {
        LiveCard {
            id: live.id.0,
            username: live.username.to_string(),
            title: live.title.clone(),
            started_at: rfc3339(live.started_at),
            viewers,
            initial: live
                .username
                .as_str()
                .chars()
                .next()
                .map(|c| c.to_ascii_uppercase().to_string())
                .unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    viewer: Option<String>,
    lives: Vec<LiveCard>,
}

#[derive(Template)]
#[template(path = "auth_form.html")]
struct AuthFormPage {
    viewer: Option<String>,
    /// `signup` or `login`.
    mode: &'static str,
    heading: &'static str,
    submit_label: &'static str,
    endpoint: &'static str,
}

#[derive(Template)]
#[template(path = "live.html")]
struct LivePage {
    viewer: Option<String>,
    channel: String,
    live: Option<LiveCard>,
}

#[derive(Template)]
#[template(path = "start_live.html")]
struct StartLivePage {
    viewer: Option<String>,
    channel: String,
    live: Option<LiveCard>,
}

#[derive(Template)]
#[template(path = "stream_settings.html")]
struct StreamSettingsPage {
    viewer: Option<String>,
    whip_url: String,
    record_lives: bool,
}

/// A recording as the pages show it.
pub struct VideoCard {
    pub id: String,
    pub title: String,
    /// RFC 3339, shown in the visitor's time zone by `app.js`.
    pub started_at: String,
    /// The same in UTC for people (`2026-11-25 12:00 UTC`), until the script runs.
    pub started_at_text: String,
    /// `h:mm:ss`.
    pub duration: String,
    /// Still being recorded (the live goes on).
    pub recording_now: bool,
}

impl VideoCard {
    fn new(recording: &Recording) -> VideoCard {
        let started_at = rfc3339(recording.started_at_ms.div_euclid(1000));
        VideoCard {
            id: recording.id.to_string(),
            title: recording.title.clone(),
            started_at_text: started_at
                .get(..16)
                .map(|minutes| format!("{} UTC", minutes.replace('T', " ")))
                .unwrap_or_default(),
            started_at,
            duration: clock_duration(recording.duration_ms),
            recording_now: recording.state == RecordingState::Recording,
        }
    }
}

/// A duration as `h:mm:ss` (`0:04:05`, `12:00:00`).
pub fn clock_duration(ms: i64) -> String {
    let seconds = ms.max(0) / 1000;
    format!(
        "{}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

#[derive(Template)]
#[template(path = "videos.html")]
struct VideosPage {
    viewer: Option<String>,
    channel: String,
    videos: Vec<VideoCard>,
    /// The viewer is the channel's owner and has recording turned off.
    recording_off: bool,
}

#[derive(Template)]
#[template(path = "replay.html")]
struct ReplayPage {
    viewer: Option<String>,
    channel: String,
    video: VideoCard,
    /// The viewer created this video (and may delete it).
    is_owner: bool,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    viewer: Option<String>,
    status: u16,
    title: &'a str,
}

fn render(status: StatusCode, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(html) => HttpResponse::build(status)
            .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
            .body(html),
        Err(error) => {
            tracing::error!(%error, "template rendering failed");
            HttpResponse::InternalServerError()
                .insert_header((CONTENT_TYPE, "text/plain; charset=utf-8"))
                .body("internal server error")
        }
    }
}

/// An HTML error page.
pub fn error_page(status: StatusCode, title: &str, viewer: Option<String>) -> HttpResponse {
    render(
        status,
        &ErrorPage {
            viewer,
            status: status.as_u16(),
            title,
        },
    )
}

fn viewer_name(viewer: &MaybeUser) -> Option<String> {
    viewer.0.as_ref().map(|user| user.username.to_string())
}

/// `GET /`: who is live.
pub async fn home(
    state: web::Data<AppState>,
    viewer: MaybeUser,
) -> Result<HttpResponse, InternalError> {
    let current = db::run(&state.pool, |connection| {
        lives::list_current(connection).map_err(InternalError::from)
    })
    .await?;
    let lives = current
        .iter()
        .map(|live| LiveCard::new(live, state.viewers.current(live.id)))
        .collect();
    Ok(render(
        StatusCode::OK,
        &HomePage {
            viewer: viewer_name(&viewer),
            lives,
        },
    ))
}

/// `GET /signup`.
pub async fn signup(viewer: MaybeUser) -> HttpResponse {
    render(
        StatusCode::OK,
        &AuthFormPage {
            viewer: viewer_name(&viewer),
            mode: "signup",
            heading: "Create your account",
            submit_label: "Sign up",
            endpoint: "/api/auth/signup",
        },
    )
}

/// `GET /login`.
pub async fn login(viewer: MaybeUser) -> HttpResponse {
    render(
        StatusCode::OK,
        &AuthFormPage {
            viewer: viewer_name(&viewer),
            mode: "login",
            heading: "Log in",
            submit_label: "Log in",
            endpoint: "/api/auth/login",
        },
    )
}

/// The channel owner's stored name and current live, or `None` if no such user.
async fn channel(
    state: &AppState,
    raw: &str,
) -> Result<Option<(String, Option<LiveCard>)>, InternalError> {
    let Ok(username) = Username::parse(raw) else {
        return Ok(None);
    };
    let viewers = state.viewers.clone();
    db::run(&state.pool, move |connection| {
        let Some(owner) = users::find_by_username(connection, &username)? else {
            return Ok(None);
        };
        let live = lives::find_current_by_user(connection, owner.id)?;
        let card = live.map(|live| LiveCard::new(&live, viewers.current(live.id)));
        Ok(Some((owner.username.to_string(), card)))
    })
    .await
}

/// `GET /{username}/live`: the viewer page (the player is `static/live-page.js`).
pub async fn live(
    state: web::Data<AppState>,
    viewer: MaybeUser,
    path: web::Path<String>,
) -> Result<HttpResponse, InternalError> {
    let viewer = viewer_name(&viewer);
    let Some((channel, live)) = channel(&state, &path).await? else {
        return Ok(error_page(StatusCode::NOT_FOUND, "No such user", viewer));
    };
    Ok(render(
        StatusCode::OK,
        &LivePage {
            viewer,
            channel,
            live,
        },
    ))
}

/// `GET /{username}/start-live`: the broadcaster page, for its owner only. Signed-out
/// visitors are sent to the log-in page, other users get 403.
pub async fn start_live(
    state: web::Data<AppState>,
    viewer: MaybeUser,
    path: web::Path<String>,
) -> Result<HttpResponse, InternalError> {
    let Some(user) = viewer.0 else {
        let next = match Username::parse(&path) {
            Ok(username) => format!("/login?next=/{username}/start-live"),
            Err(_) => "/login".to_owned(),
        };
        return Ok(HttpResponse::SeeOther()
            .insert_header((LOCATION, next))
            .finish());
    };
    let viewer = Some(user.username.to_string());
    if !user.username.as_str().eq_ignore_ascii_case(&path) {
        return Ok(error_page(
            StatusCode::FORBIDDEN,
            "Only the channel's owner can go live here",
            viewer,
        ));
    }
    let Some((channel, live)) = channel(&state, &path).await? else {
        return Ok(error_page(StatusCode::NOT_FOUND, "No such user", viewer));
    };
    Ok(render(
        StatusCode::OK,
        &StartLivePage {
            viewer,
            channel,
            live,
        },
    ))
}

/// `GET /settings/stream`: the signed-in user's WHIP URL and stream key, for OBS, and
/// whether their lives are recorded. The key itself is fetched by
/// `static/stream-settings.js` when revealed or copied.
pub async fn stream_settings(state: web::Data<AppState>, viewer: MaybeUser) -> HttpResponse {
    let Some(user) = &viewer.0 else {
        return HttpResponse::SeeOther()
            .insert_header((LOCATION, "/login?next=/settings/stream"))
            .finish();
    };
    render(
        StatusCode::OK,
        &StreamSettingsPage {
            viewer: viewer_name(&viewer),
            whip_url: format!("{}/whip", state.settings.media_public_url),
            record_lives: user.record_lives,
        },
    )
}

/// `GET /{username}/videos`: the channel's past lives that have a recording, newest
/// first.
pub async fn videos(
    state: web::Data<AppState>,
    viewer: MaybeUser,
    path: web::Path<String>,
) -> Result<HttpResponse, InternalError> {
    let viewer_id = viewer.0.as_ref().map(|user| user.id);
    let viewer = viewer_name(&viewer);
    let Ok(username) = Username::parse(&path) else {
        return Ok(error_page(StatusCode::NOT_FOUND, "No such user", viewer));
    };
    let found = db::run(&state.pool, move |connection| {
        let Some(owner) = users::find_by_username(connection, &username)? else {
            return Ok(None);
        };
        let listed =
            recordings::list_visible_by_user(connection, owner.id, recordings::MAX_LISTED)?;
        Ok::<_, InternalError>(Some((owner, listed)))
    })
    .await?;
    let Some((owner, listed)) = found else {
        return Ok(error_page(StatusCode::NOT_FOUND, "No such user", viewer));
    };
    let recording_off = viewer_id == Some(owner.id) && !owner.record_lives;
    Ok(render(
        StatusCode::OK,
        &VideosPage {
            viewer,
            channel: owner.username.to_string(),
            videos: listed.iter().map(VideoCard::new).collect(),
            recording_off,
        },
    ))
}

/// `GET /{username}/videos/{id}`: the replay page (the player and the chat replay are
/// `static/replay-page.js`). 404 unless the id is one of the channel's visible videos.
pub async fn replay(
    state: web::Data<AppState>,
    viewer: MaybeUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, InternalError> {
    let viewer_id = viewer.0.as_ref().map(|user| user.id);
    let viewer = viewer_name(&viewer);
    let (raw_username, raw_id) = path.into_inner();
    let (Ok(username), Ok(id)) = (Username::parse(&raw_username), RecordingId::parse(&raw_id))
    else {
        return Ok(error_page(StatusCode::NOT_FOUND, "No such video", viewer));
    };
    let found = db::run(&state.pool, move |connection| {
        recordings::find_visible(connection, &id).map_err(InternalError::from)
    })
    .await?;
    let Some(recording) = found.filter(|recording| {
        recording
            .username
            .as_str()
            .eq_ignore_ascii_case(username.as_str())
    }) else {
        return Ok(error_page(StatusCode::NOT_FOUND, "No such video", viewer));
    };
    Ok(render(
        StatusCode::OK,
        &ReplayPage {
            viewer,
            channel: recording.username.to_string(),
            is_owner: viewer_id == Some(recording.user_id),
            video: VideoCard::new(&recording),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_a_clock() {
        assert_eq!(clock_duration(0), "0:00:00");
        assert_eq!(clock_duration(999), "0:00:00");
        assert_eq!(clock_duration(245_000), "0:04:05");
        assert_eq!(clock_duration(3_723_000), "1:02:03");
        assert_eq!(clock_duration(43_200_000), "12:00:00");
        assert_eq!(clock_duration(-5), "0:00:00");
    }
}
