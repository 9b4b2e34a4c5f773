//! The model's one thread. Requests queue on a channel; the thread takes every request
//! waiting (up to `max_batch` texts) and runs them as one batch, so under concurrent load
//! one forward pass serves many requests (a micro-batch with no added wait).

use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use anyhow::{anyhow, Result};
use tokio::sync::oneshot;

use crate::model::Embedder;
use crate::telemetry;

type Reply = oneshot::Sender<Result<(Vec<Vec<f32>>, Vec<usize>)>>;

struct Job {
    texts: Vec<String>,
    reply: Reply,
}

/// A handle on the model thread.
#[derive(Clone)]
pub struct Worker {
    jobs: mpsc::Sender<Job>,
}

impl Worker {
    pub fn start(model: Embedder, max_batch: usize) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("model".into())
            .spawn(move || run(model, queue, max_batch.max(1)))
            .expect("the model thread");
        Self { jobs }
    }

    /// The unit vectors of `texts` and their token counts.
    pub async fn embed(&self, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, Vec<usize>)> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { texts, reply })
            .map_err(|_| anyhow!("the model thread has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow!("the model thread dropped the request"))?
    }
}

fn run(model: Embedder, queue: mpsc::Receiver<Job>, max_batch: usize) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        let mut size = batch[0].texts.len();
        while size < max_batch {
            match queue.try_recv() {
                Ok(job) => {
                    size += job.texts.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let texts: Vec<String> = batch.iter().flat_map(|j| j.texts.iter().cloned()).collect();
        let started = Instant::now();
        let result = model.embed_counted(&texts);
        telemetry::inference(started.elapsed().as_secs_f64(), texts.len());
        match result {
            Ok((mut vectors, mut counts)) => {
                for job in batch.into_iter().rev() {
                    let at = vectors.len() - job.texts.len();
                    let _ = job.reply.send(Ok((vectors.split_off(at), counts.split_off(at))));
                }
            }
            Err(e) => {
                let msg = format!("{e:#}");
                for job in batch {
                    let _ = job.reply.send(Err(anyhow!("{msg}")));
                }
            }
        }
    }
}
