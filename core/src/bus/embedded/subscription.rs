//! A consumer of the embedded log: its share of a group's partitions, polls and commits.

use super::*;

impl std::fmt::Debug for EmbeddedSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedSubscription")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("member", &self.member)
            .field("positions", &self.positions)
            .finish_non_exhaustive()
    }
}

impl EmbeddedSubscription {
    /// The group, or `tail`, for metrics and logs.
    fn label(&self) -> String {
        self.group.clone().unwrap_or_else(|| "tail".into())
    }

    /// Recomputes the assignment if the group changed; returns the topic's notifier.
    fn refresh(&mut self) -> Arc<Notify> {
        let state = lock(&self.inner.state);
        let topic = state.topics.get(&self.topic);
        let notify = topic.map(|t| t.notify.clone()).unwrap_or_default();
        let parts = topic.map(|t| t.parts.clone()).unwrap_or_default();
        let name = self.group.clone().unwrap_or_default();
        let group = state.groups.get(&(self.topic.clone(), name.clone()));
        let generation = group.map_or(0, |g| g.generation);
        if self.group.is_some() && generation != self.generation {
            let members: Vec<u64> = group
                .map(|g| g.members.iter().copied().collect())
                .unwrap_or_default();
            let index = members.iter().position(|m| *m == self.member).unwrap_or(0);
            let committed = state.committed.get(&(name.clone(), self.topic.clone()));
            let kept = std::mem::take(&mut self.positions);
            self.positions = (0..parts.len() as u32)
                .filter(|p| (*p as usize) % members.len().max(1) == index)
                .map(|p| {
                    // A partition this consumer keeps continues where it is; a new one starts
                    // at the group's committed offset.
                    let position = kept.iter().find(|(q, _)| *q == p).map(|(_, pos)| *pos);
                    (
                        p,
                        position.unwrap_or_else(|| {
                            committed
                                .and_then(|c| c.get(p as usize))
                                .copied()
                                .unwrap_or(0)
                        }),
                    )
                })
                .collect();
            self.generation = generation;
        }
        // Skip what retention removed, and count it.
        let label = self.label();
        for (p, position) in &mut self.positions {
            if let Some(part) = parts.get(*p as usize)
                && *position < part.start
            {
                let skipped = part.start - *position;
                metrics::counter!(BUS_RETENTION_SKIPPED, "topic" => self.topic.clone(), "group" => label.clone())
                    .increment(skipped);
                warn!(topic = %self.topic, group = %label, partition = *p, skipped, "records removed by retention before this group consumed them");
                *position = part.start;
            }
        }
        notify
    }
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notify = self.refresh();
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut from = self.positions.clone();
            if !from.is_empty() {
                let k = self.next_first % from.len();
                from.rotate_left(k);
                self.next_first = self.next_first.wrapping_add(1);
            }
            let inner = self.inner.clone();
            let topic = self.topic.clone();
            let (out, next) = blocking(move || inner.read(&topic, &from, max)).await?;
            for (p, position) in next {
                if let Some(pos) = self.positions.iter_mut().find(|(q, _)| *q == p) {
                    pos.1 = pos.1.max(position);
                }
            }
            if !out.is_empty() {
                metrics::counter!(BUS_RECORDS_CONSUMED, "topic" => self.topic.clone(), "group" => self.label())
                    .increment(out.len() as u64);
                return Ok(out);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn commit(&mut self) -> Result<()> {
        let Some(group) = self.group.clone() else {
            return Ok(());
        };
        // Commit only partitions this consumer still owns: after a rebalance another consumer
        // may have taken the rest.
        let owned: Vec<(u32, u64)> = {
            let state = lock(&self.inner.state);
            let generation = state
                .groups
                .get(&(self.topic.clone(), group.clone()))
                .map_or(0, |g| g.generation);
            if generation != self.generation {
                Vec::new()
            } else {
                self.positions.clone()
            }
        };
        let inner = self.inner.clone();
        let topic = self.topic.clone();
        blocking(move || inner.commit_offsets(&group, &topic, &owned)).await
    }
}

impl Drop for EmbeddedSubscription {
    fn drop(&mut self) {
        let Some(group) = self.group.clone() else {
            return;
        };
        let mut state = lock(&self.inner.state);
        if let Some(g) = state.groups.get_mut(&(self.topic.clone(), group)) {
            g.members.remove(&self.member);
            g.generation += 1;
        }
    }
}
