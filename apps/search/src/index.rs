//! The semantic index: brute-force cosine over unit vectors held in memory, persisted in
//! the state store through the sidecar so that it survives a restart and every replica
//! sees the same documents.
//!
//! State keys (inside the app's own prefix, as `docs/services/search.md` lists them):
//! - `search:collections`: the collection names;
//! - `search:manifest:<collection>`: the ids of its documents (written with ETag
//!   compare-and-set, so two writers never lose each other's ids);
//! - `search:doc:<collection>:<id>`: one document: text, metadata, vector (base64 of
//!   little-endian f32, stored as a JSON string: the Redis store would round floats).
//!
//! Each request reads the collection's manifest ETag (one round trip): when another
//! replica (or a restart) changed it, the documents are loaded again before answering.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use tokio::sync::Mutex;

use crate::sidecar::{Condition, EtagMismatch, Sidecar};
use crate::telemetry::Trace;

pub const COLLECTIONS_KEY: &str = "search:collections";

pub fn manifest_key(collection: &str) -> String {
    format!("search:manifest:{collection}")
}

pub fn doc_key(collection: &str, id: &str) -> String {
    format!("search:doc:{collection}:{id}")
}

/// One indexed document.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub id: String,
    pub text: String,
    pub metadata: Map<String, Value>,
    pub vector: Vec<f32>,
}

impl Document {
    fn to_state(&self) -> Value {
        let bytes: Vec<u8> = self.vector.iter().flat_map(|x| x.to_le_bytes()).collect();
        let doc = json!({
            "id": self.id,
            "text": self.text,
            "metadata": self.metadata,
            "vector": base64::engine::general_purpose::STANDARD.encode(bytes),
        });
        Value::String(doc.to_string())
    }

    fn from_state(value: &Value) -> Result<Self> {
        let doc: Value = match value {
            Value::String(s) => serde_json::from_str(s)?,
            other => other.clone(),
        };
        let bytes = base64::engine::general_purpose::STANDARD.decode(
            doc["vector"]
                .as_str()
                .ok_or_else(|| anyhow!("a document without a vector"))?,
        )?;
        let vector = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Self {
            id: doc["id"].as_str().unwrap_or_default().to_string(),
            text: doc["text"].as_str().unwrap_or_default().to_string(),
            metadata: doc["metadata"].as_object().cloned().unwrap_or_default(),
            vector,
        })
    }
}

/// What a query asks for beyond its vector.
#[derive(Clone, Copy, Default)]
pub struct Search<'a> {
    /// How many matches, at most.
    pub k: usize,
    /// Only documents whose metadata has each of these values.
    pub filter: Option<&'a Map<String, Value>>,
    /// Leave this document out (the one a "similar" query starts from).
    pub exclude: Option<&'a str>,
    /// Only matches with at least this cosine.
    pub min_score: Option<f32>,
}

/// A match of a query.
#[derive(Clone, Debug)]
pub struct Match {
    pub id: String,
    pub score: f32,
    pub text: String,
    pub metadata: Map<String, Value>,
}

#[derive(Default)]
struct Collection {
    etag: Option<String>,
    docs: HashMap<String, Document>,
}

/// True when every key of `filter` is in `metadata` with an equal value.
pub fn filter_matches(filter: &Map<String, Value>, metadata: &Map<String, Value>) -> bool {
    filter.iter().all(|(k, want)| match (metadata.get(k), want) {
        (Some(Value::Number(a)), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Some(have), want) => have == want,
        (None, _) => false,
    })
}

/// The `k` best matches of `query` among `docs`, best first (ties by id).
pub fn top_k<'a>(
    query: &[f32],
    docs: impl Iterator<Item = &'a Document>,
    k: usize,
    filter: Option<&Map<String, Value>>,
    exclude: Option<&str>,
    min_score: Option<f32>,
) -> Vec<Match> {
    let mut scored: Vec<(f32, &Document)> = docs
        .filter(|d| exclude != Some(d.id.as_str()))
        .filter(|d| filter.is_none_or(|f| filter_matches(f, &d.metadata)))
        .map(|d| (crate::model::cosine(query, &d.vector), d))
        .filter(|(s, _)| min_score.is_none_or(|m| *s >= m))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    scored
        .into_iter()
        .take(k)
        .map(|(score, d)| Match {
            id: d.id.clone(),
            score,
            text: d.text.clone(),
            metadata: d.metadata.clone(),
        })
        .collect()
}

/// Every collection, in memory and in the state store.
#[derive(Clone)]
pub struct Index {
    sidecar: Sidecar,
    collections: Arc<Mutex<HashMap<String, Collection>>>,
    /// One writer at a time in this process; the ETags guard against other replicas.
    writing: Arc<Mutex<()>>,
}

/// How a write changed a collection.
pub struct Written {
    pub count: usize,
    pub created: bool,
}

fn ids_of(manifest: &Value) -> Vec<String> {
    manifest["ids"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

impl Index {
    pub fn new(sidecar: Sidecar) -> Self {
        Self {
            sidecar,
            collections: Arc::default(),
            writing: Arc::default(),
        }
    }

    /// Load every collection from the state store (at start-up): returns the documents.
    pub async fn rebuild(&self, trace: &Trace) -> Result<usize> {
        let names = match self.sidecar.get_state(COLLECTIONS_KEY, trace).await? {
            Some(item) => ids_of(&item.value),
            None => Vec::new(),
        };
        let mut total = 0;
        for name in names {
            total += self.refresh(&name, trace).await?.unwrap_or(0);
        }
        Ok(total)
    }

    /// Bring one collection in step with the state store; its size, None when it does not exist.
    async fn refresh(&self, name: &str, trace: &Trace) -> Result<Option<usize>> {
        let manifest = self.sidecar.get_state(&manifest_key(name), trace).await?;
        let mut collections = self.collections.lock().await;
        let Some(manifest) = manifest else {
            collections.remove(name);
            return Ok(None);
        };
        let current = collections.get(name).and_then(|c| c.etag.clone());
        if current.is_some() && current == manifest.etag {
            return Ok(collections.get(name).map(|c| c.docs.len()));
        }
        let ids = ids_of(&manifest.value);
        let entry = collections.entry(name.to_string()).or_default();
        entry.docs.retain(|id, _| ids.contains(id));
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !entry.docs.contains_key(*id))
            .map(|id| doc_key(name, id))
            .collect();
        drop(collections);
        let loaded = self.sidecar.get_bulk_state(&missing, trace).await?;
        let mut collections = self.collections.lock().await;
        let entry = collections.entry(name.to_string()).or_default();
        for (_, value) in loaded {
            let doc = Document::from_state(&value)?;
            if ids.contains(&doc.id) {
                entry.docs.insert(doc.id.clone(), doc);
            }
        }
        entry.etag = manifest.etag;
        Ok(Some(entry.docs.len()))
    }

    /// The collection's size, or None when it does not exist.
    pub async fn size(&self, name: &str, trace: &Trace) -> Result<Option<usize>> {
        self.refresh(name, trace).await
    }

    /// One document, when it is in the collection.
    pub async fn get(&self, name: &str, id: &str, trace: &Trace) -> Result<Option<Document>> {
        if self.refresh(name, trace).await?.is_none() {
            return Ok(None);
        }
        Ok(self
            .collections
            .lock()
            .await
            .get(name)
            .and_then(|c| c.docs.get(id).cloned()))
    }

    /// The best matches of `vector`; None when the collection does not exist.
    pub async fn query(
        &self,
        name: &str,
        vector: &[f32],
        search: &Search<'_>,
        trace: &Trace,
    ) -> Result<Option<Vec<Match>>> {
        let Search {
            k,
            filter,
            exclude,
            min_score,
        } = *search;
        if self.refresh(name, trace).await?.is_none() {
            return Ok(None);
        }
        let collections = self.collections.lock().await;
        Ok(collections
            .get(name)
            .map(|c| top_k(vector, c.docs.values(), k, filter, exclude, min_score)))
    }

    /// Add (or replace) documents; the collection is made when it does not exist.
    pub async fn upsert(&self, name: &str, docs: Vec<Document>, trace: &Trace) -> Result<Written> {
        let _one_writer = self.writing.lock().await;
        // The documents first: a manifest never names a document that is not stored.
        let items = docs
            .iter()
            .map(|d| (doc_key(name, &d.id), d.to_state(), Condition::Always))
            .collect();
        self.sidecar.save(items, trace).await?;
        let created = self.add_name(name, trace).await?;
        let new_ids: Vec<String> = docs.iter().map(|d| d.id.clone()).collect();
        let count = self
            .update_manifest(name, trace, |ids| {
                for id in &new_ids {
                    if !ids.contains(id) {
                        ids.push(id.clone());
                    }
                }
            })
            .await?;
        let mut collections = self.collections.lock().await;
        let entry = collections.entry(name.to_string()).or_default();
        for d in docs {
            entry.docs.insert(d.id.clone(), d);
        }
        entry.etag = None; // read again on next use: the write's ETag is not returned
        Ok(Written { count, created })
    }

    /// Remove one document; false when it was not there.
    pub async fn delete_document(&self, name: &str, id: &str, trace: &Trace) -> Result<bool> {
        let _one_writer = self.writing.lock().await;
        let Some(manifest) = self.sidecar.get_state(&manifest_key(name), trace).await? else {
            return Ok(false);
        };
        if !ids_of(&manifest.value).iter().any(|i| i == id) {
            return Ok(false);
        }
        self.update_manifest(name, trace, |ids| ids.retain(|i| i != id))
            .await?;
        self.sidecar.delete_state(&doc_key(name, id), None, trace).await?;
        if let Some(c) = self.collections.lock().await.get_mut(name) {
            c.docs.remove(id);
            c.etag = None;
        }
        Ok(true)
    }

    /// Remove a collection and its documents; false when it did not exist.
    pub async fn delete_collection(&self, name: &str, trace: &Trace) -> Result<bool> {
        let _one_writer = self.writing.lock().await;
        let Some(manifest) = self.sidecar.get_state(&manifest_key(name), trace).await? else {
            return Ok(false);
        };
        // The manifest first: from then on the collection does not exist for any replica.
        self.sidecar
            .delete_state(&manifest_key(name), manifest.etag.as_deref(), trace)
            .await?;
        for id in ids_of(&manifest.value) {
            self.sidecar
                .delete_state(&doc_key(name, &id), None, trace)
                .await?;
        }
        self.update_names(trace, |names| names.retain(|n| n != name))
            .await?;
        self.collections.lock().await.remove(name);
        Ok(true)
    }

    async fn add_name(&self, name: &str, trace: &Trace) -> Result<bool> {
        let mut added = false;
        self.update_names(trace, |names| {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
                added = true;
            }
        })
        .await?;
        Ok(added)
    }

    async fn update_names(
        &self,
        trace: &Trace,
        mut change: impl FnMut(&mut Vec<String>) + Send,
    ) -> Result<()> {
        self.compare_and_set(COLLECTIONS_KEY, "names", trace, &mut change)
            .await
            .map(|_| ())
    }

    async fn update_manifest(
        &self,
        name: &str,
        trace: &Trace,
        mut change: impl FnMut(&mut Vec<String>) + Send,
    ) -> Result<usize> {
        self.compare_and_set(&manifest_key(name), "ids", trace, &mut change)
            .await
    }

    /// Read-modify-write of a list under `field` of `key`, retried when another writer
    /// got in between (ETag mismatch). Returns the list's new length.
    async fn compare_and_set(
        &self,
        key: &str,
        field: &str,
        trace: &Trace,
        change: &mut (dyn FnMut(&mut Vec<String>) + Send),
    ) -> Result<usize> {
        for _ in 0..20 {
            let current = self.sidecar.get_state(key, trace).await?;
            let (mut list, etag) = match &current {
                Some(item) => (
                    item.value[field]
                        .as_array()
                        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                        .unwrap_or_default(),
                    item.etag.clone(),
                ),
                None => (Vec::new(), None),
            };
            let before = list.clone();
            change(&mut list);
            if current.is_some() && list == before {
                return Ok(list.len());
            }
            let value = json!({ field: list });
            let len = list.len();
            let condition = match (&current, etag) {
                (Some(_), Some(etag)) => Condition::IfEtag(etag),
                _ => Condition::IfAbsent,
            };
            match self
                .sidecar
                .save(vec![(key.to_string(), value, condition)], trace)
                .await
            {
                Ok(()) => return Ok(len),
                Err(e) if e.is::<EtagMismatch>() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(anyhow!(
            "{key} kept changing under this write (20 ETag mismatches)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, v: [f32; 2], product: &str) -> Document {
        let mut metadata = Map::new();
        metadata.insert("product".into(), json!(product));
        Document {
            id: id.into(),
            text: id.into(),
            metadata,
            vector: v.to_vec(),
        }
    }

    #[test]
    fn documents_round_trip_through_their_state_form() {
        let d = doc("a", [0.1234567, -0.7654321], "phone");
        assert_eq!(Document::from_state(&d.to_state()).unwrap(), d);
    }

    #[test]
    fn top_k_ranks_filters_and_excludes() {
        let docs = [
            doc("a", [1.0, 0.0], "phone"),
            doc("b", [0.8, 0.6], "phone"),
            doc("c", [0.0, 1.0], "tv"),
        ];
        let all = top_k(&[1.0, 0.0], docs.iter(), 2, None, None, None);
        assert_eq!(all.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let mut f = Map::new();
        f.insert("product".into(), json!("tv"));
        let tv = top_k(&[1.0, 0.0], docs.iter(), 5, Some(&f), None, None);
        assert_eq!(tv.len(), 1);
        assert_eq!(tv[0].id, "c");
        let others = top_k(&[1.0, 0.0], docs.iter(), 5, None, Some("a"), Some(0.5));
        assert_eq!(others.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn numbers_in_filters_compare_by_value() {
        let mut m = Map::new();
        m.insert("stars".into(), json!(4));
        let mut f = Map::new();
        f.insert("stars".into(), json!(4.0));
        assert!(filter_matches(&f, &m));
    }
}
