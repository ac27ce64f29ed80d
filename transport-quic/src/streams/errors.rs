//! Stream misbehaviour: counted per connection, reported to the router, and
//! the connection closed once there is too much of it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use p2p_router::ConnectionError;
use tokio::sync::mpsc;

use crate::codes::CloseCode;

/// Stream misbehaviour seen on a connection: reported to the router, and
/// the connection closed once there is too much of it.
#[derive(Clone)]
pub(crate) struct StreamErrors {
    tx: mpsc::Sender<ConnectionError>,
    count: Arc<AtomicU32>,
    max: u32,
    conn: quinn::Connection,
}

impl StreamErrors {
    pub(crate) fn new(
        conn: quinn::Connection,
        max: u32,
    ) -> (Self, mpsc::Receiver<ConnectionError>) {
        let (tx, rx) = mpsc::channel(16);
        let errors = Self {
            tx,
            count: Arc::new(AtomicU32::new(0)),
            max,
            conn,
        };
        (errors, rx)
    }

    /// Counts one error; `report` also queues it for `next_stream_error`
    /// (errors returned from `recv` reach the router that way instead).
    pub(super) fn record(&self, error: ConnectionError, report: bool) {
        tracing::debug!(%error, "bad stream");
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if report {
            // A full queue means the router is behind; the count still
            // closes the connection if this goes on.
            let _ = self.tx.try_send(error);
        }
        if n > self.max {
            let code = CloseCode::TooManyStreamErrors;
            self.conn.close(code.varint(), code.phrase());
        }
    }
}
