"""7.2 bug: the inter-token latencies start from the send time, so the first one is the TTFT."""

from minikv.bench.latency import StreamLatency
from minikv.grade import learner_module

TARGET = "7.2"
EXPECT = "that is the TTFT"

percentile = learner_module("ch07_serving", "solutions").percentile


def stream_latency(sent_at, chunk_times, num_tokens):
    ttft, e2e = chunk_times[0] - sent_at, chunk_times[-1] - sent_at
    times = [sent_at, *chunk_times]
    itl = [b - a for a, b in zip(times, times[1:])]
    return StreamLatency(ttft, e2e, (e2e - ttft) / (num_tokens - 1) if num_tokens > 1 else None, itl)
