//! The log itself: topics, appends, reads, committed offsets and retention, as redb
//! transactions.

use super::*;

impl Inner {
    pub(super) fn durability(&self) -> Durability {
        match self.config.fsync {
            Fsync::Always => Durability::Immediate,
            Fsync::Interval => Durability::None,
        }
    }

    /// Makes every committed write durable.
    pub(super) fn sync(&self) -> Result<()> {
        if !self.dirty.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let _write = lock(&self.write);
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| Error::Storage(e.to_string()))?;
        txn.commit().map_err(storage)
    }

    pub(super) fn commit(&self, mut txn: redb::WriteTransaction) -> Result<()> {
        let durability = self.durability();
        txn.set_durability(durability)
            .map_err(|e| Error::Storage(e.to_string()))?;
        txn.commit().map_err(storage)?;
        if matches!(durability, Durability::None) {
            self.dirty.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Creates `topic` with the configured partition count if it does not exist.
    pub(super) fn ensure_topic(&self, topic: &str) -> Result<()> {
        if lock(&self.state).topics.contains_key(topic) {
            return Ok(());
        }
        let _write = lock(&self.write);
        if lock(&self.state).topics.contains_key(topic) {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut topics = txn.open_table(TOPICS).map_err(storage)?;
            topics.insert(topic, self.partitions).map_err(storage)?;
        }
        self.commit(txn)?;
        lock(&self.state).topics.insert(
            topic.to_owned(),
            TopicState {
                parts: vec![PartStats::default(); self.partitions as usize],
                notify: Arc::new(Notify::new()),
            },
        );
        info!(topic, partitions = self.partitions, "bus topic created");
        Ok(())
    }

    pub(super) fn append(&self, topic: &str, records: &[Record]) -> Result<()> {
        self.ensure_topic(topic)?;
        let _write = lock(&self.write);
        let mut parts: Vec<PartStats> = lock(&self.state)
            .topics
            .get(topic)
            .map(|t| t.parts.clone())
            .unwrap_or_default();
        let n = parts.len() as u32;
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut log = txn.open_table(LOG).map_err(storage)?;
            let mut stats = txn.open_table(STATS).map_err(storage)?;
            let mut touched = vec![false; parts.len()];
            for record in records {
                let p = partition_for(&record.key, n);
                let part = &mut parts[p as usize];
                let bytes = codec::encode(record);
                log.insert((topic, p, part.end), bytes.as_slice())
                    .map_err(storage)?;
                part.end += 1;
                part.bytes += bytes.len() as u64;
                touched[p as usize] = true;
            }
            for (p, part) in parts.iter().enumerate().filter(|(p, _)| touched[*p]) {
                stats
                    .insert((topic, p as u32), (part.start, part.end, part.bytes))
                    .map_err(storage)?;
            }
        }
        self.commit(txn)?;
        let mut state = lock(&self.state);
        if let Some(t) = state.topics.get_mut(topic) {
            t.parts = parts;
            t.notify.notify_waiters();
        }
        export_lag(&state, topic);
        drop(state);
        metrics::counter!(BUS_RECORDS_APPENDED, "topic" => topic.to_owned())
            .increment(records.len() as u64);
        Ok(())
    }

    /// Reads up to `max` records from the partitions in `from`, each from its position;
    /// returns them with the next position of every partition read.
    pub(super) fn read(
        &self,
        topic: &str,
        from: &[(u32, u64)],
        max: usize,
    ) -> Result<(Vec<Delivery>, Positions)> {
        let txn = self.db.begin_read().map_err(storage)?;
        let log = txn.open_table(LOG).map_err(storage)?;
        let mut out = Vec::new();
        let mut next = Vec::new();
        for &(p, position) in from {
            if out.len() >= max {
                break;
            }
            let mut position = position;
            for entry in log
                .range((topic, p, position)..(topic, p, u64::MAX))
                .map_err(storage)?
            {
                if out.len() >= max {
                    break;
                }
                let (key, value) = entry.map_err(storage)?;
                let (_, _, offset) = key.value();
                position = offset + 1;
                match codec::decode(value.value()) {
                    Some(record) => out.push(Delivery {
                        partition: p,
                        offset,
                        record,
                    }),
                    None => {
                        // Our own storage, damaged: skip the record rather than stop the topic.
                        metrics::counter!(BUS_CORRUPT_RECORDS, "topic" => topic.to_owned())
                            .increment(1);
                        error!(
                            topic,
                            partition = p,
                            offset,
                            "damaged record in the embedded bus; skipped"
                        );
                    }
                }
            }
            next.push((p, position));
        }
        Ok((out, next))
    }

    pub(super) fn commit_offsets(
        &self,
        group: &str,
        topic: &str,
        positions: &[(u32, u64)],
    ) -> Result<()> {
        if positions.is_empty() {
            return Ok(());
        }
        let _write = lock(&self.write);
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut offsets = txn.open_table(OFFSETS).map_err(storage)?;
            for &(p, offset) in positions {
                offsets.insert((group, topic, p), offset).map_err(storage)?;
            }
        }
        self.commit(txn)?;
        let mut state = lock(&self.state);
        let n = state.topics.get(topic).map_or(0, |t| t.parts.len());
        let committed = state
            .committed
            .entry((group.to_owned(), topic.to_owned()))
            .or_insert_with(|| vec![0; n]);
        for &(p, offset) in positions {
            if let Some(c) = committed.get_mut(p as usize) {
                *c = offset;
            }
        }
        export_lag(&state, topic);
        Ok(())
    }

    pub(super) fn apply_retention(&self) -> Result<()> {
        let cutoff = (Utc::now()
            - chrono::TimeDelta::from_std(self.retention.age).unwrap_or(chrono::TimeDelta::MAX))
        .timestamp_micros();
        let topics: Vec<(String, Vec<PartStats>)> = lock(&self.state)
            .topics
            .iter()
            .map(|(k, t)| (k.clone(), t.parts.clone()))
            .collect();
        for (topic, parts) in topics {
            for (p, part) in parts.iter().enumerate() {
                let p = p as u32;
                let _write = lock(&self.write);
                let txn = self.db.begin_write().map_err(storage)?;
                let mut part = *part;
                // Re-read: an append may have moved `end` since the snapshot above.
                if let Some(fresh) = lock(&self.state)
                    .topics
                    .get(&topic)
                    .and_then(|t| t.parts.get(p as usize))
                {
                    part = *fresh;
                }
                let mut deleted = 0u64;
                {
                    let mut log = txn.open_table(LOG).map_err(storage)?;
                    let mut stats = txn.open_table(STATS).map_err(storage)?;
                    let mut doomed = Vec::new();
                    let mut bytes = part.bytes;
                    for entry in log
                        .range((topic.as_str(), p, part.start)..(topic.as_str(), p, part.end))
                        .map_err(storage)?
                    {
                        let (key, value) = entry.map_err(storage)?;
                        let value = value.value();
                        let old = codec::timestamp_micros(value).is_none_or(|ts| ts < cutoff);
                        if !(old || bytes > self.retention.bytes) {
                            break;
                        }
                        bytes -= value.len() as u64;
                        doomed.push(key.value().2);
                    }
                    for offset in &doomed {
                        log.remove((topic.as_str(), p, *offset)).map_err(storage)?;
                    }
                    if let Some(last) = doomed.last() {
                        deleted = doomed.len() as u64;
                        part.start = last + 1;
                        part.bytes = bytes;
                        stats
                            .insert((topic.as_str(), p), (part.start, part.end, part.bytes))
                            .map_err(storage)?;
                    }
                }
                if deleted == 0 {
                    txn.abort().map_err(storage)?;
                    continue;
                }
                self.commit(txn)?;
                if let Some(t) = lock(&self.state).topics.get_mut(&topic) {
                    t.parts[p as usize] = part;
                }
                metrics::counter!(BUS_RETENTION_DELETED, "topic" => topic.clone())
                    .increment(deleted);
            }
        }
        Ok(())
    }
}

/// Exports `topic`'s lag for every group that has committed on it.
pub(super) fn export_lag(state: &State, topic: &str) {
    let Some(t) = state.topics.get(topic) else {
        return;
    };
    for ((group, committed_topic), committed) in &state.committed {
        if committed_topic != topic {
            continue;
        }
        let lag: u64 = t
            .parts
            .iter()
            .enumerate()
            .map(|(p, part)| {
                part.end
                    .saturating_sub(committed.get(p).copied().unwrap_or(0).max(part.start))
            })
            .sum();
        metrics::gauge!(BUS_CONSUMER_LAG, "topic" => topic.to_owned(), "group" => group.clone())
            .set(lag as f64);
    }
}
