//! The PEX schedule and the rules peers must keep, as a state machine with
//! no IO: time is passed in, so tests drive it on a fake clock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::{cometbft, PexOptions};
use crate::address::ParseAddressError;
use crate::identity::NodeId;

/// Peers gone with our request outstanding whose answer is still taken.
const GONE_KEPT: usize = 64;

/// Which peer exchange a peer speaks, chosen by its connection's
/// transport: CometBFT's on MConnection, ours elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// Ours: URLs, limits from [`PexOptions`].
    Native,
    /// CometBFT's: `NetAddress`es, its reactor's limits.
    CometBft,
}

/// The limits a dialect holds both sides to.
#[derive(Debug, Clone, Copy)]
struct Rules {
    /// The least time between two requests from a peer.
    min_request_interval: Duration,
    /// Requests a peer may send before that interval applies.
    free_requests: u32,
    /// The least time between two of our requests to one peer: above the
    /// interval the peer enforces, with room for network jitter.
    our_spacing: Duration,
    /// The most addresses accepted in one response.
    max_addresses: usize,
}

impl Dialect {
    fn rules(self, options: &PexOptions) -> Rules {
        match self {
            Dialect::Native => Rules {
                min_request_interval: options.min_request_interval,
                free_requests: 1,
                our_spacing: options.min_request_interval * 2,
                max_addresses: options.max_addresses,
            },
            Dialect::CometBft => Rules {
                min_request_interval: cometbft::MIN_REQUEST_INTERVAL,
                free_requests: cometbft::FREE_REQUESTS,
                our_spacing: cometbft::OUR_REQUEST_SPACING,
                max_addresses: cometbft::MAX_ADDRESSES_RECEIVED,
            },
        }
    }
}

/// A peer's requests to us so far.
#[derive(Debug, Clone, Copy)]
struct Asked {
    count: u32,
    last: Instant,
}

/// How a peer broke the PEX rules. Each one disconnects it, except
/// [`Unanswered`](Self::Unanswered), which lowers its score.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PexViolation {
    /// It did not answer our request within the response timeout.
    #[error("no PEX response in time")]
    Unanswered,
    /// It asked again sooner than the minimum interval.
    #[error("PEX request {elapsed:?} after the previous one (minimum {minimum:?})")]
    RequestTooSoon {
        /// Time since its previous request.
        elapsed: Duration,
        /// The minimum interval.
        minimum: Duration,
    },
    /// It sent a response we did not ask for.
    #[error("unsolicited PEX response")]
    Unsolicited,
    /// Its response carried more addresses than allowed.
    #[error("PEX response with {count} addresses (at most {max})")]
    TooManyAddresses {
        /// Addresses received.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// An address in its response did not parse. Shown quoted and
    /// escaped (`Debug`), so that a forged address cannot forge log lines.
    #[error("unparsable address in PEX response {address:?}: {reason}")]
    BadAddress {
        /// The address as sent, cut to 80 characters.
        address: String,
        /// What is wrong with it.
        reason: ParseAddressError,
    },
    /// A CometBFT address whose IP does not parse (CometBFT refuses the
    /// whole message too).
    #[error("PEX address with an unparsable IP {ip:?}")]
    BadIp {
        /// The IP as sent, cut to 64 characters.
        ip: String,
    },
    /// A CometBFT address with a port above 65535.
    #[error("PEX address with port {port}")]
    BadPort {
        /// The port as sent.
        port: u32,
    },
    /// A message with neither a request nor a response.
    #[error("empty PEX message")]
    Empty,
}

/// Whom to ask for addresses and when, and whom to answer.
#[derive(Debug)]
pub(crate) struct PexState {
    options: PexOptions,
    /// Peers up with the PEX channel, and the dialect each speaks.
    up: HashMap<NodeId, Dialect>,
    /// Up peers never asked yet: each is asked as soon as it comes up,
    /// whatever else is pending (a new peer is the best news about the
    /// network).
    fresh: VecDeque<NodeId>,
    /// When the oldest peer in `fresh` came up.
    fresh_since: Instant,
    /// Up peers asked before and not waiting on our request, in asking
    /// order.
    available: VecDeque<NodeId>,
    /// Requests awaiting a response: peer → when sent.
    pending: HashMap<NodeId, Instant>,
    /// Requests given up on: a late answer is still welcome (a CometBFT
    /// peer never times a request out), but not counted as an answer in
    /// time.
    late: HashSet<NodeId>,
    /// Peers that went down with a request of ours outstanding, newest
    /// last (at most [`GONE_KEPT`]): their answer may still be in our
    /// queue behind the Down event (a CometBFT seed answers and hangs up
    /// at once), and is taken once.
    gone: VecDeque<(NodeId, Dialect)>,
    /// When we last asked each up peer (we keep our own pace below the
    /// limit we enforce on others, with room for network jitter).
    last_asked: HashMap<NodeId, Instant>,
    /// How often and when each peer last asked us.
    last_request_from: HashMap<NodeId, Asked>,
    /// The current gap between requests, set by the last response.
    interval: Duration,
    next_request: Instant,
}

impl PexState {
    pub(crate) fn new(options: PexOptions, now: Instant) -> Self {
        Self {
            interval: options.min_request_interval,
            options,
            up: HashMap::new(),
            fresh: VecDeque::new(),
            fresh_since: now,
            available: VecDeque::new(),
            pending: HashMap::new(),
            late: HashSet::new(),
            gone: VecDeque::new(),
            last_asked: HashMap::new(),
            last_request_from: HashMap::new(),
            next_request: now,
        }
    }

    /// A peer with the PEX channel came up speaking `dialect`: it is asked
    /// at once.
    pub(crate) fn peer_up(&mut self, peer: NodeId, dialect: Dialect, now: Instant) {
        if self.up.insert(peer, dialect).is_none() {
            if self.fresh.is_empty() {
                self.fresh_since = now;
            }
            self.fresh.push_back(peer);
        }
    }

    /// A peer went down: forget everything about it.
    pub(crate) fn peer_down(&mut self, peer: NodeId) {
        if let Some(dialect) = self.up.remove(&peer) {
            self.available.retain(|p| *p != peer);
            self.fresh.retain(|p| *p != peer);
            let asked = self.pending.remove(&peer).is_some();
            if self.late.remove(&peer) || asked {
                if self.gone.len() >= GONE_KEPT {
                    self.gone.pop_front();
                }
                self.gone.push_back((peer, dialect));
            }
            self.last_asked.remove(&peer);
        }
        self.last_request_from.remove(&peer);
    }

    /// Every peer we hold state for: the up ones.
    pub(crate) fn known_peers(&self) -> Vec<NodeId> {
        self.up.keys().copied().collect()
    }

    /// The dialect of an up peer (whom we answer).
    pub(crate) fn up_dialect(&self, peer: NodeId) -> Option<Dialect> {
        self.up.get(&peer).copied()
    }

    /// The dialect of an up peer, or of one gone with our request
    /// outstanding (whose answer we still read).
    pub(crate) fn dialect(&self, peer: NodeId) -> Option<Dialect> {
        self.up
            .get(&peer)
            .copied()
            .or_else(|| self.gone.iter().find(|(p, _)| *p == peer).map(|(_, d)| *d))
    }

    fn rules_of(&self, peer: NodeId) -> Rules {
        self.dialect(peer)
            .unwrap_or(Dialect::Native)
            .rules(&self.options)
    }

    /// A peer asked us: after its dialect's free requests, allowed at most
    /// once per its minimum interval, so that no peer makes us answer more
    /// often.
    pub(crate) fn on_request(&mut self, peer: NodeId, now: Instant) -> Result<(), PexViolation> {
        let rules = self.rules_of(peer);
        let asked = self.last_request_from.entry(peer).or_insert(Asked {
            count: 0,
            last: now,
        });
        if asked.count >= rules.free_requests {
            let elapsed = now.saturating_duration_since(asked.last);
            let minimum = rules.min_request_interval;
            if elapsed < minimum {
                return Err(PexViolation::RequestTooSoon { elapsed, minimum });
            }
        }
        // The reactor asks only for up peers, whose Down event clears it.
        asked.count = asked.count.saturating_add(1);
        asked.last = now;
        Ok(())
    }

    /// A peer answered with `count` addresses: it must have been asked, and
    /// stay within the limit. The addresses themselves are checked by the
    /// caller.
    pub(crate) fn on_response(
        &mut self,
        peer: NodeId,
        count: usize,
        now: Instant,
    ) -> Result<(), PexViolation> {
        // Before `gone` may forget the peer's dialect.
        let max = self.rules_of(peer).max_addresses;
        if self.pending.remove(&peer).is_some() || self.late.remove(&peer) {
            if self.up.contains_key(&peer) {
                self.available.push_back(peer);
                // Our spacing counts from the answer too: the peer got the
                // request no later than it answered, and a request delayed
                // in flight must not make the next one look too soon.
                self.last_asked.insert(peer, now);
            }
        } else {
            let index = self.gone.iter().position(|(p, _)| *p == peer);
            let index = index.ok_or(PexViolation::Unsolicited)?;
            self.gone.remove(index);
        }
        if count > max {
            return Err(PexViolation::TooManyAddresses { count, max });
        }
        Ok(())
    }

    /// A response brought `added` new addresses and the store now holds
    /// `known` of `capacity`: pick the next interval. While the node has
    /// fewer peers than it wants (`wanting`) it keeps asking at the fastest
    /// rate the rules allow, whatever the answers brought; once it has
    /// them, it asks less often as answers bring less news, and rarely as
    /// the store fills.
    pub(crate) fn learned(
        &mut self,
        added: usize,
        known: usize,
        capacity: usize,
        wanting: bool,
        now: Instant,
    ) {
        let o = &self.options;
        self.interval = if wanting {
            o.min_request_interval
        } else if capacity > 0 && known * 100 >= capacity * 95 {
            o.full_store_interval
        } else {
            // How stale the last answer was: 1 when everything in it was
            // new, growing with what we already knew.
            let staleness = (known + 1) as f64 / (added + 1) as f64;
            let peers = self.up.len().max(1) as f64;
            let factor = 1.0 + staleness * staleness / peers;
            o.min_request_interval
                .mul_f64(factor.min(1e6))
                .min(o.full_store_interval)
        };
        let since_last = self.last_asked.values().max().copied().unwrap_or(now);
        self.next_request = (since_last + self.interval).max(now);
    }

    /// The peer to ask now, if a request is due; it is then pending.
    pub(crate) fn poll_request(&mut self, now: Instant) -> Option<NodeId> {
        if let Some(peer) = self.fresh.pop_front() {
            self.pending.insert(peer, now);
            self.last_asked.insert(peer, now);
            self.next_request = self.next_request.max(now + self.interval);
            return Some(peer);
        }
        if now < self.next_request {
            return None;
        }
        let next_allowed = |p: &NodeId| {
            let spacing = self.rules_of(*p).our_spacing;
            self.last_asked.get(p).map(|t| *t + spacing)
        };
        let Some(index) = self
            .available
            .iter()
            .position(|p| next_allowed(p).is_none_or(|t| now >= t))
        else {
            // Nobody to ask now: try again when the first peer may be
            // asked, or after the idle delay.
            let earliest = self.available.iter().filter_map(next_allowed).min();
            self.next_request = earliest.unwrap_or(now + self.options.idle_retry);
            return None;
        };
        let peer = self.available.remove(index)?;
        self.pending.insert(peer, now);
        self.last_asked.insert(peer, now);
        self.next_request = now + self.interval;
        Some(peer)
    }

    /// Requests unanswered for longer than the response timeout: they are
    /// given up (the caller lowers the peers' scores). A peer is asked
    /// again only once its late answer has come: a request still in
    /// flight (a stalled TCP connection, a partition) would otherwise
    /// arrive together with the next one, which the peer must refuse as
    /// too soon.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<NodeId> {
        let timeout = self.options.response_timeout;
        let expired: Vec<NodeId> = self
            .pending
            .iter()
            .filter(|(_, sent)| now >= **sent + timeout)
            .map(|(p, _)| *p)
            .collect();
        for peer in &expired {
            self.pending.remove(peer);
            self.late.insert(*peer);
        }
        expired
    }

    /// When something is next due: a request or a response timeout.
    pub(crate) fn next_deadline(&self) -> Instant {
        if !self.fresh.is_empty() {
            // A new peer waits for nothing.
            return self.fresh_since;
        }
        let timeout = self.options.response_timeout;
        self.pending
            .values()
            .map(|sent| *sent + timeout)
            .chain(std::iter::once(self.next_request))
            .min()
            .unwrap_or(self.next_request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKey;

    fn id(n: u8) -> NodeId {
        NodeKey::from_seed([n; 32]).node_id()
    }

    fn state() -> (PexState, Instant) {
        let now = Instant::now();
        (PexState::new(PexOptions::default(), now), now)
    }

    #[test]
    fn a_new_peer_is_asked_at_once_and_then_not_again_while_pending() {
        let (mut s, now) = state();
        assert_eq!(s.poll_request(now), None);
        s.peer_up(id(1), Dialect::Native, now);
        assert_eq!(s.poll_request(now), Some(id(1)));
        assert_eq!(s.poll_request(now + Duration::from_secs(5)), None);
        s.on_response(id(1), 3, now).unwrap();
        s.learned(3, 3, 100, false, now);
        let later = now + Duration::from_secs(5);
        assert_eq!(s.poll_request(later), Some(id(1)));
    }

    #[test]
    fn every_new_peer_is_asked_at_once_even_while_another_request_is_pending() {
        let (mut s, now) = state();
        s.peer_up(id(1), Dialect::Native, now);
        assert_eq!(s.poll_request(now), Some(id(1)));
        s.peer_up(id(2), Dialect::Native, now);
        s.peer_up(id(3), Dialect::Native, now);
        assert_eq!(s.poll_request(now), Some(id(2)));
        assert_eq!(s.poll_request(now), Some(id(3)));
        assert_eq!(s.poll_request(now), None, "each new peer once");
    }

    #[test]
    fn a_node_below_its_target_keeps_the_fastest_rate_however_stale_the_answers() {
        let (mut s, now) = state();
        let min = PexOptions::default().min_request_interval;
        s.peer_up(id(1), Dialect::Native, now);
        s.learned(0, 900, 1000, true, now);
        assert_eq!(s.interval, min);
        // At its target, the same answer backs the schedule off.
        s.learned(0, 900, 1000, false, now);
        assert!(s.interval > min);
    }

    #[test]
    fn the_same_peer_is_never_asked_twice_within_twice_the_minimum_interval() {
        let (mut s, now) = state();
        let min = PexOptions::default().min_request_interval;
        s.peer_up(id(1), Dialect::Native, now);
        assert_eq!(s.poll_request(now), Some(id(1)));
        s.on_response(id(1), 0, now).unwrap();
        s.learned(100, 100, 1000, false, now);
        assert_eq!(s.poll_request(now + min), None);
        assert_eq!(s.poll_request(now + 2 * min), Some(id(1)));
    }

    #[test]
    fn the_interval_grows_as_answers_bring_less_news_and_is_longest_when_full() {
        let (mut s, now) = state();
        let o = PexOptions::default();
        s.peer_up(id(1), Dialect::Native, now);
        s.learned(50, 50, 1000, false, now);
        let fresh = s.interval;
        s.learned(0, 50, 1000, false, now);
        let stale = s.interval;
        s.learned(0, 960, 1000, false, now);
        assert!(fresh < stale, "{fresh:?} < {stale:?}");
        assert!(stale < o.full_store_interval);
        assert_eq!(s.interval, o.full_store_interval);
        assert!(fresh >= o.min_request_interval);
    }

    #[test]
    fn requests_are_limited_per_peer() {
        let (mut s, now) = state();
        let min = PexOptions::default().min_request_interval;
        s.peer_up(id(1), Dialect::Native, now);
        s.on_request(id(1), now).unwrap();
        assert!(matches!(
            s.on_request(id(1), now + min / 2),
            Err(PexViolation::RequestTooSoon { .. })
        ));
        s.on_request(id(1), now + min).unwrap();
        // Another peer has its own allowance.
        s.peer_up(id(2), Dialect::Native, now);
        s.on_request(id(2), now + min).unwrap();
    }

    #[test]
    fn a_cometbft_peer_gets_two_free_requests_then_one_per_ten_seconds() {
        let (mut s, now) = state();
        s.peer_up(id(1), Dialect::CometBft, now);
        s.on_request(id(1), now).unwrap();
        s.on_request(id(1), now).unwrap();
        let soon = now + Duration::from_secs(9);
        assert_eq!(
            s.on_request(id(1), soon),
            Err(PexViolation::RequestTooSoon {
                elapsed: Duration::from_secs(9),
                minimum: cometbft::MIN_REQUEST_INTERVAL
            })
        );
        s.on_request(id(1), now + cometbft::MIN_REQUEST_INTERVAL)
            .unwrap();
    }

    #[test]
    fn we_ask_a_cometbft_peer_at_most_once_per_its_interval_and_a_margin() {
        let (mut s, now) = state();
        s.peer_up(id(1), Dialect::CometBft, now);
        assert_eq!(s.poll_request(now), Some(id(1)));
        s.on_response(id(1), 250, now).unwrap();
        s.learned(0, 1, 1000, true, now);
        let mut t = now;
        while t < now + cometbft::OUR_REQUEST_SPACING {
            assert_eq!(s.poll_request(t), None, "at {:?}", t - now);
            t += Duration::from_millis(500);
        }
        assert_eq!(s.poll_request(t), Some(id(1)));
        assert!(cometbft::OUR_REQUEST_SPACING > cometbft::MIN_REQUEST_INTERVAL);
    }

    #[test]
    fn a_cometbft_peer_may_send_250_addresses_ours_100() {
        let (mut s, now) = state();
        s.peer_up(id(1), Dialect::CometBft, now);
        s.peer_up(id(2), Dialect::Native, now);
        assert_eq!(s.poll_request(now), Some(id(1)));
        assert_eq!(s.poll_request(now), Some(id(2)));
        assert_eq!(s.on_response(id(1), 250, now), Ok(()));
        assert!(s.on_response(id(2), 250, now).is_err());
    }

    #[test]
    fn an_answer_queued_behind_the_peers_down_is_taken_once() {
        let (mut s, now) = state();
        s.peer_up(id(1), Dialect::CometBft, now);
        assert_eq!(s.poll_request(now), Some(id(1)));
        s.peer_down(id(1));
        assert_eq!(s.dialect(id(1)), Some(Dialect::CometBft));
        assert_eq!(s.on_response(id(1), 250, now), Ok(()));
        assert_eq!(s.on_response(id(1), 1, now), Err(PexViolation::Unsolicited));
        // Only so many are remembered.
        for n in 0..=GONE_KEPT as u8 {
            s.peer_up(id(n + 10), Dialect::Native, now);
            assert_eq!(s.poll_request(now), Some(id(n + 10)));
            s.peer_down(id(n + 10));
        }
        assert_eq!(
            s.on_response(id(10), 1, now),
            Err(PexViolation::Unsolicited)
        );
        assert_eq!(s.on_response(id(11), 1, now), Ok(()));
    }

    #[test]
    fn a_peers_request_allowance_starts_again_when_it_reconnects() {
        let (mut s, now) = state();
        s.peer_up(id(1), Dialect::Native, now);
        s.on_request(id(1), now).unwrap();
        assert!(s.on_request(id(1), now).is_err());
        s.peer_down(id(1));
        s.peer_up(id(1), Dialect::Native, now);
        s.on_request(id(1), now).unwrap();
    }

    #[test]
    fn unsolicited_and_oversized_responses_are_violations() {
        let (mut s, now) = state();
        s.peer_up(id(1), Dialect::Native, now);
        assert_eq!(s.on_response(id(1), 1, now), Err(PexViolation::Unsolicited));
        assert_eq!(s.poll_request(now), Some(id(1)));
        assert!(matches!(
            s.on_response(id(1), 101, now),
            Err(PexViolation::TooManyAddresses {
                count: 101,
                max: 100
            })
        ));
        // The request was used up by the bad answer.
        assert_eq!(s.on_response(id(1), 1, now), Err(PexViolation::Unsolicited));
    }

    #[test]
    fn unanswered_requests_expire_and_down_peers_are_forgotten() {
        let (mut s, now) = state();
        let o = PexOptions::default();
        s.peer_up(id(1), Dialect::Native, now);
        s.peer_up(id(2), Dialect::Native, now);
        assert_eq!(s.poll_request(now), Some(id(1)));
        assert_eq!(s.poll_request(now), Some(id(2)));
        assert_eq!(s.next_deadline(), now + s.interval);
        assert!(s.expire(now + o.response_timeout / 2).is_empty());
        let mut expired = s.expire(now + o.response_timeout);
        expired.sort();
        let mut both = vec![id(1), id(2)];
        both.sort();
        assert_eq!(expired, both);
        // Neither is asked again while its request may be in flight.
        let later = now + 4 * o.response_timeout;
        assert_eq!(s.poll_request(later), None);
        // A late answer is still taken (CometBFT never gives a request
        // up), once, and makes the peer available again.
        assert_eq!(s.on_response(id(1), 0, now), Ok(()));
        assert_eq!(s.on_response(id(1), 0, now), Err(PexViolation::Unsolicited));
        assert_eq!(s.poll_request(later + o.idle_retry), Some(id(1)));
        s.peer_down(id(1));
        s.peer_down(id(2));
        assert!(s.known_peers().is_empty());
        assert_eq!(s.poll_request(now + o.response_timeout), None);
    }

    #[test]
    fn a_late_answer_restarts_our_spacing_so_a_delayed_request_is_not_followed_at_once() {
        let (mut s, now) = state();
        let o = PexOptions::default();
        s.peer_up(id(1), Dialect::CometBft, now);
        assert_eq!(s.poll_request(now), Some(id(1)));
        // Unanswered past the timeout: not asked again meanwhile.
        assert_eq!(s.expire(now + o.response_timeout), vec![id(1)]);
        let answered = now + Duration::from_secs(30);
        assert_eq!(s.poll_request(answered), None);
        // The answer comes late (the request sat behind a stalled link, so
        // the peer has only just read it): the next request waits a whole
        // spacing from the answer, not from our first ask.
        s.on_response(id(1), 0, answered).unwrap();
        let spacing = Dialect::CometBft.rules(&o).our_spacing;
        assert_eq!(s.poll_request(answered + spacing / 2), None);
        assert_eq!(s.poll_request(answered + spacing), Some(id(1)));
    }
}
