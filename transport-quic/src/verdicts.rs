//! What the dialer's certificate verifier saw, per dial.
//!
//! rustls resumes a session only with the verifier that checked it first,
//! so a transport has one verifier for all its dials; each dial watches
//! its server name (the node id it dials) and reads back what happened
//! to it: why its certificate was refused, for a typed dial error, or
//! that no certificate came at all (the session was resumed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use p2p_router::NodeId;

use crate::tls::CertificateError;

/// What the verifier saw for one server name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Verdict {
    /// Why the certificate was refused, if it was.
    pub(crate) refusal: Option<CertificateError>,
    /// Whether a certificate was checked; a handshake that finished
    /// without one resumed a session.
    pub(crate) checked: bool,
}

/// The verdicts of the dials in progress. Entries live only while a dial
/// watches them, so there are at most as many as concurrent dials.
#[derive(Debug, Default)]
pub(crate) struct Verdicts {
    /// Per server name: how many dials watch it, and what was seen. Two
    /// dials of one node id at once share the entry (the router never
    /// makes them; both would meet the same certificate anyway).
    watched: Mutex<HashMap<String, (usize, Verdict)>>,
}

impl Verdicts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (usize, Verdict)>> {
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts watching the dial of `peer`, until the guard drops.
    pub(crate) fn watch(self: &Arc<Self>, peer: NodeId) -> Watch {
        let name = peer.to_string();
        let mut watched = self.lock();
        let entry = watched.entry(name.clone()).or_default();
        entry.0 += 1;
        entry.1 = Verdict::default();
        Watch {
            verdicts: self.clone(),
            name,
        }
    }

    /// Records, for a watched `server_name`, that a certificate was
    /// checked and why it was refused, if it was.
    pub(crate) fn record(&self, server_name: &str, refusal: Option<CertificateError>) {
        if let Some((_, verdict)) = self.lock().get_mut(server_name) {
            verdict.checked = true;
            verdict.refusal = refusal;
        }
    }
}

/// A dial's view of its verdict; stops watching when dropped.
#[derive(Debug)]
pub(crate) struct Watch {
    verdicts: Arc<Verdicts>,
    name: String,
}

impl Watch {
    /// What the verifier saw so far.
    pub(crate) fn verdict(&self) -> Verdict {
        let watched = self.verdicts.lock();
        watched
            .get(&self.name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watched = self.verdicts.lock();
        if let Some(entry) = watched.get_mut(&self.name) {
            entry.0 -= 1;
            if entry.0 == 0 {
                watched.remove(&self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> NodeId {
        NodeId::from_bytes([n; 20])
    }

    #[test]
    fn a_watched_dial_sees_its_verdict_and_the_entry_goes_with_the_last_watch() {
        let verdicts = Arc::new(Verdicts::default());
        let (a, b) = (peer(1), peer(2));
        let watch_a = verdicts.watch(a);
        let watch_b = verdicts.watch(b);
        verdicts.record(&a.to_string(), Some(CertificateError::Missing));
        assert!(watch_a.verdict().checked);
        assert_eq!(watch_a.verdict().refusal, Some(CertificateError::Missing));
        // Nothing seen for b: a resumed handshake looks like this.
        assert!(!watch_b.verdict().checked);
        // An unwatched name is not recorded, so nothing grows.
        verdicts.record(&peer(3).to_string(), None);
        let again = verdicts.watch(a);
        drop(watch_a);
        assert_eq!(verdicts.lock().len(), 2, "a is still watched once");
        drop((again, watch_b));
        assert!(verdicts.lock().is_empty());
    }
}
