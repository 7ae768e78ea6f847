"""Serving under load, side by side: our server with batching on and off, what a user would write instead
(transformers' `pipeline("text-classification")` behind a FastAPI route, one request at a time), and the
offline runtime (ONNX Runtime at batch 32 over pre-tokenized, length-sorted sentences); then a 2x open-loop
overload, and a one-sentence request's latency beside two clients that loop 1.8 MB texts. Each server runs in
a process of its own on loopback; the load comes from an asyncio HTTP client, bounded in requests and time."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import AlbertConfig
from ..data import Collator, EvalShardSampler, get_task, read_split
from ..data.features import build_features
from ..modeling import AlbertForSequenceClassification
from ..sample import prepare_sample_model
from ..serving.engine import exported_model
from ..tokenization import load_tokenizer, save_tokenizer_files
from .harness import DEMO_SHAPE, albert_base_dir, logger, processes_running, spread, sst2_dir

CONCURRENCY = (1, 16, 64)


@dataclass(frozen=True)
class ServingPlan:
    name: str
    config_overrides: str  # on albert-base-v2's config
    requests: int  # per concurrency level and variant (fewer if `seconds` runs out first)
    seconds: float  # the most one level may take
    overload_seconds: float


SERVING_PLANS = {"quick": (ServingPlan("demo", DEMO_SHAPE, 400, 20, 10),),
                 "full": (ServingPlan("demo", DEMO_SHAPE, 2000, 40, 30),
                          ServingPlan("albert_base", "", 600, 60, 30))}
# rounds of (alone, beside long texts), 100 one-sentence requests each
LONG_TEXT_ROUNDS = {"quick": 3, "full": 5}


def serving_model(plan: ServingPlan, work_dir: Path, shared_dir: Path) -> Path:
    """A model directory of the plan's shape (random init: speed does not depend on the weights)."""
    source = albert_base_dir(shared_dir, work_dir)
    config = AlbertConfig.from_pretrained(source)
    if plan.config_overrides:
        config = config.with_overrides(plan.config_overrides)
    config.set_labels(["negative", "positive"])
    model_dir = work_dir / f"serve_{plan.name}"
    AlbertForSequenceClassification.from_config(config).save_pretrained(model_dir)
    save_tokenizer_files(load_tokenizer(source), source, model_dir)
    return model_dir


def dev_sentences(shared_dir: Path) -> list[str]:
    examples, _ = read_split(get_task("SST-2"), sst2_dir(shared_dir), "dev")
    return [e.text_a for e in examples]


# -- the servers -------------------------------------------------------------------------------------------

def start(command: list[str], ready: str = r"at (http://127\.0\.0\.1:\d+)") -> tuple[subprocess.Popen, str]:
    """A server process, once it prints its URL; its output is drained in a thread."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, seen = time.time() + 300, []
    for line in process.stdout:
        seen.append(line)
        match = re.search(ready, line)
        if match:
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return process, match.group(1)
        if time.time() > deadline:
            break
    process.kill()
    raise RuntimeError(f"the server did not start: {''.join(seen)[-2000:]}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def ours(model_dir: Path, threads: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "albert_pytorch", "serve", "--model_dir", str(model_dir), "--port", "0",
            "--threads", str(threads), *extra]


def pipeline_command(model_dir: Path, threads: int) -> list[str]:
    return [sys.executable, "-c", "import sys; from albert_pytorch.benchmark.serving import run_pipeline_server; "
            "run_pipeline_server(sys.argv[1], int(sys.argv[2]))", str(model_dir), str(threads)]


def run_pipeline_server(model_dir: str, threads: int) -> None:
    """What a user writes without a server of ours: transformers' pipeline behind a FastAPI route, one request
    at a time."""
    import socket

    import torch
    import transformers
    import uvicorn
    from fastapi import FastAPI

    torch.set_num_threads(threads)
    classify = transformers.pipeline("text-classification", model=model_dir, tokenizer=model_dir, device=-1)
    app, lock = FastAPI(), threading.Lock()

    @app.post("/predict")
    def predict(body: dict) -> list[dict]:
        with lock:
            return classify(body["inputs"], top_k=None)

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    print(f"pipeline at http://127.0.0.1:{listening.getsockname()[1]} ", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[listening])


# -- load ----------------------------------------------------------------------------------------------------

async def closed_loop(url: str, sentences: list[str], concurrency: int, requests: int, seconds: float) -> dict:
    """`concurrency` clients, each sending the next sentence as soon as its last one is answered."""
    import aiohttp

    latencies, failures, position = [], 0, 0
    deadline = time.perf_counter() + seconds

    async def client(session):
        nonlocal failures, position
        while position < requests and time.perf_counter() < deadline:
            sentence = sentences[position % len(sentences)]
            position += 1
            start = time.perf_counter()
            try:
                async with session.post(f"{url}/predict", json={"inputs": sentence}) as response:
                    await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                failures += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        for sentence in sentences[:3]:  # warm-up: lazy initialization is not timed
            async with session.post(f"{url}/predict", json={"inputs": sentence}) as response:
                await response.read()
        start = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"requests_per_s": len(latencies) / elapsed, "p50_ms": float(np.percentile(ms, 50)),
            "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99)), "answered": len(ms),
            "failures": failures}


async def open_loop(url: str, sentences: list[str], rate: float, seconds: float) -> dict:
    """Requests at a constant `rate` whatever the answers (an overload keeps arriving): status counts,
    connection errors."""
    import aiohttp

    statuses: dict[int, int] = {}
    errors = 0

    async def one(session, sentence):
        nonlocal errors
        try:
            async with session.post(f"{url}/predict", json={"inputs": sentence}) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
        except (aiohttp.ClientError, asyncio.TimeoutError):
            errors += 1

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        tasks, start, count = [], time.perf_counter(), int(rate * seconds)
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            tasks.append(asyncio.ensure_future(one(session, sentences[i % len(sentences)])))
        await asyncio.gather(*tasks)
    return {"rate_per_s": rate, "seconds": seconds, "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "connection_errors": errors}


def rss_mb(process: subprocess.Popen) -> float:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{process.pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024


def recovery_seconds(url: str, sentence: str, baseline_ms: float, limit: float = 30.0) -> float:
    """Seconds after an overload until single requests are answered again, within 1.5x of their baseline p50 (a
    quick refusal is not a recovery)."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        try:
            if short_request_p50_ms(url, 5, 0.0, sentence) <= 1.5 * baseline_ms:
                return time.perf_counter() - start
        except (RuntimeError, OSError):  # refused, or the connection dropped, while the backlog drains
            pass
        time.sleep(0.2)
    return float("inf")


# A client that posts a text of 1.8 MB (under serve's 2 MB --payload_limit) with "truncate": true, again as soon as
# it is answered, for argv[2] seconds
LONG_TEXT_CLIENT = """import http.client, json, sys, time
body = json.dumps({"inputs": "the film is a joy to watch . " * 62_000, "truncate": True})
connection = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=60)
end = time.time() + float(sys.argv[2])
while time.time() < end:
    connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
    connection.getresponse().read()
"""


def short_request_p50_ms(url: str, requests: int = 100, pause_s: float = 0.01,
                         sentence: str = "a joy to watch .") -> float:
    """The median latency of one-sentence requests sent one at a time over one connection, `pause_s` apart; a
    RuntimeError if one is not answered 200."""
    import http.client

    host, port = url.removeprefix("http://").split(":")
    connection, latencies, body = http.client.HTTPConnection(host, int(port), timeout=60), [], json.dumps(
        {"inputs": sentence})
    try:
        for _ in range(requests):
            start = time.perf_counter()
            connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"a one-sentence request was answered {response.status}")
            latencies.append((time.perf_counter() - start) * 1000)
            time.sleep(pause_s)
    finally:
        connection.close()
    return float(np.median(latencies))


def benchmark_long_texts(work_dir: Path, rounds: int) -> dict:
    """`beside_long_texts` against `serve` (its defaults, two threads) on a model of the README's sample shape
    (random weights): its small vocabulary makes a long text cheap to cut and tokenize, so its clients send the
    most texts a second, the hardest case for the short request."""
    model_dir = work_dir / "serve_sample"
    prepare_sample_model(model_dir)
    config = AlbertConfig.from_pretrained(model_dir)
    config.set_labels(["negative", "positive"])
    AlbertForSequenceClassification.from_config(config).save_pretrained(model_dir)
    exported_model(model_dir, None)  # export before the server starts timing
    process, url = start(ours(model_dir, 2))
    try:
        return beside_long_texts(url, rounds)
    finally:
        stop(process)


def beside_long_texts(url: str, rounds: int, clients: int = 2) -> dict:
    """A one-sentence request's p50 alone and while `clients` processes loop 1.8 MB texts, alternating, per
    round: what a short request pays for the long texts of others."""
    port = url.rsplit(":", 1)[1]
    short_request_p50_ms(url, 20)  # warm-up
    alone, beside = [], []
    for round_number in range(rounds):
        alone.append(short_request_p50_ms(url))
        with processes_running(LONG_TEXT_CLIENT, [port, "120"], clients):  # their first texts are in after a second
            beside.append(short_request_p50_ms(url))
        logger.info("serving beside long texts, round %d/%d: p50 %.2f ms alone, %.2f ms beside %d clients",
                    round_number + 1, rounds, alone[-1], beside[-1], clients)
    return {"clients": clients, "alone_p50_ms": alone, "beside_p50_ms": beside,
            "ratio": spread([b / a for a, b in zip(alone, beside, strict=True)])}


# -- the offline runtime -------------------------------------------------------------------------------------

def offline(model_dir: Path, sentences: list[str], threads: int) -> dict:
    """ONNX Runtime on the server's own export: batch 32 of pre-tokenized, length-sorted sentences, padded per
    batch (the runtime's way with a dynamic model); and one sentence at a time, for the model's own latency."""
    from ..deploy.runtime import open_session

    tokenizer = load_tokenizer(model_dir)
    session = open_session(exported_model(model_dir, None), "cpu", threads=threads)
    features = build_features(get_task("SST-2"), _examples(sentences), tokenizer, 128)
    collator = Collator(tokenizer.pad_token_id)
    batches = [collator([features[i] for i in rows]) for rows in EvalShardSampler(features.lengths, 32)]
    feeds = [{k: batch[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids")} for batch in batches]
    for feed in feeds[:2]:
        session.run(None, feed)
    start = time.perf_counter()
    for feed in feeds:
        session.run(None, feed)
    throughput = len(sentences) / (time.perf_counter() - start)
    single = []
    for i in range(min(200, len(sentences))):
        feed = collator([features[i]])
        start = time.perf_counter()
        session.run(None, {k: feed[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids")})
        single.append((time.perf_counter() - start) * 1000)
    return {"samples_per_s": throughput, "batch1_p50_ms": float(np.percentile(single, 50))}


def _examples(sentences: list[str]):
    from ..data import Example

    return [Example(guid=str(i), text_a=s, text_b=None, label=0, line=i) for i, s in enumerate(sentences)]


# -- the section ----------------------------------------------------------------------------------------------

def benchmark_serving(plan: ServingPlan, work_dir: Path, shared_dir: Path, threads: int = 2) -> dict:
    model_dir = serving_model(plan, work_dir, shared_dir)
    sentences = dev_sentences(shared_dir)
    exported_model(model_dir, None)  # export once, before any server starts timing
    results: dict = {"offline_runtime": offline(model_dir, sentences, threads)}
    variants = {"ours": ours(model_dir, threads), "ours_no_batching": ours(model_dir, threads,
                                                                           "--max_batch_requests", "1"),
                "transformers_pipeline": pipeline_command(model_dir, threads)}
    for key, command in variants.items():
        process, url = start(command)
        try:
            levels = {}
            for concurrency in CONCURRENCY:
                logger.info("serving (%s) %s at concurrency %d", plan.name, key, concurrency)
                levels[str(concurrency)] = asyncio.run(closed_loop(url, sentences, concurrency, plan.requests,
                                                                   plan.seconds))
            results[key] = levels
            if key == "ours":
                results["overload"] = overload(process, url, sentences, levels, plan)
        finally:
            stop(process)
    return results


def overload(process: subprocess.Popen, url: str, sentences: list[str], levels: dict, plan: ServingPlan) -> dict:
    """2x the server's best closed-loop throughput, open loop, for `plan.overload_seconds`."""
    rate = 2 * max(level["requests_per_s"] for level in levels.values())
    before = rss_mb(process)
    logger.info("serving (%s) overload: %.0f requests/s for %.0f s", plan.name, rate, plan.overload_seconds)
    result = asyncio.run(open_loop(url, sentences, rate, plan.overload_seconds))
    result.update(rss_mb_before=before, rss_mb_after=rss_mb(process),
                  recovery_seconds=recovery_seconds(url, sentences[0], levels["1"]["p50_ms"]))
    return result


def serving_summary(sections: dict[str, dict]) -> dict:
    """The headline figures of the first serving plan (the from-scratch model's shape), and the short request's
    latency beside long texts."""
    report = {}
    if "long_text_serving" in sections:
        ratio = sections["long_text_serving"]["ratio"]
        report.update(serving_short_p50_ratio_beside_long_texts=ratio["median"],
                      serving_short_p50_ratio_beside_long_texts_spread=ratio)
    name = next((n for n in sections if n.startswith("serving_")), None)
    if name is None:
        return report
    rows = sections[name]
    top = str(CONCURRENCY[-1])
    overload_statuses = rows["overload"]["statuses"]
    return {**report,
            "serving_ratio_vs_offline": rows["ours"][top]["requests_per_s"] / rows["offline_runtime"]["samples_per_s"],
            "serving_ratio_vs_transformers_pipeline": rows["ours"][top]["requests_per_s"]
            / rows["transformers_pipeline"][top]["requests_per_s"],
            "serving_ratio_vs_no_batching": rows["ours"][top]["requests_per_s"]
            / rows["ours_no_batching"][top]["requests_per_s"],
            "serving_p50_ms_c1": rows["ours"]["1"]["p50_ms"],
            "model_p50_ms_batch1": rows["offline_runtime"]["batch1_p50_ms"],
            "serving_overload_5xx": sum(v for k, v in overload_statuses.items() if k.startswith("5")),
            "serving_overload_errors": rows["overload"]["connection_errors"]
            + sum(v for k, v in overload_statuses.items() if k not in ("200", "429"))}


def serving_table(name: str, rows: dict) -> None:
    logger.info("\nserving, %s config (single SST-2 dev sentences; requests/s, p50/p99 ms)", name)
    logger.info("%-26s %s", "variant", "".join(f"{'c=' + str(c):>26}" for c in CONCURRENCY))
    for key in ("ours", "ours_no_batching", "transformers_pipeline"):
        cells = "".join(f"{r['requests_per_s']:10.1f} {r['p50_ms']:6.1f}/{r['p99_ms']:<7.1f}"
                        for r in (rows[key][str(c)] for c in CONCURRENCY))
        logger.info("%-26s %s", key, cells)
    logger.info("%-26s %10.1f samples/s at batch 32; %.2f ms a single sentence", "offline runtime (ORT)",
                rows["offline_runtime"]["samples_per_s"], rows["offline_runtime"]["batch1_p50_ms"])
    o = rows["overload"]
    logger.info("overload %.0f/s for %.0f s: statuses %s, connection errors %d, RSS %.0f -> %.0f MB, back to "
                "baseline latency in %.1f s", o["rate_per_s"], o["seconds"], o["statuses"], o["connection_errors"],
                o["rss_mb_before"], o["rss_mb_after"], o["recovery_seconds"])


def long_texts_table(long_texts: dict) -> None:
    logger.info("\na one-sentence request beside %d clients looping 1.8 MB texts (sample-shaped model): p50 %s ms, "
                "alone %s ms; ratio %.2f (rounds: min %.2f, max %.2f)", long_texts["clients"],
                "/".join(f"{v:.1f}" for v in long_texts["beside_p50_ms"]),
                "/".join(f"{v:.1f}" for v in long_texts["alone_p50_ms"]), long_texts["ratio"]["median"],
                long_texts["ratio"]["min"], long_texts["ratio"]["max"])
