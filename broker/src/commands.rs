//! Commands to meters: records on the bus topic `meter.commands` (keyed by meter id, written
//! by the API) are published by the broker on `meters/{id}/commands`, which only that meter
//! may subscribe to.
//!
//! The broker publishes through a local rumqttd link, which publishes at QoS 0: a meter that
//! is offline when its command is published does not get it (commands such as "resend" are
//! safe to repeat; the API answers 202 Accepted, not "delivered").

use std::time::Duration;

use meterstack_core::bus::Subscription;
use meterstack_core::metrics::{BUS_ERRORS, COMMANDS_SENT};
use meterstack_core::reading::MeterId;
use rumqttd::local::LinkTx;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use meterstack_core::wire::commands_topic;

/// Consumer group of the broker on `meter.commands`.
pub const GROUP: &str = "broker.commands";

pub(crate) async fn run(
    mut subscription: Box<dyn Subscription>,
    mut link: LinkTx,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let deliveries = tokio::select! {
            () = shutdown.cancelled() => break,
            d = subscription.poll(100, Duration::from_secs(1)) => d,
        };
        let deliveries = match deliveries {
            Ok(d) => d,
            Err(e) => {
                metrics::counter!(BUS_ERRORS, "op" => "poll").increment(1);
                warn!(error = %e, "cannot poll meter commands; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if deliveries.is_empty() {
            continue;
        }
        for d in deliveries {
            let Ok(meter) = MeterId::new(&d.record.key) else {
                warn!(key = %d.record.key, "command for an invalid meter id dropped");
                continue;
            };
            match link.publish(commands_topic(&meter), d.record.value) {
                Ok(_) => metrics::counter!(COMMANDS_SENT).increment(1),
                Err(e) => warn!(error = %e, meter = %meter, "cannot publish a command"),
            }
        }
        if let Err(e) = subscription.commit().await {
            metrics::counter!(BUS_ERRORS, "op" => "commit").increment(1);
            warn!(error = %e, "cannot commit meter commands");
        }
    }
}
