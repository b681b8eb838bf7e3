//! Metric metadata: `m` tenant 0 metric → type, help, unit.

use super::keys::{key_text, metadata_key};
use super::{db_err, Index};
use crate::enc::{put_bytes, Reader};
use crate::error::Result;
use cairn_common::{MetricMetadata, MetricType};
use rocksdb::{Direction, IteratorMode, WriteBatch};

impl Index {
    pub fn put_metadata(&self, tenant: &str, items: &[(String, MetricMetadata)]) -> Result<()> {
        self.recover()?;
        let mut wb = WriteBatch::default();
        for (name, md) in items {
            let mut v = Vec::new();
            put_bytes(&mut v, md.metric_type.as_str().as_bytes());
            put_bytes(&mut v, md.help.as_bytes());
            put_bytes(&mut v, md.unit.as_bytes());
            wb.put(metadata_key(tenant, name), v);
        }
        self.write(wb, "writing metadata")
    }

    pub fn metadata(
        &self,
        tenant: &str,
        metric: Option<&str>,
    ) -> Result<Vec<(String, MetricMetadata)>> {
        let prefix = metadata_key(tenant, metric.unwrap_or(""));
        let mut out = Vec::new();
        for item in self
            .db()?
            .iterator(IteratorMode::From(&prefix, Direction::Forward))
        {
            let (k, v) = item.map_err(db_err("scanning metadata"))?;
            if !k.starts_with(&prefix) {
                break;
            }
            let base = metadata_key(tenant, "").len();
            let name = match key_text("metadata", &k, base, &k[base..]) {
                Ok(name) => name.to_string(),
                Err(e) => {
                    self.skip_entry(&k, &e);
                    continue;
                }
            };
            if metric.is_some_and(|m| m != name) {
                continue;
            }
            let mut r = Reader::new(&v, "metadata entry");
            let decoded = (|| -> Result<MetricMetadata> {
                Ok(MetricMetadata {
                    metric_type: MetricType::parse(&r.string()?),
                    help: r.string()?,
                    unit: r.string()?,
                })
            })();
            match decoded {
                Ok(md) => out.push((name, md)),
                Err(e) => self.skip_entry(&k, &e),
            }
        }
        Ok(out)
    }
}
