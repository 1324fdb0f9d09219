//! Waiting for a backend's response head. `response_timeout` counts from the end of the
//! request's upload, not from its start: a slow upload is not a slow backend. A client that
//! pauses its upload for longer than `client_body_timeout` is the client's failure (408), never
//! the instance's.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::body::Upload;

/// How often an upload in progress is looked at, to start the response timer soon after it ends.
const UPLOAD_CHECK: Duration = Duration::from_millis(100);

/// What waiting for an answer came to.
pub(crate) enum Waited<T> {
    /// The backend answered (or failed) in time.
    Answer(T),
    /// No answer within `response_timeout` of the end of the upload.
    TimedOut,
    /// The client sent nothing of its body for this long.
    ClientStalled(Duration),
}

/// Waits for `answer`: until `timeout` after the upload ended (after `sent_at` when there is no
/// upload or it had ended by then), or until the upload has stalled for `body_timeout`.
pub(crate) async fn wait_for_answer<F: Future>(
    answer: F,
    upload: Option<&Upload>,
    sent_at: Instant,
    timeout: Duration,
    body_timeout: Duration,
) -> Waited<F::Output> {
    let mut answer = std::pin::pin!(answer);
    loop {
        let now = Instant::now();
        let wake = match upload.filter(|u| !u.is_done()) {
            Some(u) => {
                let stalled_at = u.last_read() + body_timeout;
                if now >= stalled_at {
                    return Waited::ClientStalled(body_timeout);
                }
                stalled_at.min(now + UPLOAD_CHECK)
            }
            None => {
                let from = upload
                    .and_then(Upload::done_at)
                    .map_or(sent_at, |done| done.max(sent_at));
                let deadline = from + timeout;
                if now >= deadline {
                    return Waited::TimedOut;
                }
                deadline
            }
        };
        tokio::select! {
            biased;
            a = &mut answer => return Waited::Answer(a),
            () = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}
