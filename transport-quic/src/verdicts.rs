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

    /// A node id of a generated key.
    fn peer(n: u8) -> NodeId {
        p2p_router::NodeKey::from_seed([n; 32]).node_id()
    }

    #[test]
    fn a_dial_sees_what_was_recorded_for_its_name_only() {
        let verdicts = Arc::new(Verdicts::default());
        let (refused, resumed) = (verdicts.watch(peer(1)), verdicts.watch(peer(2)));
        verdicts.record(&peer(1).to_string(), Some(CertificateError::Missing));
        let seen = refused.verdict();
        assert!(seen.checked && seen.refusal == Some(CertificateError::Missing));
        // Nothing checked for the other: a resumed handshake looks so.
        assert!(!resumed.verdict().checked);
    }

    #[test]
    fn entries_live_while_watched_and_unwatched_names_are_not_kept() {
        let verdicts = Arc::new(Verdicts::default());
        verdicts.record(&peer(3).to_string(), None);
        assert!(verdicts.lock().is_empty());
        let (first, second) = (verdicts.watch(peer(1)), verdicts.watch(peer(1)));
        drop(first);
        assert_eq!(verdicts.lock().len(), 1, "still watched once");
        drop(second);
        assert!(verdicts.lock().is_empty());
    }
}
