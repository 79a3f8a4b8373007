"""7.2 bug: TPOT divides the time after the first token by num_tokens instead of num_tokens - 1."""

from minikv.bench.latency import StreamLatency
from minikv.grade import learner_module

TARGET = "7.2"
EXPECT = "looks like (e2e - ttft) / num_tokens"

percentile = learner_module("ch07_serving", "solutions").percentile


def stream_latency(sent_at, chunk_times, num_tokens):
    ttft, e2e = chunk_times[0] - sent_at, chunk_times[-1] - sent_at
    itl = [b - a for a, b in zip(chunk_times, chunk_times[1:])]
    return StreamLatency(ttft, e2e, (e2e - ttft) / num_tokens if num_tokens > 1 else None, itl)
