"""Benchmark of the inference service, a real `afina serve` process serving the champion of the local
stack's registry, against the same generation called in this process:

- latency of one request over gRPC `Generate` against the same generation called in-process on the
  same model (the engine's decoding loop, on this thread), interleaved, as a ratio (goal: <= 5% slower);
- our decoding loop against transformers' `model.generate` for the same greedy request, in-process;
- throughput with 8 concurrent clients, the server batching (AFINA_INFERENCE_MAX_BATCH=8) against
  not (=1), as a ratio (goal: >= 3x);
- streaming time to first token (client side) and the server's own count;
- the OpenAI-compatible HTTP API (`POST /v1/completions` through the official `openai` client) against
  gRPC `Generate` for the same greedy generation, interleaved, as a ratio; its streaming time to first
  token; and its throughput with the same concurrent clients.

    .venv/bin/python benchmarks/serve.py [--requests 30] [--tokens 64] [--clients 8] [--seconds 10]

Starts the local stack if it is not up; makes the base model (AFINA_BASE_MODEL, SmolLM2 by default) the
champion if there is none. `--fresh` measures the base model whatever the usual registry serves: a
stack of its own beside the usual one (its own ports and state, the built tools and models shared),
stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import grpc

from control import localstack
from control.localstack.process import free_port
from services import registry
from services.inference import client
from services.inference.engine import Engine
from services.inference.generation import Collected, Job
from services.inference.sampling import SamplingParams
from services.settings import Settings
from services.storage import minio_client
from services.tuning.base import init_base

AFINA = str(Path(sys.executable).with_name("afina"))
PROMPT = "La política de gastos de la empresa dice que"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


@contextmanager
def server(settings: Settings, work: Path, max_batch: int):
    port, http_port = free_port(), free_port()
    log = work / f"serve-batch{max_batch}.log"
    env = {**os.environ, "AFINA_STATE_DIR": str(settings.state_dir), "AFINA_INFERENCE_ADDRESS": f"127.0.0.1:{port}",
           "AFINA_INFERENCE_HTTP_ADDRESS": f"127.0.0.1:{http_port}",
           "AFINA_INFERENCE_METRICS_PORT": "0", "AFINA_INFERENCE_MAX_BATCH": str(max_batch)}
    with log.open("wb") as out:
        proc = subprocess.Popen([AFINA, "serve"], env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 120
        while '"inference serving"' not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"afina serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}", f"http://127.0.0.1:{http_port}/v1"
    finally:
        proc.terminate()
        proc.wait(30)




def in_process_engine(settings: Settings, version: int) -> Engine:
    import asyncio

    local = registry.fetch(minio_client(settings), version, settings.state_dir / "cache" / "models")
    engine = Engine(local.base, local.base_version, capacity=1, max_queue=1, max_batch=1, batch_wait_s=0,
                    threads=settings.inference.torch_threads)

    async def load() -> None:
        await engine.start()
        if local.adapter is not None:
            await engine.add_adapter(version, local.adapter)

    asyncio.run(load())
    return engine


def prompt_ids(engine: Engine) -> list[int]:
    return engine.encoder(PROMPT)["input_ids"]


def in_process(engine: Engine, version: int, tokens: int) -> float:
    job = Job(prompt_ids(engine), tokens, SamplingParams(temperature=0), Collected(), ignore_eos=True)
    started = time.perf_counter()
    engine.generate(version, [job])
    elapsed = time.perf_counter() - started
    assert job.sink.result.completion_tokens == tokens
    return elapsed


def over_grpc(stub, tokens: int) -> float:
    started = time.perf_counter()
    answer = stub.Generate(client.request(PROMPT, max_new_tokens=tokens, temperature=0, ignore_eos=True), timeout=120)
    elapsed = time.perf_counter() - started
    assert answer.usage.completion_tokens == tokens
    return elapsed


def openai_client(url: str):
    import openai

    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)


def over_http(api, tokens: int) -> float:
    started = time.perf_counter()
    answer = api.completions.create(model="champion", prompt=PROMPT, max_tokens=tokens, temperature=0,
                                    extra_body={"ignore_eos": True})
    elapsed = time.perf_counter() - started
    assert answer.usage.completion_tokens == tokens
    return elapsed


def http_first_token(api, requests: int, tokens: int) -> list[float]:
    firsts = []
    for seed in range(requests):
        started = time.perf_counter()
        first = None
        for chunk in api.completions.create(model="champion", prompt=PROMPT, max_tokens=tokens, seed=seed,
                                            stream=True, extra_body={"ignore_eos": True}):
            if first is None and chunk.choices and chunk.choices[0].text:
                first = time.perf_counter() - started
        firsts.append(first)
    return firsts


def hf_generate(engine: Engine, tokens: int) -> float:
    import torch

    ids = torch.tensor([prompt_ids(engine)])
    started = time.perf_counter()
    with torch.inference_mode():
        out = engine.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                    min_new_tokens=tokens, do_sample=False, pad_token_id=engine.vocab.pad_id)
    elapsed = time.perf_counter() - started
    assert out.shape[1] - ids.shape[1] == tokens
    return elapsed


def throughput(address: str, clients: int, seconds: float, tokens: int, http: str = "") -> tuple[float, int, int]:
    """Tokens per second of `clients` callers sending back to back for `seconds` (over gRPC, or over
    the OpenAI-compatible API at `http`); and the calls, failures."""
    done: list[int] = []
    failed: list[str] = []
    stop = threading.Event()

    def caller(seed: int) -> None:
        if http:
            import openai

            api = openai_client(http)
            while not stop.is_set():
                try:
                    answer = api.completions.create(model="champion", prompt=PROMPT, max_tokens=tokens, seed=seed,
                                                    temperature=0.8, extra_body={"ignore_eos": True})
                    done.append(answer.usage.completion_tokens)
                except openai.OpenAIError as exc:
                    failed.append(type(exc).__name__)
            return
        with client.channel(address) as channel:
            stub = client.pb_grpc.InferenceServiceStub(channel)
            while not stop.is_set():
                try:
                    answer = stub.Generate(client.request(PROMPT, max_new_tokens=tokens, temperature=0.8, seed=seed,
                                                          ignore_eos=True), timeout=120)
                    done.append(answer.usage.completion_tokens)
                except grpc.RpcError as exc:
                    failed.append(exc.code().name)

    threads = [threading.Thread(target=caller, args=(seed,)) for seed in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - started), len(done), len(failed)


def time_to_first_token(stub, requests: int, tokens: int) -> tuple[list[float], list[float]]:
    client_side, server_side = [], []
    for seed in range(requests):
        started = time.perf_counter()
        first = None
        for message in stub.GenerateStream(client.request(PROMPT, max_new_tokens=tokens, seed=seed, ignore_eos=True),
                                           timeout=120):
            if first is None and message.delta:
                first = time.perf_counter() - started
            last = message
        client_side.append(first)
        server_side.append(last.timings.first_token_ms / 1000)
    return client_side, server_side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=30, help="sequential requests per latency measurement")
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per request")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each throughput run")
    parser.add_argument("--fresh", action="store_true",
                        help="a stack of its own whose registry holds only the base model (AFINA_BASE_MODEL)")
    args = parser.parse_args()

    if args.fresh:
        state = Path(tempfile.mkdtemp(prefix="afina-bench-serve-stack-"))
        os.environ.update(localstack.sibling_env(Settings(), state, port_offset=22000))
    settings = Settings()
    try:
        measure(args, settings)
    finally:
        if args.fresh:
            localstack.down(settings)


def measure(args: argparse.Namespace, settings: Settings) -> None:
    localstack.up(settings, echo=lambda line: None)
    init_base(settings, echo=lambda line: None)
    version = registry.alias_version(minio_client(settings))
    work = Path(tempfile.mkdtemp(prefix="afina-bench-serve-"))
    engine = in_process_engine(settings, version)
    parameters = sum(p.numel() for p in engine.model.parameters())
    print(f"inference benchmark ({os.cpu_count()} cores), champion v{version} on {type(engine.model).__name__} "
          f"({parameters / 1e6:.1f} M parameters), {args.tokens} tokens per request, "
          f"torch threads {settings.inference.torch_threads}")

    with server(settings, work, max_batch=8) as (address, http):
        with client.channel(address) as channel:
            stub = client.pb_grpc.InferenceServiceStub(channel)
            for _ in range(3):  # warm both paths
                over_grpc(stub, args.tokens)
                in_process(engine, version, args.tokens)
            grpc_s, local_s = [], []
            for _ in range(args.requests):  # interleaved, so the machine's load falls on both alike
                grpc_s.append(over_grpc(stub, args.tokens))
                local_s.append(in_process(engine, version, args.tokens))
            hf_s = [hf_generate(engine, args.tokens) for _ in range(max(5, args.requests // 3))]
            ours = statistics.median(local_s)
            # the median of the pairs' ratios: each pair ran back to back, under the same load
            ratio = statistics.median(g / l for g, l in zip(grpc_s, local_s, strict=True))
            print(f"one request: gRPC Generate p50 {statistics.median(grpc_s) * 1000:.1f} ms, in-process "
                  f"p50 {ours * 1000:.1f} ms -> gRPC/in-process {ratio:.3f} ({(ratio - 1) * 100:+.1f}%; goal <= +5%)")
            print(f"decoding loop: ours p50 {ours * 1000:.1f} ms, transformers generate p50 "
                  f"{statistics.median(hf_s) * 1000:.1f} ms (same greedy {args.tokens} tokens, in-process)")
            client_side, server_side = time_to_first_token(stub, max(10, args.requests // 2), args.tokens)
            print(f"streaming time to first token: p50 {statistics.median(client_side) * 1000:.1f} ms, "
                  f"p90 {percentile(client_side, 0.9) * 1000:.1f} ms (client side); "
                  f"server's first token p50 {statistics.median(server_side) * 1000:.1f} ms")
            api = openai_client(http)
            for _ in range(3):
                over_http(api, args.tokens)
            http_s, grpc_again = [], []
            for _ in range(args.requests):  # interleaved, as above
                http_s.append(over_http(api, args.tokens))
                grpc_again.append(over_grpc(stub, args.tokens))
            http_ratio = statistics.median(h / g for h, g in zip(http_s, grpc_again, strict=True))
            print(f"one request: HTTP /v1/completions (openai client) p50 {statistics.median(http_s) * 1000:.1f} ms, "
                  f"gRPC Generate p50 {statistics.median(grpc_again) * 1000:.1f} ms -> HTTP/gRPC {http_ratio:.3f} "
                  f"({(http_ratio - 1) * 100:+.1f}%)")
            http_first = http_first_token(api, max(10, args.requests // 2), args.tokens)
            print(f"HTTP streaming (server-sent events) time to first token: p50 "
                  f"{statistics.median(http_first) * 1000:.1f} ms, p90 {percentile(http_first, 0.9) * 1000:.1f} ms "
                  f"(gRPC stream p50 {statistics.median(client_side) * 1000:.1f} ms)")
        batched, calls_on, failed_on = throughput(address, args.clients, args.seconds, args.tokens)
        over_http_tps, calls_http, failed_http = throughput(address, args.clients, args.seconds, args.tokens, http)
        print(f"throughput over HTTP, {args.clients} concurrent clients: {over_http_tps:.0f} tokens/s ({calls_http} calls)"
              f", gRPC {batched:.0f} tokens/s -> HTTP/gRPC {over_http_tps / batched:.2f}"
              + (f"; failed calls {failed_http}" if failed_http else ""))
    with server(settings, work, max_batch=1) as (address, _):
        single, calls_off, failed_off = throughput(address, args.clients, args.seconds, args.tokens)
    print(f"throughput, {args.clients} concurrent clients for {args.seconds:.0f} s: batching on {batched:.0f} tokens/s "
          f"({calls_on} calls), off {single:.0f} tokens/s ({calls_off} calls) -> {batched / single:.2f}x (goal >= 3x)"
          + (f"; failed calls {failed_on + failed_off}" if failed_on + failed_off else ""))


if __name__ == "__main__":
    main()
