//! The measure of an adversarial test: an honest peer keeps sending to the
//! target while each attack runs, and the attack counts as contained only
//! if that flow never stalls and the honest peer stays connected.
//!
//! Over real sockets only (the stall bound is wall-clock time).

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{text, TestNode};
use crate::identity::NodeId;
use crate::router::{ChannelSender, Envelope};

/// The longest the honest flow may pause before it counts as a stall.
pub const STALL: Duration = Duration::from_secs(1);

/// How long one attack may run before the test fails.
pub const ATTACK_BOUND: Duration = Duration::from_secs(60);

/// How often the honest peer sends.
const PACE: Duration = Duration::from_millis(5);

/// What one attack did to the honest flow.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AttackRow {
    /// The attack's name.
    pub name: String,
    /// Honest messages received per second while the attack ran.
    pub honest_rate: f64,
    /// How long the attack ran.
    pub elapsed: Duration,
    /// The longest pause between two honest messages.
    pub longest_gap: Duration,
    /// This process's resident memory afterwards, in bytes.
    pub rss_after: u64,
}

impl std::fmt::Display for AttackRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "| {} | {:.0} msg/s over {:.2} s | {} ms | {:.1} MB |",
            self.name,
            self.honest_rate,
            self.elapsed.as_secs_f64(),
            self.longest_gap.as_millis(),
            self.rss_after as f64 / 1e6
        )
    }
}

/// An honest node sending a [`Text`](super::Text) to the target every
/// 5 ms, and the rows of the attacks measured against that flow. The
/// sending stops when this is dropped.
#[derive(Debug)]
pub struct HonestFlow {
    honest: NodeId,
    pump: JoinHandle<()>,
    rows: Vec<AttackRow>,
}

impl HonestFlow {
    /// Starts `honest` sending to `target` (already connected to it).
    pub fn start(honest: &TestNode, target: NodeId) -> Self {
        let tx = honest.tx.clone();
        let pump = tokio::spawn(async move {
            let mut tick = tokio::time::interval(PACE);
            for n in 0u64.. {
                tick.tick().await;
                let envelope = Envelope {
                    peer: target,
                    message: text(format!("honest {n}")),
                };
                if tx.send(envelope).await.is_err() {
                    return;
                }
            }
        });
        Self {
            honest: honest.id(),
            pump,
            rows: Vec::new(),
        }
    }

    /// Runs `attack` while counting the honest messages `target` receives.
    /// Fails the test on a stall of [`STALL`], if the attack takes longer
    /// than [`ATTACK_BOUND`], or if the honest peer is dropped; the flow
    /// must go on after the attack too. Prints the attack's row.
    pub async fn under_attack(
        &mut self,
        target: &TestNode,
        name: &str,
        attack: impl Future<Output = ()>,
    ) -> AttackRow {
        let start = Instant::now();
        let (mut last, mut longest_gap, mut count) = (start, Duration::ZERO, 0u64);
        let attack = tokio::time::timeout(ATTACK_BOUND, attack);
        tokio::pin!(attack);
        let mut done = false;
        // Until the attack is over and a window of 40 honest messages
        // (0.2 s) was seen, so that a quick attack is measured too.
        while !done || count < 40 {
            tokio::select! {
                finished = &mut attack, if !done => {
                    finished.unwrap_or_else(|_| panic!("{name}: attack not over in {ATTACK_BOUND:?}"));
                    done = true;
                }
                got = tokio::time::timeout(STALL, target.rx.recv()) => {
                    let got = got.unwrap_or_else(|_| panic!("{name}: honest flow stalled for {STALL:?}"));
                    let got = got.unwrap_or_else(|| panic!("{name}: target stopped"));
                    assert_eq!(got.peer, self.honest, "{name}: a message from the attacker got through");
                    let now = Instant::now();
                    longest_gap = longest_gap.max(now - last);
                    last = now;
                    count += 1;
                }
            }
        }
        let elapsed = start.elapsed();
        for _ in 0..20 {
            let got = tokio::time::timeout(STALL, target.rx.recv()).await;
            assert!(
                matches!(got, Ok(Some(_))),
                "{name}: honest flow stopped after the attack"
            );
        }
        assert!(
            target.connected_set().await.contains(&self.honest),
            "{name}: the honest peer was dropped"
        );
        let row = AttackRow {
            name: name.to_owned(),
            honest_rate: count as f64 / elapsed.as_secs_f64(),
            elapsed,
            longest_gap,
            rss_after: super::process_rss_bytes(),
        };
        println!("{row}");
        self.rows.push(row.clone());
        row
    }

    /// The rows measured so far, as a Markdown table.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| attack | honest peer's rate | longest gap | RSS after |\n|---|---|---|---|\n",
        );
        for row in &self.rows {
            out.push_str(&format!("{row}\n"));
        }
        out
    }
}

/// The attack of a peer that reads nothing: `tx` sends it `message` until
/// `max` are queued or `bound` has passed. Backpressure must stop the
/// sender well before `max`, which this checks; returns how many were
/// queued.
pub async fn send_to_a_reader_of_nothing<M>(
    tx: &ChannelSender<M>,
    peer: NodeId,
    message: M,
    max: u32,
    bound: Duration,
) -> u32
where
    M: prost::Message + Clone,
{
    let mut sent = 0u32;
    let sending = async {
        while sent < max {
            let envelope = Envelope {
                peer,
                message: message.clone(),
            };
            tx.send(envelope).await.expect("send");
            sent += 1;
        }
    };
    let _ = tokio::time::timeout(bound, sending).await;
    assert!(
        sent < max,
        "{sent} messages queued to a peer that reads nothing"
    );
    sent
}

impl Drop for HonestFlow {
    fn drop(&mut self) {
        self.pump.abort();
    }
}
