//! Several app instances as a larger install runs them: on one PostgreSQL database and
//! one Redis, behind the shipped nginx site with an upstream per instance, with one
//! media server. Every server is a process on loopback, started here.

use std::time::Duration;

use crate::nginx::{NginxFront, NginxPlan};
use crate::postgres::PostgresServer;
use crate::redis::RedisServer;
use crate::{
    ServiceProcess, StackOptions, StartedMedia, free_tcp_port, start_media, wait_for_http_ok,
};

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The running cluster; dropped, every process stops.
pub struct ClusterStack {
    /// nginx in front (`front.app_url`, `front.media_url`: https, self-signed).
    pub front: NginxFront,
    /// Each instance's own loopback URL (`http://127.0.0.1:PORT`), bypassing nginx.
    pub app_urls: Vec<String>,
    pub apps: Vec<ServiceProcess>,
    pub media_url: String,
    pub media: ServiceProcess,
    pub redis: RedisServer,
    pub postgres: PostgresServer,
    /// The `DATABASE_URL` every instance uses.
    pub database_url: String,
    _data: tempfile::TempDir,
}

impl ClusterStack {
    /// `instances` app instances (at least two), their media server and nginx.
    pub fn start(instances: usize) -> ClusterStack {
        let data = tempfile::tempdir().expect("cluster data directory");
        let postgres = PostgresServer::start();
        let database_url = postgres.create_database("privatehub");
        let redis = RedisServer::start();
        let plan = NginxPlan::new();
        let options = plan.stack_options(StackOptions::default());
        let token_secret = format!("privatehub-cluster-secret-{:032}", std::process::id());
        let stream_key_secret = format!("privatehub-stream-keys-{:032}", std::process::id());
        let app_ports: Vec<u16> = (0..instances).map(|_| free_tcp_port()).collect();
        let app_urls: Vec<String> = app_ports
            .iter()
            .map(|port| format!("http://127.0.0.1:{port}"))
            .collect();
        // The media server knows every instance and calls the one that answers.
        let StartedMedia {
            url: media_url,
            port: media_port,
            process: media,
            ..
        } = start_media(
            &options,
            data.path().join("media"),
            &token_secret,
            &plan.app_url(),
            &app_urls.join(","),
        );
        let mut apps = Vec::new();
        for (index, port) in app_ports.iter().enumerate() {
            let dir = data.path().join(format!("app-{index}"));
            std::fs::create_dir_all(&dir).expect("app directory");
            let mut env: Vec<(String, String)> = vec![
                ("APP_BIND".into(), "127.0.0.1".into()),
                ("APP_PORT".into(), port.to_string()),
                ("DATABASE_URL".into(), database_url.clone()),
                ("REDIS_URL".into(), redis.url()),
                ("APP_PUBLIC_URL".into(), plan.app_url()),
                ("MEDIA_PUBLIC_URL".into(), plan.media_url()),
                ("MEDIA_INTERNAL_URL".into(), media_url.clone()),
                ("MEDIA_TOKEN_SECRET".into(), token_secret.clone()),
                ("STREAM_KEY_SECRET".into(), stream_key_secret.clone()),
            ];
            env.extend(options.app_env.iter().cloned());
            let app = ServiceProcess::spawn("privatehub-app", &dir, &env);
            wait_for_http_ok(&format!("{}/healthz", app_urls[index]), START_TIMEOUT)
                .unwrap_or_else(|error| {
                    panic!(
                        "app instance {index} not healthy: {error}\n{}",
                        app.log_tail(40)
                    )
                });
            apps.push(app);
        }
        let front = plan.start_for_app_instances(&app_ports, media_port);
        ClusterStack {
            front,
            app_urls,
            apps,
            media_url,
            media,
            redis,
            postgres,
            database_url,
            _data: data,
        }
    }
}
