//! Channel ids and descriptors: what a reactor declares about each channel.

use std::fmt;

/// A channel's number.
///
/// One byte, because that is what the wire carries: `NodeInfo.channels` is a
/// byte string with one byte per channel, and MConnection packets name their
/// channel in one byte. Go peers only use ids below `0x80`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize), serde(transparent))]
pub struct ChannelId(pub u8);

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#04x}", self.0)
    }
}

/// What a send does when the channel's per-peer send buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum FullPolicy {
    /// Wait for room (backpressure reaches the sending reactor). The default:
    /// nothing is lost silently.
    #[default]
    Wait,
    /// Discard the message being sent, and count it.
    DropNewest,
    /// Discard the oldest queued message to make room, and count it. Suits
    /// channels where only the latest state matters.
    DropOldest,
}

/// Everything the router needs to know about a channel.
///
/// Build with [`ChannelDescriptor::new`] and the `with_*` methods; the
/// defaults are the `DEFAULT_*` constants.
///
/// With the `serde` feature it deserializes from a table that needs `id`
/// and `name`; every other field defaults to its `DEFAULT_*` constant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(deny_unknown_fields)
)]
#[non_exhaustive]
pub struct ChannelDescriptor {
    /// The channel's id, unique within a router.
    pub id: ChannelId,
    /// A name for logs and metrics.
    pub name: String,
    /// Relative importance; higher is sent first. Maps to QUIC stream
    /// priority and to MConnection's channel priority.
    #[cfg_attr(feature = "serde", serde(default = "defaults::priority"))]
    pub priority: u8,
    /// Messages buffered per peer before [`full_policy`](Self::full_policy)
    /// applies.
    #[cfg_attr(feature = "serde", serde(default = "defaults::send_capacity"))]
    pub send_capacity: usize,
    /// Messages buffered for the receiving reactor before the transport stops
    /// reading this channel (backpressure to the sender).
    #[cfg_attr(feature = "serde", serde(default = "defaults::receive_capacity"))]
    pub receive_capacity: usize,
    /// The largest encoded message accepted, in bytes; a bigger one is a peer
    /// error.
    #[cfg_attr(feature = "serde", serde(default = "defaults::max_message_size"))]
    pub max_message_size: usize,
    /// What a send does when the per-peer buffer is full.
    #[cfg_attr(feature = "serde", serde(default))]
    pub full_policy: FullPolicy,
}

/// The `DEFAULT_*` constants as functions, for serde's field defaults.
#[cfg(feature = "serde")]
mod defaults {
    use super::ChannelDescriptor as D;

    pub(super) fn priority() -> u8 {
        D::DEFAULT_PRIORITY
    }

    pub(super) fn send_capacity() -> usize {
        D::DEFAULT_SEND_CAPACITY
    }

    pub(super) fn receive_capacity() -> usize {
        D::DEFAULT_RECEIVE_CAPACITY
    }

    pub(super) fn max_message_size() -> usize {
        D::DEFAULT_MAX_MESSAGE_SIZE
    }
}

/// By-value setters, one per field: `name(field: Type)` sets `field`.
/// The descriptor is `#[non_exhaustive]`, so other crates build it with
/// these.
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident($field:ident: $ty:ty);)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, $field: $ty) -> Self {
                self.$field = $field;
                self
            }
        )*
    };
}

impl ChannelDescriptor {
    /// Default [`priority`](Self::priority).
    pub const DEFAULT_PRIORITY: u8 = 1;
    /// Default [`send_capacity`](Self::send_capacity), in messages.
    pub const DEFAULT_SEND_CAPACITY: usize = 64;
    /// Default [`receive_capacity`](Self::receive_capacity), in messages.
    pub const DEFAULT_RECEIVE_CAPACITY: usize = 64;
    /// Default [`max_message_size`](Self::max_message_size): 1 MiB.
    pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;

    /// A descriptor with default settings.
    pub fn new(id: ChannelId, name: impl Into<String>) -> Self {
        Self {
            id,
            name: name.into(),
            priority: Self::DEFAULT_PRIORITY,
            send_capacity: Self::DEFAULT_SEND_CAPACITY,
            receive_capacity: Self::DEFAULT_RECEIVE_CAPACITY,
            max_message_size: Self::DEFAULT_MAX_MESSAGE_SIZE,
            full_policy: FullPolicy::Wait,
        }
    }

    setters! {
        /// Sets the priority.
        with_priority(priority: u8);
        /// Sets the per-peer send buffer capacity, in messages.
        with_send_capacity(send_capacity: usize);
        /// Sets the receive buffer capacity, in messages.
        with_receive_capacity(receive_capacity: usize);
        /// Sets the maximum encoded message size, in bytes.
        with_max_message_size(max_message_size: usize);
        /// Sets what a send does when the buffer is full.
        with_full_policy(full_policy: FullPolicy);
    }

    /// Checks that every setting is usable.
    pub fn validate(&self) -> Result<(), ChannelDescriptorError> {
        if self.priority == 0 {
            return Err(ChannelDescriptorError::ZeroPriority(self.id));
        }
        if self.send_capacity == 0 {
            return Err(ChannelDescriptorError::ZeroSendCapacity(self.id));
        }
        if self.receive_capacity == 0 {
            return Err(ChannelDescriptorError::ZeroReceiveCapacity(self.id));
        }
        if self.max_message_size == 0 {
            return Err(ChannelDescriptorError::ZeroMaxMessageSize(self.id));
        }
        Ok(())
    }
}

/// Why a [`ChannelDescriptor`] is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelDescriptorError {
    /// Priority 0 would never be scheduled next to other channels.
    #[error("channel {0}: priority must be at least 1")]
    ZeroPriority(ChannelId),
    /// A zero send buffer could hold nothing.
    #[error("channel {0}: send capacity must be at least 1")]
    ZeroSendCapacity(ChannelId),
    /// A zero receive buffer could hold nothing.
    #[error("channel {0}: receive capacity must be at least 1")]
    ZeroReceiveCapacity(ChannelId),
    /// No message would fit.
    #[error("channel {0}: maximum message size must be at least 1 byte")]
    ZeroMaxMessageSize(ChannelId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let d = ChannelDescriptor::new(ChannelId(0x20), "consensus");
        assert_eq!(d.validate(), Ok(()));
        assert_eq!(d.priority, 1);
        assert_eq!(d.send_capacity, 64);
        assert_eq!(d.max_message_size, 1 << 20);
        assert_eq!(d.full_policy, FullPolicy::Wait);
        assert_eq!(d.id.to_string(), "0x20");
    }

    #[test]
    fn zero_settings_are_rejected() {
        let d = ChannelDescriptor::new(ChannelId(1), "x");
        let id = ChannelId(1);
        assert_eq!(
            d.clone().with_priority(0).validate(),
            Err(ChannelDescriptorError::ZeroPriority(id))
        );
        assert_eq!(
            d.clone().with_send_capacity(0).validate(),
            Err(ChannelDescriptorError::ZeroSendCapacity(id))
        );
        assert_eq!(
            d.clone().with_receive_capacity(0).validate(),
            Err(ChannelDescriptorError::ZeroReceiveCapacity(id))
        );
        assert_eq!(
            d.with_max_message_size(0).validate(),
            Err(ChannelDescriptorError::ZeroMaxMessageSize(id))
        );
    }
}
