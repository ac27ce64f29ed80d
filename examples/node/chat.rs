//! The demo reactor: a chat channel.
//!
//! Channel `0x70` ("chat") carries [`ChatMessage`], a protobuf message:
//!
//! ```proto
//! message ChatMessage {
//!   string text = 1;   // one line, at most 4096 bytes
//!   bool   echo = 2;   // true on replies made by --echo (never echoed again)
//! }
//! ```
//!
//! Lines typed on stdin are broadcast; received lines are printed as
//! `chat <sender id>: <text>` (echo replies as `echo <sender id>: <text>`).

use std::sync::Arc;

use p2p_router::{
    Channel, ChannelDescriptor, ChannelId, Envelope, FullPolicy, PeerError, PeerErrorKind,
};
use std::io::BufRead;

use crate::Output;

/// The chat channel's id: one no CometBFT reactor uses (its mempool is
/// `0x30`), so a node in a CometBFT network never shares it with their
/// nodes. The router sends only on channels both sides declare.
pub const CHAT: ChannelId = ChannelId(0x70);
const MAX_TEXT: usize = 4096;

/// One chat line.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChatMessage {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(bool, tag = "2")]
    pub echo: bool,
}

pub fn descriptor() -> ChannelDescriptor {
    ChannelDescriptor::new(CHAT, "chat")
        .with_priority(5)
        .with_max_message_size(MAX_TEXT + 16)
        // Chat is best effort: a peer that does not read loses lines
        // rather than stalling us.
        .with_full_policy(FullPolicy::DropOldest)
}

/// Prints what arrives; with `echo`, sends it back.
pub async fn receive(chat: Channel<ChatMessage>, echo: bool, out: Arc<Output>) {
    while let Some(Envelope { peer, message }) = chat.recv().await {
        if message.text.len() > MAX_TEXT || message.text.contains('\n') {
            let _ = chat
                .report(PeerError::minor(
                    peer,
                    PeerErrorKind::reactor(CHAT, "chat line too long or multi-line"),
                ))
                .await;
            continue;
        }
        let kind = if message.echo { "echo" } else { "chat" };
        out.line(&format!("{kind} {peer}: {}", message.text.escape_debug()));
        if echo && !message.echo {
            let reply = ChatMessage {
                text: message.text,
                echo: true,
            };
            let _ = chat
                .send(Envelope {
                    peer,
                    message: reply,
                })
                .await;
        }
    }
}

/// Broadcasts every stdin line until stdin ends.
pub async fn send_stdin(chat: Channel<ChatMessage>) {
    // A blocking read cannot be cancelled, and tokio's stdin would hold
    // the runtime's shutdown until the next line: read on a detached
    // thread instead, which dies with the process.
    let (tx, mut lines) = tokio::sync::mpsc::channel::<String>(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            if tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        let text: String = line.chars().take(MAX_TEXT / 4).collect();
        if text.is_empty() {
            continue;
        }
        let message = ChatMessage { text, echo: false };
        if chat.broadcast(message).await.is_err() {
            return;
        }
    }
}
