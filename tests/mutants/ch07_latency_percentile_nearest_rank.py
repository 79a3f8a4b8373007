"""7.2 bug: the percentile is the value at the rounded rank, without interpolating between closest ranks."""

from minikv.grade import learner_module

TARGET = "7.2"
EXPECT = "looks like no interpolation between closest ranks"

stream_latency = learner_module("ch07_serving", "solutions").stream_latency


def percentile(xs, q):
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[round((len(s) - 1) * q / 100)]
