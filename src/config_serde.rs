//! `Deserialize` for the types a node's configuration names by string
//! (peer addresses, node ids) or by number (scores), behind the `serde`
//! feature: they parse exactly as `FromStr` does, errors included.

use std::str::FromStr;

use serde::de::{Deserialize, Deserializer, Error};

use crate::address::PeerAddress;
use crate::identity::NodeId;
use crate::peer_manager::PeerScore;

fn parsed<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(D::Error::custom)
}

/// `Deserialize` through `FromStr`, for types a config names by string.
macro_rules! deserialize_parsed {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                parsed(deserializer)
            }
        }
    )*};
}

deserialize_parsed!(PeerAddress, NodeId);

impl<'de> Deserialize<'de> for PeerScore {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        i16::deserialize(deserializer).map(PeerScore)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::de::DeserializeOwned;

    use crate::{ChannelDescriptor, ChannelId, FullPolicy, PeerManagerOptions, RouterOptions};

    /// `text` read as a `T`; the test fails on an error.
    fn read<T: DeserializeOwned>(text: &str) -> T {
        toml::from_str(text).unwrap()
    }

    /// The error reading `text` as a `T` gives, as a user sees it.
    fn refusal<T: DeserializeOwned + std::fmt::Debug>(text: &str) -> String {
        toml::from_str::<T>(text).unwrap_err().to_string()
    }

    #[test]
    fn options_read_from_toml_with_humantime_durations_and_defaults() {
        let router: RouterOptions = read(
            r#"
            dial_concurrency = 4
            handshake_timeout = "20s"
            peer_error_window = "1m 30s"
            "#,
        );
        assert_eq!(router.dial_concurrency, 4);
        assert_eq!(router.handshake_timeout, Duration::from_secs(20));
        assert_eq!(router.peer_error_window, Duration::from_secs(90));
        assert_eq!(router.max_inbound, RouterOptions::default().max_inbound);

        let id = "89006b58739b9db9d25e4295cdb96ab10ac1ef9f";
        let pm: PeerManagerOptions = read(&format!(
            r#"
            max_connected = 10
            min_retry_time = "100ms"
            persistent_peers = ["quic://{id}@localhost:26656"]
            private_peers = ["{id}"]
            peer_scores = {{ "{id}" = 7 }}
            "#
        ));
        assert_eq!(pm.max_connected, 10);
        assert_eq!(pm.min_retry_time, Duration::from_millis(100));
        assert_eq!(
            pm.persistent_peers[0].to_string(),
            format!("quic://{id}@localhost:26656")
        );
        assert_eq!(pm.private_peers.len(), 1);

        let channel: ChannelDescriptor = read(
            r#"
            id = 34
            name = "votes"
            full_policy = "drop_oldest"
            "#,
        );
        let want =
            ChannelDescriptor::new(ChannelId(34), "votes").with_full_policy(FullPolicy::DropOldest);
        assert_eq!(channel, want);
    }

    #[test]
    fn bad_values_and_unknown_keys_are_errors_naming_the_problem() {
        let e = refusal::<PeerManagerOptions>(r#"persistent_peers = ["nope"]"#);
        assert!(e.contains("persistent_peers"), "{e}");
        let e = refusal::<RouterOptions>("dial_concurency = 3");
        assert!(e.contains("dial_concurency"), "{e}");
        let e = refusal::<RouterOptions>(r#"dial_timeout = "soon""#);
        assert!(e.contains("dial_timeout"), "{e}");
    }
}
