"""7.1 bug: stop strings are looked for only in the characters the last token added, so one that spans tokens is missed."""

from minikv.grade import learner_module

TARGET = "7.1"
EXPECT = "was never found (stop_reason is None)"

_solution = learner_module("ch07_serving", "solutions")


class StreamDetokenizer(_solution.StreamDetokenizer):
    def _grow(self, full):
        start = len(self.text)
        self.text = full
        best = None
        for s in self.stop:
            i = full.find(s, start)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, s)
        if best is not None:
            i, s = best
            self.text = full[:i + len(s)] if self.include_stop else full[:i]
            self.stop_reason = s
