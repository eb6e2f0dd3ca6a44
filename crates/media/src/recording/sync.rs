//! Tells the app which recordings exist: every few seconds, the reports that changed
//! since the app last accepted them (all of them after a start), and the deletions the
//! app answers with handed to the recorder.

use std::sync::Arc;
use std::time::Duration;

use privatehub_protocol::recordings::MAX_RECORDINGS_PER_SYNC;

use super::{Recorder, RecorderInput};
use crate::AppState;

const SYNC_EVERY: Duration = Duration::from_secs(3);

pub async fn report_recordings(state: Arc<AppState>) {
    let Some(recorder) = state.recorder.clone() else {
        return;
    };
    let mut ticker = tokio::time::interval(SYNC_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticker.tick().await;
        sync_once(&state, &recorder, &mut failing).await;
    }
}

async fn sync_once(state: &AppState, recorder: &Recorder, failing: &mut bool) {
    let reports = recorder.catalog.unsent(MAX_RECORDINGS_PER_SYNC);
    match state.app_api.sync_recordings(reports.clone()).await {
        Ok(answer) => {
            if *failing {
                tracing::info!("recordings: reporting to the app works again");
                *failing = false;
            }
            recorder.catalog.mark_sent(&reports);
            if !answer.delete.is_empty() {
                recorder.forget(&answer.delete);
                recorder.offer(RecorderInput::Delete(answer.delete));
            }
        }
        Err(error) => {
            if !*failing {
                tracing::warn!(%error, "recordings: cannot report to the app (retrying)");
                *failing = true;
            }
        }
    }
}
