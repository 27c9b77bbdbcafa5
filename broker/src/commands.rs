//! Commands to meters: records on the bus topic `meter.commands` (keyed by meter id, written
//! by the API) are published by the broker on `meters/{id}/commands`, which only that meter
//! may subscribe to.
//!
//! The broker publishes through a local rumqttd link, which publishes at QoS 0: a meter that
//! is offline when its command is published does not get it (commands such as "resend" are
//! safe to repeat; the API answers 202 Accepted, not "delivered"). A command the link refuses
//! stays pending and is published again before the consumer commits past it.

use std::collections::VecDeque;

use meterstack_core::bus::Delivery;
use meterstack_core::bus::Subscription;
use meterstack_core::bus::consumer::{ConsumerOptions, Handler, consume};
use meterstack_core::metrics::COMMANDS_SENT;
use meterstack_core::reading::MeterId;
use meterstack_core::wire::commands_topic;
use rumqttd::local::LinkTx;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Consumer group of the broker on `meter.commands`.
pub const GROUP: &str = "broker.commands";

pub(crate) async fn run(
    mut subscription: Box<dyn Subscription>,
    link: LinkTx,
    shutdown: CancellationToken,
) {
    let options = ConsumerOptions {
        batch: 100,
        ..ConsumerOptions::new(GROUP)
    };
    let mut publisher = Publisher {
        link,
        pending: VecDeque::new(),
    };
    consume(subscription.as_mut(), &mut publisher, &options, &shutdown).await;
}

/// Publishes commands to meters through the broker's local link.
struct Publisher {
    link: LinkTx,
    pending: VecDeque<Delivery>,
}

impl Handler for Publisher {
    type Error = String;

    fn handle(&mut self, batch: Vec<Delivery>) {
        self.pending.extend(batch);
    }

    async fn flush(&mut self, _last: bool) -> Result<bool, Self::Error> {
        while let Some(d) = self.pending.front() {
            let Ok(meter) = MeterId::new(&d.record.key) else {
                warn!(key = %d.record.key, "command for an invalid meter id dropped");
                self.pending.pop_front();
                continue;
            };
            if let Err(e) = self
                .link
                .publish(commands_topic(&meter), d.record.value.clone())
            {
                return Err(format!("cannot publish a command to {meter}: {e}"));
            }
            metrics::counter!(COMMANDS_SENT).increment(1);
            self.pending.pop_front();
        }
        Ok(true)
    }
}
